package oidc

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

func kids(keys []session.PublicKey) string {
	var out []string
	for _, k := range keys {
		out = append(out, k.KID)
	}
	return strings.Join(out, ",")
}

func TestKeyRingFileAndRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oidc-keys.json")
	// Nodes starting at once end up with the same key.
	rings := make([]*KeyRing, 4)
	var wg sync.WaitGroup
	for i := range rings {
		wg.Go(func() {
			k, err := LoadOrCreateKeyRing(path, "eu-west", 0)
			if err != nil {
				t.Error(err)
			}
			rings[i] = k
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	a, b := rings[0], rings[1]
	if a.SigningKID() != "eu-west-1" || !a.signer().pub.Equal(b.signer().pub) {
		t.Fatalf("racing nodes: %s and %s with different keys", a.SigningKID(), b.SigningKID())
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v; want 0600", st.Mode(), err)
	}
	if _, err := LoadOrCreateKeyRing(path, "us-east", 0); err == nil {
		t.Fatal("another region's key file accepted")
	}

	now := time.Now()
	kid, err := a.Rotate(now)
	if err != nil || kid != "eu-west-2" {
		t.Fatalf("Rotate = %q, %v", kid, err)
	}
	if got := kids(a.Public(now)); got != "eu-west-2,eu-west-1" {
		t.Fatalf("published after rotation: %s, want both (overlap)", got)
	}
	// The other node sees the rotation.
	if err := b.Reload(); err != nil || b.SigningKID() != "eu-west-2" {
		t.Fatalf("after Reload: signer %s, %v", b.SigningKID(), err)
	}
	// The old key verifies until the retention has passed, then is
	// dropped (from what is published at once, from the file at the
	// next rotation).
	if _, ok := a.publicKey("eu-west-1", now.Add(MaxTokenTTL-time.Minute)); !ok {
		t.Fatal("the retired key is not published within the retention")
	}
	later := now.Add(MaxTokenTTL + time.Minute)
	if _, ok := a.publicKey("eu-west-1", later); ok {
		t.Fatal("the retired key is still published after the retention")
	}
	if got := kids(a.Public(later)); got != "eu-west-2" {
		t.Fatalf("published after the retention: %s", got)
	}
	if _, err := a.Rotate(later); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), `"eu-west-1"`) || !strings.Contains(string(raw), `"eu-west-3"`) {
		t.Fatalf("key file after the second rotation:\n%s", raw)
	}
	js, err := a.JWKS(later)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := session.ParseJWKS(js)
	if err != nil || kids(pub) != "eu-west-3,eu-west-2" || strings.Contains(string(js), `"d"`) {
		t.Fatalf("JWKS %s: %v", js, err)
	}
}

func TestKeyFileRefusals(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"garbage":      "not json",
		"no signer":    `{"region":"eu-west","keys":[{"kid":"eu-west-1","alg":"EdDSA","seed":"` + strings.Repeat("A", 43) + `","created_at":"2024-01-01T00:00:00Z","retired_at":"2024-01-02T00:00:00Z"}]}`,
		"wrong alg":    `{"region":"eu-west","keys":[{"kid":"eu-west-1","alg":"ES256","seed":"` + strings.Repeat("A", 43) + `","created_at":"2024-01-01T00:00:00Z"}]}`,
		"short seed":   `{"region":"eu-west","keys":[{"kid":"eu-west-1","alg":"EdDSA","seed":"AAAA","created_at":"2024-01-01T00:00:00Z"}]}`,
		"other region": `{"region":"eu-west","keys":[{"kid":"us-east-1","alg":"EdDSA","seed":"` + strings.Repeat("A", 43) + `","created_at":"2024-01-01T00:00:00Z"}]}`,
		"two signers": `{"region":"eu-west","keys":[{"kid":"eu-west-2","alg":"EdDSA","seed":"` + strings.Repeat("A", 43) + `","created_at":"2024-01-01T00:00:00Z"},` +
			`{"kid":"eu-west-1","alg":"EdDSA","seed":"` + strings.Repeat("B", 43) + `","created_at":"2024-01-01T00:00:00Z"}]}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateKeyRing(p, "eu-west", 0); err == nil {
			t.Errorf("%s: key file accepted", name)
		}
	}
}

// forge signs an arbitrary header and payload: the attacks on access
// tokens.
func forge(t *testing.T, header map[string]any, claims any, sign func([]byte) []byte) string {
	t.Helper()
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	return in + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(in)))
}

func TestVerifyAccessRefusesForgeries(t *testing.T) {
	const iss = "https://id.example.com"
	ring, err := NewKeyRing("eu-west", 0)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKeyRing("us-east", 0)
	now := time.Now()
	good := accessClaims{Issuer: iss, Subject: "eu-west.u1", Audience: []string{"app"}, ClientID: "app", Scope: "openid",
		IssuedAt: now.Unix(), Expiry: now.Add(time.Minute).Unix(), JTI: "f.j"}
	tok, err := signAccess(ring, good)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := verifyAccess(ring, iss, tok, now); err != nil || c.Subject != "eu-west.u1" {
		t.Fatalf("a good token: %+v, %v", c, err)
	}
	kid := ring.SigningKID()
	pub := ring.signer().pub
	ed := func(b []byte) []byte { return ed25519.Sign(ring.signer().priv, b) }
	hs := func(b []byte) []byte { m := hmac.New(sha256.New, pub); m.Write(b); return m.Sum(nil) }
	with := func(f func(*accessClaims)) accessClaims { c := good; f(&c); return c }
	cases := map[string]struct {
		tok  string
		want error
	}{
		"alg none":                  {forge(t, map[string]any{"alg": "none", "kid": kid, "typ": "at+jwt"}, good, func([]byte) []byte { return nil }), errTokenInvalid},
		"HS256 with the public key": {forge(t, map[string]any{"alg": "HS256", "kid": kid, "typ": "at+jwt"}, good, hs), errTokenInvalid},
		"typ JWT (an ID token)":     {forge(t, map[string]any{"alg": "EdDSA", "kid": kid, "typ": "JWT"}, good, ed), errTokenInvalid},
		"wrong issuer":              {forge(t, map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}, with(func(c *accessClaims) { c.Issuer = "https://evil" }), ed), errTokenInvalid},
		"expired":                   {forge(t, map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}, with(func(c *accessClaims) { c.Expiry = now.Add(-time.Second).Unix() }), ed), errTokenExpired},
		"unknown kid":               {forge(t, map[string]any{"alg": "EdDSA", "kid": "eu-west-9", "typ": "at+jwt"}, good, ed), errTokenInvalid},
		"no jti":                    {forge(t, map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}, with(func(c *accessClaims) { c.JTI = "" }), ed), errTokenInvalid},
		"signed by another region":  {mustSign(t, other, good), errForeignToken},
		"tampered payload":          {tok[:strings.Index(tok, ".")+1] + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+iss+`","sub":"eu-west.admin"}`)) + tok[strings.LastIndex(tok, "."):], errTokenInvalid},
		"not a JWT":                 {"eu-west.abc", errTokenInvalid},
	}
	for name, tc := range cases {
		if _, err := verifyAccess(ring, iss, tc.tok, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func mustSign(t *testing.T, k *KeyRing, c accessClaims) string {
	t.Helper()
	tok, err := signAccess(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOpaqueTokens(t *testing.T) {
	tok, err := newOpaque("ap-southeast")
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := opaqueRegion(tok); !ok || r != "ap-southeast" || len(tok) != len("ap-southeast.")+43 {
		t.Fatalf("opaqueRegion(%s) = %q %v", tok, r, ok)
	}
	for _, bad := range []string{"", "eu-west", ".abc", "eu-west.short", "eu-west." + strings.Repeat("+", 43), "a.b.c"} {
		if _, ok := opaqueRegion(bad); ok {
			t.Errorf("opaqueRegion(%q) accepted", bad)
		}
	}
	if r := tokenRegion(mustSign(t, mustRing(t, "us-east"), accessClaims{})); r != "us-east" {
		t.Errorf("tokenRegion(JWT of us-east) = %q", r)
	}
}

func mustRing(t *testing.T, region string) *KeyRing {
	k, err := NewKeyRing(region, 0)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestValidateClient(t *testing.T) {
	secret := HashSecret("s")
	ok := store.Client{ID: "app", SecretHash: secret, GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"},
		RedirectURIs: []string{"https://app.example.com/cb", "http://127.0.0.1:8080/cb", "http://localhost/cb"}}
	if err := ValidateClient(ok); err != nil {
		t.Fatalf("a good client: %v", err)
	}
	native := store.Client{ID: "ios", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"com.example.app:/cb"}}
	if err := ValidateClient(native); err != nil {
		t.Fatalf("a native public client: %v", err)
	}
	for name, c := range map[string]store.Client{
		"http on a public host":       {ID: "a", SecretHash: secret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"http://app.example.com/cb"}},
		"fragment":                    {ID: "a", SecretHash: secret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://app/cb#x"}},
		"relative":                    {ID: "a", SecretHash: secret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"/cb"}},
		"custom scheme, confidential": {ID: "a", SecretHash: secret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"com.example.app:/cb"}},
		"implicit":                    {ID: "a", SecretHash: secret, GrantTypes: []string{"implicit"}, RedirectURIs: []string{"https://app/cb"}},
		"password":                    {ID: "a", SecretHash: secret, GrantTypes: []string{"password"}},
		"public client credentials":   {ID: "a", GrantTypes: []string{"client_credentials"}},
		"code without redirect":       {ID: "a", SecretHash: secret, GrantTypes: []string{"authorization_code"}},
		"refresh alone":               {ID: "a", SecretHash: secret, GrantTypes: []string{"refresh_token"}},
		"no grant":                    {ID: "a", SecretHash: secret},
		"bad id":                      {ID: "a b", SecretHash: secret, GrantTypes: []string{"client_credentials"}},
		"bad scope":                   {ID: "a", SecretHash: secret, GrantTypes: []string{"client_credentials"}, Scopes: []string{"a b"}},
		"huge ttl":                    {ID: "a", SecretHash: secret, GrantTypes: []string{"client_credentials"}, AccessTokenTTL: 48 * time.Hour},
	} {
		if err := ValidateClient(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Secrets: 256 bits, compared by hash.
	s1, h1, err := NewSecret()
	if err != nil || len(s1) != 43 {
		t.Fatalf("NewSecret = %q, %v", s1, err)
	}
	c := store.Client{SecretHash: h1}
	if !checkSecret(c, s1) || checkSecret(c, s1+"x") || checkSecret(c, "") || checkSecret(store.Client{}, "") {
		t.Fatal("checkSecret")
	}
}
