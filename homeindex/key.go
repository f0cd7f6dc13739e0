package homeindex

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"unicode/utf8"
)

// KeySize is the length of an index key in bytes.
const KeySize = 16

// Key is a keyed hash of one normalised identifier.
type Key [KeySize]byte

// String returns the key in lower-case hex; this is the only form in which
// an identifier may appear in router logs.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler (hex).
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex, exactly 32 digits).
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParseKey parses the hex form of a key.
func ParseKey(s string) (Key, error) {
	var k Key
	if len(s) != 2*KeySize {
		return k, fmt.Errorf("index key: want %d hex digits, got %d", 2*KeySize, len(s))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("index key: %w", err)
	}
	return k, nil
}

// MinSecretLen is the shortest accepted HMAC key for the index.
const MinSecretLen = 32

// Hasher turns identifiers into index keys. Routers and regions share the
// secret so that both derive the same key without sending the identifier
// anywhere.
type Hasher struct {
	secret []byte
	pool   sync.Pool // of *keyMAC
}

// keyMAC is a reusable HMAC state with its scratch space, so that hashing
// an identifier does not allocate.
type keyMAC struct {
	mac hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// NewHasher returns a Hasher with the given secret (at least MinSecretLen bytes).
func NewHasher(secret []byte) (*Hasher, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("index secret: want at least %d bytes, got %d", MinSecretLen, len(secret))
	}
	h := &Hasher{secret: append([]byte(nil), secret...)}
	h.pool.New = func() any { return &keyMAC{mac: hmac.New(sha256.New, h.secret)} }
	return h, nil
}

// EmailKey returns the key of a normalised email address.
func (h *Hasher) EmailKey(normalisedEmail string) Key {
	return h.key("email:", normalisedEmail)
}

func (h *Hasher) key(kind, id string) Key {
	m := h.pool.Get().(*keyMAC)
	m.mac.Reset()
	m.buf = append(append(m.buf[:0], kind...), id...)
	m.mac.Write(m.buf)
	var k Key
	copy(k[:], m.mac.Sum(m.sum[:0]))
	if cap(m.buf) <= 4<<10 {
		h.pool.Put(m)
	}
	return k
}

// ErrBadEmail is returned by NormalizeEmail for input that is not an address.
var ErrBadEmail = errors.New("not a valid email address")

// MaxEmailLen is the longest accepted address (RFC 5321 path limit).
const MaxEmailLen = 254

// NormalizeEmail returns the canonical form of an email address used for
// hashing and storage: trimmed, lower-cased. It checks only the shape
// (one '@', non-empty local part and a dotted domain, valid UTF-8, no
// spaces or control characters).
func NormalizeEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > MaxEmailLen || !utf8.ValidString(s) {
		return "", ErrBadEmail
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == ',' || r == ';' {
			return "", ErrBadEmail
		}
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.IndexByte(s[:at], '@') >= 0 {
		return "", ErrBadEmail
	}
	domain := s[at+1:]
	if !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return "", ErrBadEmail
	}
	return strings.ToLower(s), nil
}
