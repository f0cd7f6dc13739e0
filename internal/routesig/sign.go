package routesig

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// Signer produces Domicile-Route header values on the router. It is safe
// for concurrent use.
type Signer struct {
	mac         *macer
	noncePrefix string // "<routerID>.<16 hex digits>."
	counter     atomic.Uint64
}

// NewSigner returns a Signer using key (at least 32 bytes) and routerID
// (1-64 characters from [A-Za-z0-9._-]), which identifies the router in the
// nonces it issues.
func NewSigner(key []byte, routerID string) (*Signer, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if !validName(routerID, maxNameLen) {
		return nil, fmt.Errorf("routesig: router ID %q: must be 1-%d characters from [A-Za-z0-9._-]", routerID, maxNameLen)
	}
	var inst [8]byte
	if _, err := rand.Read(inst[:]); err != nil {
		return nil, fmt.Errorf("routesig: instance nonce: %w", err)
	}
	return &Signer{
		mac:         newMacer(key),
		noncePrefix: routerID + "." + hex.EncodeToString(inst[:]) + ".",
	}, nil
}

// AppendHeader appends the Domicile-Route header value for a request with
// the given method and path, routed to region at time now, to dst and
// returns the extended slice. It does not allocate when dst has room for
// the value (len(method)+len(path) do not matter; about 130 bytes do).
//
// region must satisfy [CheckRegion]; an invalid region yields a header that
// every Verifier rejects as malformed.
func (s *Signer) AppendHeader(dst []byte, method, path, region string, now time.Time) []byte {
	return s.AppendHeaderFor(dst, method, path, region, nil, now)
}

// AppendHeaderFor is AppendHeader for a request the router resolved by an
// identifier: ident, the identifier's keyed hash (the home-index key, not
// personal data), is carried in the header ("k=", 32 hex digits) and covered
// by the MAC, so that a region can check that the identifier it reads from
// the request is the one the router routed by. A nil ident is AppendHeader.
func (s *Signer) AppendHeaderFor(dst []byte, method, path, region string, ident *[IdentLen]byte, now time.Time) []byte {
	ts := now.UnixMilli()
	dst = append(dst, version+";r="...)
	dst = append(dst, region...)
	var id []byte
	if ident != nil {
		dst = append(dst, ";k="...)
		dst = hex.AppendEncode(dst, ident[:])
		id = ident[:]
	}
	dst = append(dst, ";t="...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, ";n="...)
	start := len(dst)
	dst = append(dst, s.noncePrefix...)
	dst = strconv.AppendUint(dst, s.counter.Add(1), 36)
	nonce := dst[start:]

	var mac [macLen]byte
	sum(s.mac, &mac, method, path, region, id, ts, nonce)
	dst = append(dst, ";s="...)
	n := len(dst)
	dst = append(dst, make([]byte, macB64Len)...) // no allocation: appends zeros
	b64.Encode(dst[n:], mac[:])
	return dst
}
