package routesig

import (
	"crypto/hmac"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"strings"
	"time"
)

// DefaultWindow is the accepted clock difference between router and region
// when NewVerifier is given a zero window.
const DefaultWindow = 30 * time.Second

// DefaultMaxNonces bounds the number of nonces a Verifier remembers.
const DefaultMaxNonces = 1 << 22

// Verifier checks Domicile-Route header values in one region. It is safe
// for concurrent use.
type Verifier struct {
	mac      *macer
	region   string
	windowMS int64
	replay   replayCache
}

// NewVerifier returns a Verifier for region using key (at least 32 bytes).
// Timestamps more than window away from the verifier's clock, in either
// direction, are refused; a zero window means [DefaultWindow].
func NewVerifier(key []byte, region string, window time.Duration) (*Verifier, error) {
	return newVerifier(key, region, window, DefaultMaxNonces)
}

func newVerifier(key []byte, region string, window time.Duration, maxNonces int) (*Verifier, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := CheckRegion(region); err != nil {
		return nil, err
	}
	switch {
	case window == 0:
		window = DefaultWindow
	case window < time.Millisecond:
		return nil, fmt.Errorf("routesig: window: must be at least 1ms, got %v", window)
	}
	v := &Verifier{
		mac:      newMacer(key),
		region:   region,
		windowMS: window.Milliseconds(),
	}
	v.replay.init(2*window, maxNonces)
	return v, nil
}

// Verify checks the header value for a request with the given method and
// path received at time now. It returns nil if the request may proceed, or
// an error matching one of ErrMissing, ErrMalformed, ErrBadSignature,
// ErrWrongRegion (as a *WrongRegionError), ErrStale, ErrReplay or ErrBusy.
//
// The signature is checked before anything else about the content, and the
// nonce is recorded only once every other check has passed.
func (v *Verifier) Verify(value, method, path string, now time.Time) error {
	_, err := v.VerifyRoute(value, method, path, now)
	return err
}

// Route is what a verified header says about a request.
type Route struct {
	Region string
	// Ident is the keyed hash of the identifier the router resolved the
	// request by, if HasIdent.
	Ident    [IdentLen]byte
	HasIdent bool
}

// VerifyRoute is Verify, also returning the route the header describes.
func (v *Verifier) VerifyRoute(value, method, path string, now time.Time) (Route, error) {
	var rt Route
	if value == "" {
		return rt, ErrMissing
	}
	h, err := parse(value)
	if err != nil {
		return rt, err
	}
	var id []byte
	if h.ident != "" {
		if n, err := hex.Decode(rt.Ident[:], []byte(h.ident)); err != nil || n != IdentLen {
			return rt, fmt.Errorf("%w: identifier hash", ErrMalformed)
		}
		id, rt.HasIdent = rt.Ident[:], true
	}
	rt.Region = h.region
	err = v.check(h, id, method, path, now)
	return rt, err
}

func (v *Verifier) check(h parsed, id []byte, method, path string, now time.Time) error {
	if method == "" || hasCtl(method) || hasCtl(path) {
		return fmt.Errorf("%w: control character in method or path", ErrMalformed)
	}
	var got, want [macLen]byte
	if n, err := b64.Decode(got[:], []byte(h.sig)); err != nil || n != macLen {
		return fmt.Errorf("%w: signature encoding", ErrMalformed)
	}
	sum(v.mac, &want, method, path, h.region, id, h.ts, h.nonce)
	if !hmac.Equal(got[:], want[:]) {
		return ErrBadSignature
	}
	if h.region != v.region {
		return &WrongRegionError{Region: strings.Clone(h.region)}
	}
	if skew := now.UnixMilli() - h.ts; skew > v.windowMS || skew < -v.windowMS {
		return fmt.Errorf("%w: signed %v from now", ErrStale, time.Duration(-skew)*time.Millisecond)
	}
	return v.replay.add(h.nonce, now)
}

type parsed struct {
	region, ident, nonce, sig string
	ts                        int64
}

var errTruncated = fmt.Errorf("%w: truncated or misordered fields", ErrMalformed)

// parse splits "v1;r=<region>;t=<millis>;n=<nonce>;s=<sig>" strictly.
func parse(v string) (parsed, error) {
	var p parsed
	var ok bool
	if v, ok = strings.CutPrefix(v, version+";r="); !ok {
		if !strings.HasPrefix(v, "v") {
			return p, errTruncated
		}
		return p, fmt.Errorf("%w: unsupported version", ErrMalformed)
	}
	if p.region, v, ok = strings.Cut(v, ";t="); !ok {
		return p, errTruncated
	}
	if r, k, hasK := strings.Cut(p.region, ";k="); hasK {
		if len(k) != 2*IdentLen {
			return p, fmt.Errorf("%w: identifier hash", ErrMalformed)
		}
		p.region, p.ident = r, k
	}
	if !validName(p.region, maxNameLen) {
		return p, errTruncated
	}
	var ts string
	if ts, v, ok = strings.Cut(v, ";n="); !ok || !parseMillis(ts, &p.ts) {
		return p, errTruncated
	}
	if p.nonce, p.sig, ok = strings.Cut(v, ";s="); !ok || !validName(p.nonce, maxNonce) || len(p.sig) != macB64Len {
		return p, errTruncated
	}
	return p, nil
}

// parseMillis accepts 1-15 decimal digits without leading zeros, which keeps
// every later subtraction far from overflow.
func parseMillis(s string, out *int64) bool {
	if len(s) == 0 || len(s) > 15 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int64(c-'0')
	}
	*out = n
	return true
}

func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// nonceKey is a 128-bit hash of a nonce under two random seeds. Nonces are
// authenticated before they are hashed, so an attacker cannot choose them;
// 128 bits make an accidental collision (a false replay) negligible.
type nonceKey struct{ a, b uint64 }

func hashNonce(s1, s2 maphash.Seed, nonce string) nonceKey {
	return nonceKey{maphash.String(s1, nonce), maphash.String(s2, nonce)}
}
