package session

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testNow = time.Unix(1_700_000_000, 0).UTC()

type testRegion struct {
	key    *SigningKey
	issuer *Issuer
}

func newTestRegion(t testing.TB, region string, n int) testRegion {
	t.Helper()
	k, err := GenerateSigningKey(region, n)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(region, k)
	if err != nil {
		t.Fatal(err)
	}
	return testRegion{key: k, issuer: iss}
}

func testClaims(home, sid string) Claims {
	return Claims{
		Subject:   home + ":01J0000000000000000000000" + sid,
		Home:      home,
		SessionID: sid,
		IssuedAt:  testNow,
		Expiry:    testNow.Add(time.Hour),
	}
}

func issue(t testing.TB, r testRegion, c Claims) string {
	t.Helper()
	tok, err := r.issuer.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// newTestVerifier returns a verifier that knows the keys of rs.
func newTestVerifier(t testing.TB, opts []VerifierOption, rs ...testRegion) *Verifier {
	t.Helper()
	v := NewVerifier(opts...)
	for _, r := range rs {
		if err := v.SetRegionKeys(r.issuer.Region(), []PublicKey{r.issuer.PublicKey()}); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

var b64 = base64.RawURLEncoding

// handToken builds a compact JWS by hand: header and payload are marshalled
// to JSON and sign, if not nil, produces the signature of the signing input.
func handToken(t testing.TB, header, payload any, sign func(input []byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + b64.EncodeToString(sig)
}

func ed25519Signer(k *SigningKey) func([]byte) []byte {
	return func(in []byte) []byte { return ed25519.Sign(k.Key, in) }
}

func wirePayload(c Claims) map[string]any {
	return map[string]any{
		"sub": c.Subject, "home": c.Home, "sid": c.SessionID,
		"iat": c.IssuedAt.Unix(), "exp": c.Expiry.Unix(),
	}
}

func sessionHeader(kid string) map[string]any {
	return map[string]any{"alg": "EdDSA", "kid": kid, "typ": TokenType}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	v := newTestVerifier(t, nil, eu)
	c := testClaims("eu-west", "sid-1")
	tok := issue(t, eu, c)

	got, err := v.Verify(tok, testNow.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != c.Subject || got.Home != c.Home || got.SessionID != c.SessionID ||
		!got.IssuedAt.Equal(c.IssuedAt) || !got.Expiry.Equal(c.Expiry) {
		t.Fatalf("claims = %+v, want %+v", got, c)
	}

	// The wire form is what the package documents and nothing more.
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var hdr, payload map[string]any
	for i, dst := range []*map[string]any{&hdr, &payload} {
		b, err := b64.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	if hdr["alg"] != "EdDSA" || hdr["kid"] != "eu-west-1" || hdr["typ"] != TokenType || len(hdr) != 3 {
		t.Errorf("header = %v", hdr)
	}
	if len(payload) != 5 || payload["sub"] != c.Subject || payload["home"] != "eu-west" ||
		payload["sid"] != "sid-1" || payload["iat"] != float64(testNow.Unix()) || payload["exp"] != float64(c.Expiry.Unix()) {
		t.Errorf("payload = %v", payload)
	}

	// Sub-second times are truncated; IssuedAt defaults to now.
	c2 := c
	c2.IssuedAt = time.Time{}
	c2.Expiry = time.Now().Add(time.Hour + 500*time.Millisecond)
	got, err = v.Verify(issue(t, eu, c2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got.Expiry.Unix() != c2.Expiry.Unix() || time.Since(got.IssuedAt) > time.Minute {
		t.Errorf("claims = %+v", got)
	}
}

func TestIssueChecks(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	mod := func(f func(*Claims)) Claims {
		c := testClaims("eu-west", "s")
		f(&c)
		return c
	}
	for name, c := range map[string]Claims{
		"other home":    mod(func(c *Claims) { c.Home = "us-east" }),
		"empty sub":     mod(func(c *Claims) { c.Subject = "" }),
		"email sub":     mod(func(c *Claims) { c.Subject = "alice@example.com" }),
		"empty sid":     mod(func(c *Claims) { c.SessionID = "" }),
		"zero expiry":   mod(func(c *Claims) { c.Expiry = time.Time{} }),
		"expiry at iat": mod(func(c *Claims) { c.Expiry = c.IssuedAt.Add(500 * time.Millisecond) }),
	} {
		if tok, err := eu.issuer.Issue(c); err == nil {
			t.Errorf("%s: issued %s", name, tok)
		}
	}
	_, err := eu.issuer.Issue(mod(func(c *Claims) { c.Home = "us-east" }))
	wantErr(t, err, ErrWrongHome)

	if _, err := NewIssuer("us-east", eu.key); err == nil {
		t.Error("NewIssuer with another region's key: no error")
	}
	if _, err := NewIssuer("eu-west", nil); err == nil {
		t.Error("NewIssuer with nil key: no error")
	}
	if _, err := NewIssuer("eu-west", &SigningKey{KID: "eu-west-1", Key: eu.key.Key[:10]}); err == nil {
		t.Error("NewIssuer with short key: no error")
	}
}

func TestVerifyTampered(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	eu2 := newTestRegion(t, "eu-west", 2)
	v := NewVerifier()
	if err := v.SetRegionKeys("eu-west", []PublicKey{eu.issuer.PublicKey(), eu2.issuer.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	tok := issue(t, eu, testClaims("eu-west", "victim"))
	parts := strings.Split(tok, ".")

	// Another payload under the original signature.
	c := testClaims("eu-west", "attacker")
	p, _ := json.Marshal(wirePayload(c))
	_, err := v.Verify(parts[0]+"."+b64.EncodeToString(p)+"."+parts[2], testNow)
	wantErr(t, err, ErrBadSignature)

	// A flipped signature bit.
	sig, _ := b64.DecodeString(parts[2])
	sig[5] ^= 1
	_, err = v.Verify(parts[0]+"."+parts[1]+"."+b64.EncodeToString(sig), testNow)
	wantErr(t, err, ErrBadSignature)

	// The header pointing at another key of the same region.
	h, _ := json.Marshal(sessionHeader("eu-west-2"))
	_, err = v.Verify(b64.EncodeToString(h)+"."+parts[1]+"."+parts[2], testNow)
	wantErr(t, err, ErrBadSignature)

	// A truncated signature.
	_, err = v.Verify(tok[:len(tok)-4], testNow)
	if err == nil {
		t.Fatal("truncated signature accepted")
	}

	// The original still verifies (and was not poisoned by the failures).
	if _, err := v.Verify(tok, testNow); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyWrongHome(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	us := newTestRegion(t, "us-east", 1)
	v := newTestVerifier(t, nil, eu, us)

	// us-east signs, correctly and under its own kid, a session for an
	// eu-west user.
	forged := handToken(t, sessionHeader("us-east-1"), wirePayload(testClaims("eu-west", "s")), ed25519Signer(us.key))
	_, err := v.Verify(forged, testNow)
	wantErr(t, err, ErrWrongHome)

	// Claiming eu-west's kid does not help: the signature is wrong then.
	forged = handToken(t, sessionHeader("eu-west-1"), wirePayload(testClaims("eu-west", "s")), ed25519Signer(us.key))
	_, err = v.Verify(forged, testNow)
	wantErr(t, err, ErrBadSignature)

	// Each region's own tokens pass.
	for _, r := range []testRegion{eu, us} {
		if _, err := v.Verify(issue(t, r, testClaims(r.issuer.Region(), "s")), testNow); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyUnknownKey(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	eu2 := newTestRegion(t, "eu-west", 2)
	v := newTestVerifier(t, nil, eu)
	_, err := v.Verify(issue(t, eu2, testClaims("eu-west", "s")), testNow)
	wantErr(t, err, ErrUnknownKey)

	noKID := handToken(t, map[string]any{"alg": "EdDSA", "typ": TokenType}, wirePayload(testClaims("eu-west", "s")), ed25519Signer(eu.key))
	_, err = v.Verify(noKID, testNow)
	wantErr(t, err, ErrUnknownKey)
}

func TestVerifyTimes(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	c := testClaims("eu-west", "s")
	tok := issue(t, eu, c)

	for _, cache := range []int{0, 16} {
		t.Run(fmt.Sprint("cache=", cache), func(t *testing.T) {
			v := newTestVerifier(t, []VerifierOption{WithCacheSize(cache)}, eu)
			// Within the default 30 s leeway after exp: still good.
			if _, err := v.Verify(tok, c.Expiry.Add(29*time.Second)); err != nil {
				t.Fatal(err)
			}
			_, err := v.Verify(tok, c.Expiry.Add(30*time.Second))
			wantErr(t, err, ErrTokenExpired)
			wantErr(t, err, ErrExpired)
			if v.cache != nil && v.cache.len() != 0 {
				t.Error("expired token still cached")
			}
			// iat in the future, within and beyond the leeway.
			if _, err := v.Verify(tok, c.IssuedAt.Add(-30*time.Second)); err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(tok, c.IssuedAt.Add(-31*time.Second))
			wantErr(t, err, ErrNotYetValid)
		})
	}

	strict := newTestVerifier(t, []VerifierOption{WithLeeway(0)}, eu)
	if _, err := strict.Verify(tok, c.Expiry.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := strict.Verify(tok, c.Expiry)
	wantErr(t, err, ErrTokenExpired)
	_, err = strict.Verify(tok, c.IssuedAt.Add(-time.Second))
	wantErr(t, err, ErrNotYetValid)

	// nbf is never issued but honoured if present.
	p := wirePayload(c)
	p["nbf"] = c.IssuedAt.Add(10 * time.Minute).Unix()
	nbf := handToken(t, sessionHeader("eu-west-1"), p, ed25519Signer(eu.key))
	v := newTestVerifier(t, nil, eu)
	_, err = v.Verify(nbf, testNow)
	wantErr(t, err, ErrNotYetValid)
	if _, err := v.Verify(nbf, testNow.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRejectsOtherAlgorithms(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	v := newTestVerifier(t, nil, eu)
	payload := wirePayload(testClaims("eu-west", "s"))
	pub := []byte(eu.key.Key.Public().(ed25519.PublicKey))
	hs256 := func(key []byte) func([]byte) []byte {
		return func(in []byte) []byte {
			m := hmac.New(sha256.New, key)
			m.Write(in)
			return m.Sum(nil)
		}
	}
	header := func(alg string) map[string]any {
		h := sessionHeader("eu-west-1")
		h["alg"] = alg
		return h
	}
	for name, tok := range map[string]string{
		"none":                 handToken(t, header("none"), payload, nil),
		"None":                 handToken(t, header("None"), payload, nil),
		"none with signature":  handToken(t, header("none"), payload, ed25519Signer(eu.key)),
		"HS256 public key":     handToken(t, header("HS256"), payload, hs256(pub)),
		"HS256 public key b64": handToken(t, header("HS256"), payload, hs256([]byte(b64.EncodeToString(pub)))),
		"RS256":                handToken(t, header("RS256"), payload, func([]byte) []byte { return make([]byte, 256) }),
		"ES256":                handToken(t, header("ES256"), payload, func([]byte) []byte { return make([]byte, 64) }),
		"no alg":               handToken(t, map[string]any{"kid": "eu-west-1", "typ": TokenType}, payload, ed25519Signer(eu.key)),
		"Ed25519 (RFC 9864)":   handToken(t, header("Ed25519"), payload, ed25519Signer(eu.key)),
	} {
		_, err := v.Verify(tok, testNow)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestVerifyChecksType(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	v := newTestVerifier(t, nil, eu)
	payload := wirePayload(testClaims("eu-west", "s"))
	sign := ed25519Signer(eu.key)
	with := func(k string, val any) map[string]any {
		h := sessionHeader("eu-west-1")
		if val == nil {
			delete(h, k)
		} else {
			h[k] = val
		}
		return h
	}
	// An OIDC ID token (or access token) signed by the same key.
	idToken := map[string]any{
		"iss": "https://id.example.com", "aud": "app", "sub": "eu-west:01J", "home": "eu-west", "sid": "s",
		"iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix(),
	}
	for name, tok := range map[string]string{
		"typ JWT":       handToken(t, with("typ", "JWT"), payload, sign),
		"ID token":      handToken(t, with("typ", "JWT"), idToken, sign),
		"at+jwt":        handToken(t, with("typ", "at+jwt"), payload, sign),
		"no typ":        handToken(t, with("typ", nil), payload, sign),
		"typ not text":  handToken(t, with("typ", 7), payload, sign),
		"crit":          handToken(t, with("crit", []string{"exp"}), payload, sign),
		"b64 false":     handToken(t, map[string]any{"alg": "EdDSA", "kid": "eu-west-1", "typ": TokenType, "b64": false, "crit": []string{"b64"}}, payload, sign),
		"empty":         "",
		"two parts":     "a.b",
		"four parts":    "a.b.c.d",
		"json":          `{"payload":"e30","signatures":[]}`,
		"bad base64":    "!!!.???.***",
		"long":          strings.Repeat("a", maxTokenLen+1),
		"payload array": handToken(t, sessionHeader("eu-west-1"), []int{1}, sign),
		"no sub":        handToken(t, sessionHeader("eu-west-1"), map[string]any{"home": "eu-west", "sid": "s", "iat": 1, "exp": testNow.Unix() + 10}, sign),
		"no sid":        handToken(t, sessionHeader("eu-west-1"), map[string]any{"sub": "x", "home": "eu-west", "iat": 1, "exp": testNow.Unix() + 10}, sign),
		"no home":       handToken(t, sessionHeader("eu-west-1"), map[string]any{"sub": "x", "sid": "s", "iat": 1, "exp": testNow.Unix() + 10}, sign),
		"no exp":        handToken(t, sessionHeader("eu-west-1"), map[string]any{"sub": "x", "home": "eu-west", "sid": "s", "iat": 1}, sign),
		"exp string":    handToken(t, sessionHeader("eu-west-1"), map[string]any{"sub": "x", "home": "eu-west", "sid": "s", "iat": 1, "exp": "soon"}, sign),
		"exp huge":      handToken(t, sessionHeader("eu-west-1"), map[string]any{"sub": "x", "home": "eu-west", "sid": "s", "iat": 1, "exp": int64(1) << 62}, sign),
		"iat after exp": handToken(t, sessionHeader("eu-west-1"), map[string]any{"sub": "x", "home": "eu-west", "sid": "s", "iat": testNow.Unix() + 20, "exp": testNow.Unix() + 10}, sign),
	} {
		_, err := v.Verify(tok, testNow)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	// The check is case-insensitive, as media types are.
	if _, err := v.Verify(handToken(t, with("typ", strings.ToUpper(TokenType)), payload, sign), testNow); err != nil {
		t.Errorf("upper-case typ: %v", err)
	}
}

func TestSetRegionKeys(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	us := newTestRegion(t, "us-east", 1)
	euw := newTestRegion(t, "eu-west-x", 1)
	v := NewVerifier()
	for name, keys := range map[string][]PublicKey{
		"other region":         {us.issuer.PublicKey()},
		"longer region":        {euw.issuer.PublicKey()},
		"short key":            {{KID: "eu-west-1", Key: eu.issuer.PublicKey().Key[:5]}},
		"bad kid":              {{KID: "eu-west-one", Key: eu.issuer.PublicKey().Key}},
		"duplicate":            {eu.issuer.PublicKey(), eu.issuer.PublicKey()},
		"region field differs": {{KID: "eu-west-1", Region: "us-east", Key: eu.issuer.PublicKey().Key}},
	} {
		if err := v.SetRegionKeys("eu-west", keys); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := v.SetRegionKeys("Bad", nil); err == nil {
		t.Error("bad region: no error")
	}
	if len(v.Keys()) != 0 {
		t.Fatal("a rejected call changed the keys")
	}
	if err := v.SetRegionKeys("eu-west", []PublicKey{eu.issuer.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	if err := v.SetRegionKeys("us-east", []PublicKey{us.issuer.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	if ks := v.Keys(); len(ks) != 2 {
		t.Fatalf("Keys() = %v", ks)
	}
	// The caller's slice is copied.
	pub := us.issuer.PublicKey()
	if err := v.SetRegionKeys("us-east", []PublicKey{pub}); err != nil {
		t.Fatal(err)
	}
	pub.Key[0] ^= 1
	if _, err := v.Verify(issue(t, us, testClaims("us-east", "s")), testNow); err != nil {
		t.Fatalf("verifier shares the caller's key bytes: %v", err)
	}
}

func TestRevokedHookOnCachedToken(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	var revoked sync.Map
	var calls atomic.Int64
	v := newTestVerifier(t, []VerifierOption{WithRevoked(func(sid string) bool {
		calls.Add(1)
		_, ok := revoked.Load(sid)
		return ok
	})}, eu)
	tok := issue(t, eu, testClaims("eu-west", "sid-r"))
	other := issue(t, eu, testClaims("eu-west", "sid-other"))
	for _, tk := range []string{tok, other} {
		if _, err := v.Verify(tk, testNow); err != nil {
			t.Fatal(err)
		}
	}
	if v.cache.len() != 2 {
		t.Fatalf("cache holds %d entries, want 2", v.cache.len())
	}
	revoked.Store("sid-r", true)
	_, err := v.Verify(tok, testNow)
	wantErr(t, err, ErrRevoked)
	if _, err := v.Verify(other, testNow); err != nil {
		t.Fatal(err)
	}
	revoked.Delete("sid-r")
	if _, err := v.Verify(tok, testNow); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 5 {
		t.Fatalf("hook called %d times, want 5 (every successful check)", n)
	}
}

func TestCacheIsBounded(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	const size = 256
	v := newTestVerifier(t, []VerifierOption{WithCacheSize(size)}, eu)
	toks := make([]string, 4*size)
	for i := range toks {
		toks[i] = issue(t, eu, testClaims("eu-west", fmt.Sprint("sid-", i)))
		if _, err := v.Verify(toks[i], testNow); err != nil {
			t.Fatal(err)
		}
		if n := v.cache.len(); n > size {
			t.Fatalf("after %d tokens the cache holds %d entries, bound %d", i+1, n, size)
		}
	}
	if n := v.cache.len(); n < size/4 {
		t.Errorf("cache holds only %d entries of %d", n, size)
	}
	// Evicted tokens still verify, and come back.
	if _, err := v.Verify(toks[0], testNow); err != nil {
		t.Fatal(err)
	}
	// A hot token survives a stream of others.
	hot := toks[len(toks)-1]
	for i := range 2 * size {
		tk := issue(t, eu, testClaims("eu-west", fmt.Sprint("more-", i)))
		if _, err := v.Verify(tk, testNow); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(hot, testNow); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := v.cache.get(hashToken(hot)); !ok {
		t.Error("hot token was evicted")
	}
}

func TestCacheCapacity(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64, 100, 127, 128, 129, 1000, DefaultCacheSize} {
		c := newTokenCache(n)
		capacity := len(c.shards) * 2 * c.genCap
		if capacity > max(n, 2) || capacity < max(n, 2)/2 {
			t.Errorf("newTokenCache(%d): capacity %d (%d shards × 2 × %d)", n, capacity, len(c.shards), c.genCap)
		}
		for i := range 3 * n {
			var k cacheKey
			k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
			c.put(k, cacheEntry{})
		}
		if got := c.len(); got > max(n, 2) {
			t.Errorf("newTokenCache(%d) holds %d entries", n, got)
		}
	}
}

func TestCacheOnlyKeepsVerifiedTokens(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	us := newTestRegion(t, "us-east", 1)
	v := newTestVerifier(t, nil, eu, us)
	for _, tok := range []string{
		handToken(t, sessionHeader("us-east-1"), wirePayload(testClaims("eu-west", "s")), ed25519Signer(us.key)),
		handToken(t, sessionHeader("eu-west-1"), wirePayload(testClaims("eu-west", "s")), ed25519Signer(us.key)),
		issue(t, eu, Claims{Subject: "x", Home: "eu-west", SessionID: "s", IssuedAt: testNow.Add(-2 * time.Hour), Expiry: testNow.Add(-time.Hour)}),
	} {
		if _, err := v.Verify(tok, testNow); err == nil {
			t.Fatal("bad token accepted")
		}
	}
	if n := v.cache.len(); n != 0 {
		t.Fatalf("cache holds %d rejected tokens", n)
	}
}

func TestKeyRemovalInvalidatesCache(t *testing.T) {
	eu1 := newTestRegion(t, "eu-west", 1)
	eu2 := newTestRegion(t, "eu-west", 2)
	v := NewVerifier()
	if err := v.SetRegionKeys("eu-west", []PublicKey{eu1.issuer.PublicKey(), eu2.issuer.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	t1 := issue(t, eu1, testClaims("eu-west", "a"))
	t2 := issue(t, eu2, testClaims("eu-west", "b"))
	for _, tk := range []string{t1, t2} {
		if _, err := v.Verify(tk, testNow); err != nil {
			t.Fatal(err)
		}
	}
	// Rotate eu-west-1 out; eu-west-2 stays, with its cache entries.
	if err := v.SetRegionKeys("eu-west", []PublicKey{eu2.issuer.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(t1, testNow)
	wantErr(t, err, ErrUnknownKey)
	if _, ok := v.cache.get(hashToken(t1)); ok {
		t.Error("entry of a removed key still cached")
	}
	if _, ok := v.cache.get(hashToken(t2)); !ok {
		t.Error("entry of an unchanged key was dropped")
	}
	if _, err := v.Verify(t2, testNow); err != nil {
		t.Fatal(err)
	}

	// The same kid with other key material (a botched rotation, or a
	// compromised key replaced) invalidates too.
	impostor := newTestRegion(t, "eu-west", 2)
	if err := v.SetRegionKeys("eu-west", []PublicKey{impostor.issuer.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t2, testNow)
	wantErr(t, err, ErrBadSignature)

	// Removing the region entirely.
	t3 := issue(t, impostor, testClaims("eu-west", "c"))
	if _, err := v.Verify(t3, testNow); err != nil {
		t.Fatal(err)
	}
	if err := v.SetRegionKeys("eu-west", nil); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t3, testNow)
	wantErr(t, err, ErrUnknownKey)
}

func TestVerifierConcurrent(t *testing.T) {
	regions := []string{"eu-west", "us-east", "ap-southeast"}
	var rs []testRegion
	for _, r := range regions {
		rs = append(rs, newTestRegion(t, r, 1))
	}
	spare := newTestRegion(t, "eu-west", 2)
	var revoked sync.Map
	v := newTestVerifier(t, []VerifierOption{WithCacheSize(64), WithRevoked(func(sid string) bool {
		_, ok := revoked.Load(sid)
		return ok
	})}, rs...)
	var toks []string
	for i := range 200 {
		r := rs[i%len(rs)]
		toks = append(toks, issue(t, r, testClaims(r.issuer.Region(), fmt.Sprint("sid-", i))))
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // rotate a spare key in and out of eu-west
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			keys := []PublicKey{rs[0].issuer.PublicKey()}
			if i%2 == 0 {
				keys = append(keys, spare.issuer.PublicKey())
			}
			if err := v.SetRegionKeys("eu-west", keys); err != nil {
				t.Error(err)
				return
			}
			revoked.Store(fmt.Sprint("sid-", i%200), true)
			revoked.Delete(fmt.Sprint("sid-", (i+100)%200))
			_ = v.Keys()
		}
	})
	var verifiers sync.WaitGroup
	for g := range 8 {
		verifiers.Go(func() {
			for i := range 1000 {
				tok := toks[(g*31+i)%len(toks)]
				_, err := v.Verify(tok, testNow)
				if err != nil && !errors.Is(err, ErrRevoked) {
					t.Errorf("Verify: %v", err)
					return
				}
			}
		})
	}
	// Concurrent issuing is fine too.
	for range 4 {
		verifiers.Go(func() {
			for range 50 {
				if _, err := rs[1].issuer.Issue(testClaims("us-east", "x")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	verifiers.Wait()
	close(stop)
	wg.Wait()
	if n := v.cache.len(); n > 64 {
		t.Errorf("cache holds %d entries, bound 64", n)
	}
}

func TestHashTokenDoesNotAllocate(t *testing.T) {
	tok := strings.Repeat("x", 300)
	if n := testing.AllocsPerRun(100, func() { _ = hashToken(tok) }); n != 0 {
		t.Errorf("hashToken allocates %v times", n)
	}
}

func benchVerify(b *testing.B, v *Verifier, toks []string) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := v.Verify(toks[i%len(toks)], testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCold verifies with the cache disabled: the full cost of
// parsing and an Ed25519 verification.
func BenchmarkVerifyCold(b *testing.B) {
	eu := newTestRegion(b, "eu-west", 1)
	v := newTestVerifier(b, []VerifierOption{WithCacheSize(0)}, eu)
	benchVerify(b, v, []string{issue(b, eu, testClaims("eu-west", "s"))})
}

// BenchmarkVerifyColdDistinct verifies distinct tokens with the cache on:
// every call misses, and adds an entry (evicting once full).
func BenchmarkVerifyColdDistinct(b *testing.B) {
	eu := newTestRegion(b, "eu-west", 1)
	v := newTestVerifier(b, []VerifierOption{WithCacheSize(1024)}, eu)
	toks := make([]string, 4096)
	for i := range toks {
		toks[i] = issue(b, eu, testClaims("eu-west", fmt.Sprint("sid-", i)))
	}
	benchVerify(b, v, toks)
}

// BenchmarkVerifyCached verifies tokens already in the cache, with a
// revocation hook.
func BenchmarkVerifyCached(b *testing.B) {
	eu := newTestRegion(b, "eu-west", 1)
	var revoked sync.Map
	v := newTestVerifier(b, []VerifierOption{WithRevoked(func(sid string) bool {
		_, ok := revoked.Load(sid)
		return ok
	})}, eu)
	toks := make([]string, 1024)
	for i := range toks {
		toks[i] = issue(b, eu, testClaims("eu-west", fmt.Sprint("sid-", i)))
		if _, err := v.Verify(toks[i], testNow); err != nil {
			b.Fatal(err)
		}
	}
	benchVerify(b, v, toks)
}

func BenchmarkVerifyCachedParallel(b *testing.B) {
	eu := newTestRegion(b, "eu-west", 1)
	v := newTestVerifier(b, nil, eu)
	toks := make([]string, 1024)
	for i := range toks {
		toks[i] = issue(b, eu, testClaims("eu-west", fmt.Sprint("sid-", i)))
	}
	b.ReportAllocs()
	b.ResetTimer()
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 97
		for pb.Next() {
			if _, err := v.Verify(toks[i%len(toks)], testNow); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkIssue(b *testing.B) {
	eu := newTestRegion(b, "eu-west", 1)
	c := testClaims("eu-west", "s")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eu.issuer.Issue(c); err != nil {
			b.Fatal(err)
		}
	}
}
