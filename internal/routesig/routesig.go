package routesig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Header is the name of the HTTP header carrying the route signature.
const Header = "Domicile-Route"

// IdentLen is the length of the identifier hash a header may carry.
const IdentLen = 16

// MinKeyLen is the minimum length of the shared key in bytes.
const MinKeyLen = 32

const (
	version    = "v1"
	domain     = "domicile-route\x00"
	macLen     = sha256.Size
	macB64Len  = 43 // base64.RawURLEncoding.EncodedLen(macLen)
	maxNameLen = 64 // router IDs and regions
	maxNonce   = 128
)

// b64 rejects non-canonical encodings (non-zero trailing bits).
var b64 = base64.RawURLEncoding.Strict()

// Errors returned by [Verifier.Verify]. Some are wrapped with detail; test
// them with errors.Is.
var (
	ErrMissing      = errors.New("routesig: missing " + Header + " header")
	ErrMalformed    = errors.New("routesig: malformed " + Header + " header")
	ErrBadSignature = errors.New("routesig: bad signature")
	ErrStale        = errors.New("routesig: timestamp outside the accepted window")
	ErrReplay       = errors.New("routesig: nonce already used")
	ErrWrongRegion  = errors.New("routesig: request routed to the wrong region")
	// ErrBusy means the replay cache is full; the request may be retried
	// later (map it to 503 Service Unavailable, not to a client error).
	ErrBusy = errors.New("routesig: replay cache full")
)

// WrongRegionError is returned when a validly signed header names another
// region. errors.Is(err, ErrWrongRegion) reports true for it.
type WrongRegionError struct {
	Region string // the region the header names
}

func (e *WrongRegionError) Error() string {
	return fmt.Sprintf("routesig: request routed to region %q, not this one", e.Region)
}

// Is makes errors.Is(err, ErrWrongRegion) match.
func (e *WrongRegionError) Is(target error) bool { return target == ErrWrongRegion }

// CheckRegion reports whether region is a valid region name: 1 to 64
// characters from [A-Za-z0-9._-]. The router should check its region table
// with it at start-up, since [Signer.AppendHeader] cannot report errors.
func CheckRegion(region string) error {
	if !validName(region, maxNameLen) {
		return fmt.Errorf("routesig: region %q: must be 1-%d characters from [A-Za-z0-9._-]", region, maxNameLen)
	}
	return nil
}

func validName(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameChar(s[i]) {
			return false
		}
	}
	return true
}

func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

func checkKey(key []byte) error {
	if len(key) < MinKeyLen {
		return fmt.Errorf("routesig: key: must be at least %d bytes, got %d", MinKeyLen, len(key))
	}
	return nil
}

// macer computes the header MAC. hmac.New allocates, so HMAC states are
// pooled and Reset between uses; Reset restores the precomputed inner state
// of the padded key without re-hashing it.
type macer struct {
	pool sync.Pool // of *macState
}

type macState struct {
	h   hash.Hash
	msg []byte // scratch for the canonical message
	sum [macLen]byte
}

func newMacer(key []byte) *macer {
	k := append([]byte(nil), key...)
	m := &macer{}
	m.pool.New = func() any {
		return &macState{h: hmac.New(sha256.New, k), msg: make([]byte, 0, 256)}
	}
	return m
}

// sum writes the MAC of the canonical encoding of the fields to out.
func sum[N string | []byte](m *macer, out *[macLen]byte, method, path, region string, ident []byte, ts int64, nonce N) {
	st := m.pool.Get().(*macState)
	b := append(st.msg[:0], domain...)
	b = appendField(b, version)
	b = appendField(b, method)
	b = appendField(b, path)
	b = appendField(b, region)
	b = appendField(b, ident)
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	b = appendField(b, nonce)
	st.h.Reset()
	st.h.Write(b)
	st.h.Sum(st.sum[:0])
	*out = st.sum
	if cap(b) <= 64<<10 { // don't keep huge buffers alive in the pool
		st.msg = b
	}
	m.pool.Put(st)
}

func appendField[S string | []byte](b []byte, s S) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
