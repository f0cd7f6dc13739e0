package session

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
)

// A session token is a JWS in compact serialization, signed with EdDSA
// (Ed25519) by the user's home region:
//
//	header  {"alg":"EdDSA","kid":"eu-west-1","typ":"dom-session+jwt"}
//	payload {"sub":"eu-west:01J…","home":"eu-west","sid":"…","iat":1700000000,"exp":1700003600}
//
// It holds identifiers only, no personal data, so any router or region may
// read it and verify it offline against the union JWKS. The kid names the
// signing region, and a verifier accepts a token only if that region is the
// token's "home": a region can mint sessions for its own users only. The
// "typ" header keeps other JWTs signed by the same key (an OIDC ID token,
// say) from passing as session tokens.

// TokenType is the "typ" header of a session token.
const TokenType = "dom-session+jwt"

// DefaultLeeway is the clock skew a [Verifier] tolerates by default when it
// checks "exp", "iat" and "nbf".
const DefaultLeeway = 30 * time.Second

// DefaultCacheSize is the default bound on the number of verified tokens a
// [Verifier] remembers.
const DefaultCacheSize = 1 << 16

// maxUnix is the last second of year 9999: later times are refused, which
// keeps time arithmetic sane.
const maxUnix = 253402300799

// maxTokenLen bounds the tokens Verify looks at; ours are about 300 bytes.
const maxTokenLen = 4096

// Errors of Verify (and Issue), for errors.Is.
var (
	// ErrMalformed: not a well-formed session token (bad JWS, wrong alg or
	// typ, missing or bad claims).
	ErrMalformed = errors.New("session: token: malformed")
	// ErrUnknownKey: no key with the token's kid is known.
	ErrUnknownKey = errors.New("session: token: unknown key")
	// ErrBadSignature: the signature does not verify with the kid's key.
	ErrBadSignature = errors.New("session: token: bad signature")
	// ErrTokenExpired: the token's exp has passed (beyond the leeway). It
	// wraps [ErrExpired], so errors.Is(err, ErrExpired) holds as well.
	ErrTokenExpired = fmt.Errorf("session: token: %w", ErrExpired)
	// ErrNotYetValid: the token's iat or nbf is in the future (beyond the
	// leeway).
	ErrNotYetValid = errors.New("session: token: not yet valid")
	// ErrWrongHome: the token was signed by a region other than its home.
	ErrWrongHome = errors.New("session: token: signed by a region other than its home")
	// ErrRevoked: the session was revoked (the Verifier's revocation hook
	// said so).
	ErrRevoked = errors.New("session: token: session revoked")
)

// Claims are the contents of a session token.
type Claims struct {
	Subject   string    // "sub": the opaque, region-prefixed user id; never an email or name
	Home      string    // "home": the user's home region
	SessionID string    // "sid": the session id
	IssuedAt  time.Time // "iat", whole seconds
	Expiry    time.Time // "exp", whole seconds
	// AMR ("amr", optional) names how the user authenticated (RFC 8176
	// values such as "pwd", "otp", "hwk", "mfa"), for the ID tokens of
	// any region; not personal data. Treat it as read-only.
	AMR []string
}

// Bounds on the "amr" claim.
const (
	maxAMRValues = 8
	maxAMRLen    = 32
)

// wireClaims is the JSON payload of a token. Verify reads it with
// parseCanonical when it can: a new member must be added there too
// (TestParseCanonicalKnowsEveryClaim checks).
type wireClaims struct {
	Sub  string   `json:"sub"`
	Home string   `json:"home"`
	Sid  string   `json:"sid"`
	Iat  int64    `json:"iat"`
	Exp  int64    `json:"exp"`
	Nbf  *int64   `json:"nbf,omitempty"` // never issued; checked if present
	Amr  []string `json:"amr,omitempty"`
}

// Issuer signs session tokens for the users of one region.
type Issuer struct {
	region string
	key    *SigningKey
	signer jose.Signer
}

// NewIssuer returns an Issuer for region signing with key, whose kid must
// name region.
func NewIssuer(region string, key *SigningKey) (*Issuer, error) {
	if err := key.check(); err != nil {
		return nil, err
	}
	if got := key.Region(); got != region {
		return nil, fmt.Errorf("session: issuer for region %q: key %s belongs to region %q", region, key.KID, got)
	}
	opts := (&jose.SignerOptions{}).WithType(TokenType).WithHeader(jose.HeaderKey("kid"), key.KID)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key.Key}, opts)
	if err != nil {
		return nil, fmt.Errorf("session: issuer: %w", err)
	}
	return &Issuer{region: region, key: key, signer: signer}, nil
}

// Region returns the issuer's region.
func (i *Issuer) Region() string { return i.region }

// PublicKey returns the public key that verifies the issuer's tokens.
func (i *Issuer) PublicKey() PublicKey { return i.key.Public() }

// Issue returns a signed token holding c. c.Home must be the issuer's
// region; Subject and SessionID must be set (and Subject must not look like
// an email address); Expiry must be after IssuedAt, which defaults to now.
// Times are truncated to whole seconds.
func (i *Issuer) Issue(c Claims) (string, error) {
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	switch {
	case c.Home != i.region:
		return "", fmt.Errorf("session: issue: home %q, issuer region %q: %w", c.Home, i.region, ErrWrongHome)
	case c.Subject == "":
		return "", errors.New("session: issue: subject: empty")
	case strings.ContainsRune(c.Subject, '@'):
		return "", errors.New("session: issue: subject looks like an email address; use the opaque user id")
	case c.SessionID == "":
		return "", errors.New("session: issue: session id: empty")
	case c.Expiry.IsZero():
		return "", errors.New("session: issue: expiry: zero")
	case c.Expiry.Unix() <= c.IssuedAt.Unix():
		return "", errors.New("session: issue: expiry is not after issued-at")
	case !validAMR(c.AMR):
		return "", fmt.Errorf("session: issue: amr: at most %d values of 1 to %d printable ASCII characters", maxAMRValues, maxAMRLen)
	}
	payload, err := json.Marshal(wireClaims{
		Sub: c.Subject, Home: c.Home, Sid: c.SessionID,
		Iat: c.IssuedAt.Unix(), Exp: c.Expiry.Unix(), Amr: c.AMR,
	})
	if err != nil {
		return "", fmt.Errorf("session: issue: %w", err)
	}
	jws, err := i.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("session: issue: sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("session: issue: %w", err)
	}
	return tok, nil
}

// verKey is a public key as the Verifier holds it. A cache entry points at
// the verKey that verified it, and is good only while that same verKey is
// still in the key table: removing or replacing a key invalidates its
// entries at once.
type verKey struct {
	kid    string
	region string
	key    ed25519.PublicKey
}

// keyTable is immutable once published; SetRegionKeys publishes a new one.
type keyTable struct {
	byKID    map[string]*verKey
	byRegion map[string][]*verKey
}

// Verifier checks session tokens offline against the public keys of every
// region. It is safe for concurrent use; the keys may be replaced at any
// time with SetRegionKeys.
//
// A Verifier remembers the tokens it has verified (their signature and
// structure, not their validity in time or their revocation), so a token
// seen again costs a hash and a map lookup instead of an Ed25519
// verification. Revocation and times are checked on every call.
type Verifier struct {
	leeway  time.Duration
	revoked func(sid string) bool
	keys    atomic.Pointer[keyTable]
	mu      sync.Mutex // serialises SetRegionKeys
	cache   *tokenCache
}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithLeeway sets the clock skew tolerated when checking exp, iat and nbf
// (default [DefaultLeeway]; negative means zero).
func WithLeeway(d time.Duration) VerifierOption {
	return func(v *Verifier) { v.leeway = max(d, 0) }
}

// WithRevoked sets a hook consulted on every successful Verify, cached or
// not: if it returns true for the token's session id, Verify fails with
// [ErrRevoked]. It must be safe for concurrent use and fast (a local
// lookup, such as the home index replica's revocation set).
func WithRevoked(revoked func(sid string) bool) VerifierOption {
	return func(v *Verifier) { v.revoked = revoked }
}

// WithCacheSize bounds the verified-token cache to about n entries
// (default [DefaultCacheSize]; at least 2); n ≤ 0 disables the cache.
func WithCacheSize(n int) VerifierOption {
	return func(v *Verifier) {
		if n <= 0 {
			v.cache = nil
		} else {
			v.cache = newTokenCache(n)
		}
	}
}

// NewVerifier returns a Verifier that knows no keys yet.
func NewVerifier(opts ...VerifierOption) *Verifier {
	v := &Verifier{leeway: DefaultLeeway, cache: newTokenCache(DefaultCacheSize)}
	for _, o := range opts {
		o(v)
	}
	v.keys.Store(&keyTable{byKID: map[string]*verKey{}, byRegion: map[string][]*verKey{}})
	return v
}

// SetRegionKeys replaces, atomically, the keys of region with keys (none
// removes the region). Every kid must be "<region>-<n>". Tokens verified
// with a key that is removed or whose key material changes are no longer
// accepted, even if cached.
func (v *Verifier) SetRegionKeys(region string, keys []PublicKey) error {
	if _, err := KID(region, 1); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.keys.Load()
	fresh := make([]*verKey, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if !strings.HasPrefix(k.KID, region+"-") {
			return fmt.Errorf("session: keys of region %q: kid %q does not start with %q", region, k.KID, region+"-")
		}
		if err := k.check(); err != nil {
			return err
		}
		if r, _ := KIDRegion(k.KID); r != region {
			// "eu-west-x-1" starts with "eu-west-" but names region "eu-west-x".
			return fmt.Errorf("session: keys of region %q: kid %q names region %q", region, k.KID, r)
		}
		if seen[k.KID] {
			return fmt.Errorf("session: keys of region %q: duplicate kid %q", region, k.KID)
		}
		seen[k.KID] = true
		if prev := old.byKID[k.KID]; prev != nil && prev.key.Equal(k.Key) {
			fresh = append(fresh, prev) // unchanged: keep its cache entries valid
			continue
		}
		fresh = append(fresh, &verKey{kid: k.KID, region: region, key: bytes.Clone(k.Key)})
	}
	next := &keyTable{
		byKID:    make(map[string]*verKey, len(old.byKID)+len(fresh)),
		byRegion: make(map[string][]*verKey, len(old.byRegion)+1),
	}
	for r, ks := range old.byRegion {
		if r == region {
			continue
		}
		next.byRegion[r] = ks
		for _, k := range ks {
			next.byKID[k.kid] = k
		}
	}
	if len(fresh) > 0 {
		next.byRegion[region] = fresh
		for _, k := range fresh {
			next.byKID[k.kid] = k
		}
	}
	v.keys.Store(next)
	return nil
}

// Keys returns the public keys the Verifier knows, for publishing a JWKS.
func (v *Verifier) Keys() []PublicKey {
	t := v.keys.Load()
	out := make([]PublicKey, 0, len(t.byKID))
	for _, ks := range t.byRegion {
		for _, k := range ks {
			out = append(out, PublicKey{KID: k.kid, Region: k.region, Key: bytes.Clone(k.key)})
		}
	}
	return out
}

// Verify checks token at time now and returns its claims. It fails with
// ErrMalformed, ErrUnknownKey, ErrBadSignature, ErrWrongHome,
// ErrTokenExpired (which is also ErrExpired), ErrNotYetValid or ErrRevoked,
// possibly wrapped with detail.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenLen)
	}
	var (
		c      Claims
		nbf    time.Time
		hit    bool
		cached cacheKey
	)
	table := v.keys.Load()
	if v.cache != nil {
		cached = hashToken(token)
		var e cacheEntry
		if e, hit = v.cache.get(cached); hit {
			if table.byKID[e.key.kid] == e.key {
				c, nbf = e.claims, e.nbf
			} else { // its key was removed or replaced
				v.cache.remove(cached)
				hit = false
			}
		}
	}
	if !hit {
		var (
			key *verKey
			err error
		)
		c, nbf, key, err = v.verify(token, table)
		if err != nil {
			return Claims{}, err
		}
		if err := v.checkTime(c, nbf, now); err != nil {
			return Claims{}, err
		}
		if v.cache != nil {
			v.cache.put(cached, cacheEntry{claims: c, nbf: nbf, key: key})
		}
	} else if err := v.checkTime(c, nbf, now); err != nil {
		if errors.Is(err, ErrTokenExpired) {
			v.cache.remove(cached)
		}
		return Claims{}, err
	}
	if v.revoked != nil && v.revoked(c.SessionID) {
		return Claims{}, ErrRevoked
	}
	return c, nil
}

// verify does the work of Verify that does not depend on the time.
func (v *Verifier) verify(token string, table *keyTable) (Claims, time.Time, *verKey, error) {
	if c, nbf, key, err, ok := verifyCanonical(token, table); ok {
		return c, nbf, key, err
	}
	return verifyGeneral(token, table)
}

// verifyGeneral is verify for any token, through go-jose.
func verifyGeneral(token string, table *keyTable) (Claims, time.Time, *verKey, error) {
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(jws.Signatures) != 1 {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: %d signatures", ErrMalformed, len(jws.Signatures))
	}
	h := jws.Signatures[0].Protected
	if h.Algorithm != string(jose.EdDSA) {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: alg %q", ErrMalformed, h.Algorithm)
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, TokenType) {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, typ, TokenType)
	}
	for _, name := range []jose.HeaderKey{"crit", "b64"} {
		if _, ok := h.ExtraHeaders[name]; ok {
			return Claims{}, time.Time{}, nil, fmt.Errorf("%w: header %q not allowed", ErrMalformed, name)
		}
	}
	key := table.byKID[h.KeyID]
	if key == nil {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, h.KeyID)
	}
	payload, err := jws.Verify(key.key)
	if err != nil {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: kid %q", ErrBadSignature, h.KeyID)
	}
	return claimsOf(payload, key)
}

// claimsOf decodes and checks the verified payload of a token signed with
// key.
func claimsOf(payload []byte, key *verKey) (Claims, time.Time, *verKey, error) {
	var w wireClaims
	if !w.parseCanonical(payload, key.region) {
		w = wireClaims{}
		// A copy: payload may be the caller's stack buffer, which must
		// not escape.
		if err := json.Unmarshal(bytes.Clone(payload), &w); err != nil {
			return Claims{}, time.Time{}, nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
		}
	}
	switch {
	case w.Sub == "":
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: sub: empty", ErrMalformed)
	case w.Sid == "":
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: sid: empty", ErrMalformed)
	case w.Home == "":
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: home: empty", ErrMalformed)
	case w.Exp <= 0 || w.Exp > maxUnix:
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: exp: missing or out of range", ErrMalformed)
	case w.Iat < 0 || w.Iat > w.Exp:
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: iat: out of range", ErrMalformed)
	case !validAMR(w.Amr):
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: amr: out of range", ErrMalformed)
	}
	if w.Home != key.region {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: home %q, signed by %q (kid %q)", ErrWrongHome, w.Home, key.region, key.kid)
	}
	c := Claims{
		Subject: w.Sub, Home: key.region, SessionID: w.Sid,
		IssuedAt: time.Unix(w.Iat, 0).UTC(), Expiry: time.Unix(w.Exp, 0).UTC(),
		AMR: w.Amr,
	}
	var nbf time.Time
	if w.Nbf != nil {
		if *w.Nbf < 0 || *w.Nbf > maxUnix {
			return Claims{}, time.Time{}, nil, fmt.Errorf("%w: nbf: out of range", ErrMalformed)
		}
		nbf = time.Unix(*w.Nbf, 0).UTC()
	}
	return c, nbf, key, nil
}

// The canonical fast path.
//
// go-jose's parser (ParseSignedCompact, then Verify) builds maps, copies
// and re-encodes every part, which costs about a third as much again as
// the Ed25519 verification itself. Tokens as Issue writes them have one
// exact shape, which verifyCanonical recognises and checks directly; for
// them it reaches the very same result as the general path, which every
// other input still takes:
//
//   - the header is exactly {"alg":"EdDSA","kid":"<kid>","typ":"dom-session+jwt"}
//     (what go-jose serialises, keys sorted), so alg, typ and kid are what
//     go-jose would read and there is no crit, b64 or jwk header;
//   - header and payload are canonical base64url (strict decoding, no
//     CR or LF, which the standard decoder skips), so the signing input
//     go-jose re-encodes from the decoded parts is the token's own prefix;
//   - the signature is decoded as go-jose does (base64url, not strict).
//
// Anything else (another header, a non-canonical encoding, a part too
// large for the buffers) returns ok == false before any check is made,
// and the caller takes the general path. The payload then goes through
// claimsOf like the general path's.

// canonicalHeader is the decoded header of an issued token, around the kid.
const (
	canonicalHeaderHead = `{"alg":"EdDSA","kid":"`
	canonicalHeaderTail = `","typ":"` + TokenType + `"}`
)

var strictB64 = base64.RawURLEncoding.Strict()

// verifyCanonical is verify for a token in the canonical shape; ok is
// false if token is not in that shape (and nothing was checked).
func verifyCanonical(token string, table *keyTable) (c Claims, nbf time.Time, key *verKey, err error, ok bool) {
	hdr, rest, found := strings.Cut(token, ".")
	if !found {
		return
	}
	body, sig, found := strings.Cut(rest, ".")
	if !found || strings.IndexByte(sig, '.') >= 0 ||
		strings.ContainsAny(hdr, "\r\n") || strings.ContainsAny(body, "\r\n") {
		return
	}
	var hbuf [128]byte
	if strictB64.DecodedLen(len(hdr)) > len(hbuf) {
		return
	}
	n, derr := strictB64.Decode(hbuf[:], bytesOf(hdr))
	if derr != nil {
		return
	}
	h := hbuf[:n]
	if len(h) <= len(canonicalHeaderHead)+len(canonicalHeaderTail) ||
		string(h[:len(canonicalHeaderHead)]) != canonicalHeaderHead ||
		string(h[len(h)-len(canonicalHeaderTail):]) != canonicalHeaderTail {
		return
	}
	kid := h[len(canonicalHeaderHead) : len(h)-len(canonicalHeaderTail)]
	for _, ch := range kid {
		if !('a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '-') {
			return // a kid go-jose would read otherwise (or not at all)
		}
	}
	var pbuf [1024]byte
	if strictB64.DecodedLen(len(body)) > len(pbuf) {
		return
	}
	n, derr = strictB64.Decode(pbuf[:], bytesOf(body))
	if derr != nil {
		return
	}
	payload := pbuf[:n]
	var sbuf [96]byte
	if base64.RawURLEncoding.DecodedLen(len(sig)) > len(sbuf) {
		return
	}
	n, derr = base64.RawURLEncoding.Decode(sbuf[:], bytesOf(sig))
	if derr != nil {
		return
	}
	ok = true
	if key = table.byKID[string(kid)]; key == nil {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, string(kid)), true
	}
	if !ed25519.Verify(key.key, bytesOf(token[:len(hdr)+1+len(body)]), sbuf[:n]) {
		return Claims{}, time.Time{}, nil, fmt.Errorf("%w: kid %q", ErrBadSignature, key.kid), true
	}
	c, nbf, key, err = claimsOf(payload, key)
	return c, nbf, key, err, true
}

// bytesOf returns the bytes of s without copying them; they must not be
// modified.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// parseCanonical decodes a payload that is a flat JSON object whose
// members are among sub, home, sid (strings of printable ASCII without
// escapes), iat, exp, nbf (integers) and amr (an array of such strings),
// each at most once, without whitespace: what Issue writes. For such a
// payload it fills w exactly as json.Unmarshal would and reports true; for
// any other it reports false, and w must be discarded.
//
// A home equal to region is given region's string rather than a copy.
func (w *wireClaims) parseCanonical(b []byte, region string) bool {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return false
	}
	b = b[1 : len(b)-1]
	var seen uint8
	for len(b) > 0 {
		if seen != 0 {
			if b[0] != ',' {
				return false
			}
			b = b[1:]
		}
		name, rest, ok := canonicalString(b)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return false
		}
		b = rest[1:]
		var bit uint8
		switch string(name) {
		case "sub":
			bit = 1
		case "home":
			bit = 2
		case "sid":
			bit = 4
		case "iat":
			bit = 8
		case "exp":
			bit = 16
		case "nbf":
			bit = 32
		case "amr":
			bit = 64
		default:
			return false
		}
		if seen&bit != 0 {
			return false // a repeated member: json.Unmarshal keeps the last
		}
		seen |= bit
		var (
			s []byte
			n int64
		)
		switch bit {
		case 1, 2, 4:
			if s, b, ok = canonicalString(b); !ok {
				return false
			}
		case 8, 16, 32:
			if n, b, ok = canonicalInt(b); !ok {
				return false
			}
		}
		switch bit {
		case 1:
			w.Sub = string(s)
		case 2:
			if string(s) == region {
				w.Home = region
			} else {
				w.Home = string(s)
			}
		case 4:
			w.Sid = string(s)
		case 8:
			w.Iat = n
		case 16:
			w.Exp = n
		case 32:
			nbf := n
			w.Nbf = &nbf
		case 64:
			if w.Amr, b, ok = canonicalStrings(b); !ok {
				return false
			}
		}
	}
	return true
}

// canonicalStrings reads a JSON array of canonical strings (see
// canonicalString) at the start of b. An empty array gives an empty,
// non-nil slice, as json.Unmarshal does.
func canonicalStrings(b []byte) (v []string, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != '[' {
		return nil, nil, false
	}
	b = b[1:]
	v = []string{}
	for len(b) > 0 && b[0] != ']' {
		if len(v) > 0 {
			if b[0] != ',' {
				return nil, nil, false
			}
			b = b[1:]
		}
		var s []byte
		if s, b, ok = canonicalString(b); !ok {
			return nil, nil, false
		}
		v = append(v, string(s))
	}
	if len(b) == 0 {
		return nil, nil, false
	}
	return v, b[1:], true
}

// canonicalString reads a JSON string of printable ASCII with no escape at
// the start of b.
func canonicalString(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[1:i], b[i+1:], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// canonicalInt reads a JSON integer of at most 18 digits at the start of b,
// followed by ',' or the end of b.
func canonicalInt(b []byte) (n int64, rest []byte, ok bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	i := 0
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	if i == 0 || i > 18 || (b[0] == '0' && i > 1) || (i < len(b) && b[i] != ',') {
		return 0, nil, false
	}
	if neg {
		n = -n
	}
	return n, b[i:], true
}

// validAMR bounds an "amr" claim: a few short printable ASCII values.
func validAMR(amr []string) bool {
	if len(amr) > maxAMRValues {
		return false
	}
	for _, v := range amr {
		if v == "" || len(v) > maxAMRLen {
			return false
		}
		for i := 0; i < len(v); i++ {
			if v[i] <= ' ' || v[i] >= 0x7f {
				return false
			}
		}
	}
	return true
}

// checkTime checks the time claims at now, with the Verifier's leeway.
func (v *Verifier) checkTime(c Claims, nbf, now time.Time) error {
	if !now.Before(c.Expiry.Add(v.leeway)) {
		return ErrTokenExpired
	}
	future := now.Add(v.leeway)
	if c.IssuedAt.After(future) || !nbf.IsZero() && nbf.After(future) {
		return ErrNotYetValid
	}
	return nil
}

// The verified-token cache.
//
// Entries are keyed by the first 16 bytes of the SHA-256 of the token. A
// cryptographic hash, not a fast one such as xxhash or maphash, because the
// tokens are chosen by clients: with a non-cryptographic hash an attacker
// could craft a forged token whose key equals that of a valid token seen
// before and have it accepted without a signature check. Matching a given
// token needs a second preimage of truncated SHA-256 (2^128 work); a
// birthday collision (2^64) would need the attacker to vary a valid token
// freely, which the signature prevents. SHA-256 of a ~300-byte token costs
// a few hundred nanoseconds, far below an Ed25519 verification.
//
// The cache is split into shards, each a pair of generations: new entries go
// into the current map; when it is full it becomes the previous one and the
// old previous map is dropped; a hit in the previous map moves the entry
// back into the current one. A shard thus holds at most 2×genCap entries,
// recently used ones survive, and eviction is O(1) without per-entry
// bookkeeping. Entries whose token has expired are dropped when looked up,
// or with their generation.

// maxCacheShards is the number of shards of a large cache; a power of two.
const maxCacheShards = 64

type cacheKey [16]byte

type cacheEntry struct {
	claims Claims
	nbf    time.Time
	key    *verKey
}

type tokenCache struct {
	genCap int
	mask   byte // len(shards)-1
	shards []cacheShard
}

type cacheShard struct {
	mu        sync.Mutex
	cur, prev map[cacheKey]cacheEntry
	_         [40]byte // keep shards on separate cache lines
}

// newTokenCache returns a cache of at most n entries (n ≥ 2; smaller n is
// taken as 2).
func newTokenCache(n int) *tokenCache {
	n = max(n, 2)
	shards := maxCacheShards
	for shards*2 > n {
		shards /= 2
	}
	c := &tokenCache{genCap: n / shards / 2, mask: byte(shards - 1), shards: make([]cacheShard, shards)}
	for i := range c.shards {
		c.shards[i].cur = make(map[cacheKey]cacheEntry)
	}
	return c
}

func hashToken(token string) cacheKey {
	// Hash the string's bytes in place: []byte(token) would copy it to the
	// heap on every call. sha256.Sum256 only reads its input.
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	return cacheKey(sum[:16])
}

func (c *tokenCache) shard(k cacheKey) *cacheShard { return &c.shards[k[0]&c.mask] }

func (c *tokenCache) get(k cacheKey) (cacheEntry, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.cur[k]; ok {
		return e, true
	}
	e, ok := s.prev[k]
	if ok {
		delete(s.prev, k)
		s.insert(k, e, c.genCap)
	}
	return e, ok
}

func (c *tokenCache) put(k cacheKey, e cacheEntry) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cur[k]; ok {
		return
	}
	delete(s.prev, k)
	s.insert(k, e, c.genCap)
}

func (c *tokenCache) remove(k cacheKey) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cur, k)
	delete(s.prev, k)
}

// insert adds k to the current generation, rotating it first if full.
// Caller holds s.mu.
func (s *cacheShard) insert(k cacheKey, e cacheEntry, genCap int) {
	if len(s.cur) >= genCap {
		s.prev, s.cur = s.cur, make(map[cacheKey]cacheEntry, genCap)
	}
	s.cur[k] = e
}

// len returns the number of entries, for tests.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.prev)
		s.mu.Unlock()
	}
	return n
}
