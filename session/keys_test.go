package session

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestKIDRegion(t *testing.T) {
	good := map[string]string{
		"eu-west-1":        "eu-west",
		"us-east-12":       "us-east",
		"ap-southeast-2-3": "ap-southeast-2",
		"local-1073741824": "local",
		"x-1":              "x",
	}
	for kid, want := range good {
		got, err := KIDRegion(kid)
		if err != nil || got != want {
			t.Errorf("KIDRegion(%q) = %q, %v; want %q", kid, got, err, want)
		}
	}
	for _, kid := range []string{
		"", "eu-west", "eu-west-", "-1", "eu-west-0", "eu-west-01", "eu-west-+1",
		"EU-west-1", "eu_west-1", "eu-west-1a", "eu-west-99999999999",
		"eu west-1", "eu-west-1073741825",
	} {
		if r, err := KIDRegion(kid); err == nil {
			t.Errorf("KIDRegion(%q) = %q, nil; want an error", kid, r)
		}
	}
	if _, err := KID("Bad", 1); err == nil {
		t.Error("KID(Bad, 1): no error")
	}
	if _, err := KID("eu-west", 0); err == nil {
		t.Error("KID(eu-west, 0): no error")
	}
	if kid, err := KID("eu-west", 7); err != nil || kid != "eu-west-7" {
		t.Errorf("KID(eu-west, 7) = %q, %v", kid, err)
	}
}

func TestGenerateSigningKey(t *testing.T) {
	k, err := GenerateSigningKey("eu-west", 2)
	if err != nil {
		t.Fatal(err)
	}
	if k.KID != "eu-west-2" || k.Region() != "eu-west" || len(k.Key) != ed25519.PrivateKeySize {
		t.Fatalf("key = %s %s %d bytes", k.KID, k.Region(), len(k.Key))
	}
	p := k.Public()
	if p.KID != "eu-west-2" || p.Region != "eu-west" || !p.Key.Equal(k.Key.Public()) {
		t.Fatalf("public = %+v", p)
	}
	if _, err := GenerateSigningKey("eu west", 1); err == nil {
		t.Error("bad region: no error")
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	k, err := GenerateSigningKey("us-east", 3)
	if err != nil {
		t.Fatal(err)
	}
	b, err := MarshalKeyFile(k)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["kid"] != "us-east-3" || raw["alg"] != "EdDSA" || raw["seed"] != base64.RawURLEncoding.EncodeToString(k.Key.Seed()) || len(raw) != 3 {
		t.Fatalf("key file = %s", b)
	}
	k2, err := UnmarshalKeyFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if k2.KID != k.KID || !k2.Key.Equal(k.Key) {
		t.Fatal("round trip changed the key")
	}
}

func TestUnmarshalKeyFileErrors(t *testing.T) {
	seed := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	for name, in := range map[string]string{
		"not json":      `nope`,
		"bad kid":       `{"kid":"eu-west","alg":"EdDSA","seed":"` + seed + `"}`,
		"bad alg":       `{"kid":"eu-west-1","alg":"ES256","seed":"` + seed + `"}`,
		"short seed":    `{"kid":"eu-west-1","alg":"EdDSA","seed":"AAAA"}`,
		"padded seed":   `{"kid":"eu-west-1","alg":"EdDSA","seed":"` + seed + `="}`,
		"std base64":    `{"kid":"eu-west-1","alg":"EdDSA","seed":"++++++++++++++++++++++++++++++++++++++++++8"}`,
		"unknown field": `{"kid":"eu-west-1","alg":"EdDSA","seed":"` + seed + `","x":"1"}`,
	} {
		if _, err := UnmarshalKeyFile([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		} else if strings.Contains(err.Error(), seed) {
			t.Errorf("%s: error reveals the seed: %v", name, err)
		}
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "session.key")
	k, err := LoadOrCreateKeyFile(path, "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	if k.KID != "eu-west-1" {
		t.Fatalf("kid = %s", k.KID)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Fatalf("mode = %v, want 0600", m)
	}
	again, err := LoadOrCreateKeyFile(path, "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Key.Equal(k.Key) {
		t.Fatal("second load returned another key")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("dir holds %d files, want just the key file", len(entries))
	}

	if _, err := LoadOrCreateKeyFile(path, "us-east"); err == nil || !strings.Contains(err.Error(), "us-east") {
		t.Errorf("other region's file: err = %v", err)
	}
	if _, err := LoadOrCreateKeyFile(filepath.Join(dir, "missing", "k"), "eu-west"); err == nil {
		t.Error("missing parent directory: no error")
	}
	if _, err := LoadOrCreateKeyFile(filepath.Join(dir, "k2"), "Bad Region"); err == nil {
		t.Error("bad region: no error")
	}
	bad := filepath.Join(dir, "corrupt.key")
	if err := os.WriteFile(bad, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeyFile(bad, "eu-west"); err == nil {
		t.Error("corrupt file: no error")
	}
	if b, _ := os.ReadFile(bad); string(b) != "{" {
		t.Error("corrupt file was overwritten")
	}
}

func TestLoadOrCreateKeyFileRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "session.key")
	const n = 8
	keys := make([]*SigningKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], errs[i] = LoadOrCreateKeyFile(path, "eu-west") })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !keys[i].Key.Equal(keys[0].Key) {
			t.Fatal("racing creators got different keys")
		}
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	var pubs []PublicKey
	for _, r := range []string{"eu-west", "us-east", "ap-southeast"} {
		for n := 1; n <= 2; n++ {
			k, err := GenerateSigningKey(r, n)
			if err != nil {
				t.Fatal(err)
			}
			pubs = append(pubs, k.Public())
		}
	}
	b, err := MarshalJWKS(pubs)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct{ Keys []map[string]string }
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	k0 := raw.Keys[0]
	if k0["kty"] != "OKP" || k0["crv"] != "Ed25519" || k0["use"] != "sig" || k0["alg"] != "EdDSA" || k0["kid"] != "eu-west-1" || len(k0) != 6 {
		t.Fatalf("jwk = %v", k0)
	}
	got, err := ParseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pubs) {
		t.Fatalf("%d keys, want %d", len(got), len(pubs))
	}
	for i := range got {
		if got[i].KID != pubs[i].KID || got[i].Region != pubs[i].Region || !got[i].Key.Equal(pubs[i].Key) {
			t.Errorf("key %d = %+v, want %+v", i, got[i], pubs[i])
		}
	}
	// An empty set is valid both ways.
	if b, err := MarshalJWKS(nil); err != nil || string(b) != `{"keys":[]}` {
		t.Errorf("MarshalJWKS(nil) = %s, %v", b, err)
	}
	if ks, err := ParseJWKS([]byte(`{"keys":[]}`)); err != nil || len(ks) != 0 {
		t.Errorf("ParseJWKS(empty) = %v, %v", ks, err)
	}
}

func TestMarshalJWKSErrors(t *testing.T) {
	k, _ := GenerateSigningKey("eu-west", 1)
	p := k.Public()
	for name, keys := range map[string][]PublicKey{
		"bad kid":         {{KID: "eu-west", Key: p.Key}},
		"region mismatch": {{KID: "eu-west-1", Region: "us-east", Key: p.Key}},
		"short key":       {{KID: "eu-west-1", Key: p.Key[:31]}},
		"duplicate":       {p, p},
	} {
		if _, err := MarshalJWKS(keys); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseJWKSErrors(t *testing.T) {
	k, _ := GenerateSigningKey("eu-west", 1)
	x := base64.RawURLEncoding.EncodeToString(k.Key.Public().(ed25519.PublicKey))
	d := base64.RawURLEncoding.EncodeToString(k.Key.Seed())
	okp := func(extra string) string {
		return `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `"` + extra + `}]}`
	}
	one := `{"kty":"OKP","crv":"Ed25519","kid":"eu-west-1","x":"` + x + `"}`
	for name, tc := range map[string]struct{ in, want string }{
		"not json":    {`[`, "jwks"},
		"no keys":     {`{}`, `no "keys"`},
		"rsa":         {`{"keys":[{"kty":"RSA","kid":"eu-west-1","n":"AQAB","e":"AQAB"}]}`, "only Ed25519"},
		"ec":          {`{"keys":[{"kty":"EC","crv":"P-256","kid":"eu-west-1","x":"AA","y":"AA"}]}`, "only Ed25519"},
		"x25519":      {`{"keys":[{"kty":"OKP","crv":"X25519","kid":"eu-west-1","x":"` + x + `"}]}`, "only Ed25519"},
		"oct":         {`{"keys":[{"kty":"oct","kid":"eu-west-1","k":"AAAA"}]}`, "only Ed25519"},
		"private":     {okp(`,"kid":"eu-west-1","d":"` + d + `"`), "private key"},
		"no kid":      {okp(``), "kid"},
		"kid no n":    {okp(`,"kid":"eu-west"`), "kid"},
		"kid zero":    {okp(`,"kid":"eu-west-0"`), "kid"},
		"kid upper":   {okp(`,"kid":"EU-1"`), "kid"},
		"use enc":     {okp(`,"kid":"eu-west-1","use":"enc"`), "use"},
		"alg rs256":   {okp(`,"kid":"eu-west-1","alg":"RS256"`), "alg"},
		"short x":     {`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"eu-west-1","x":"AAAA"}]}`, "x is not"},
		"bad x":       {`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"eu-west-1","x":"!!"}]}`, "x is not"},
		"missing x":   {`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"eu-west-1"}]}`, "x is not"},
		"duplicate":   {`{"keys":[` + one + `,` + one + `]}`, "duplicate"},
		"keys object": {`{"keys":{}}`, "jwks"},
	} {
		_, err := ParseJWKS([]byte(tc.in))
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", name, err, tc.want)
		}
		if strings.Contains(err.Error(), d) {
			t.Errorf("%s: error reveals a private key", name)
		}
	}
}

func TestParseJWKSMinimal(t *testing.T) {
	// use and alg are optional.
	k, _ := GenerateSigningKey("eu-west", 1)
	x := base64.RawURLEncoding.EncodeToString(k.Key.Public().(ed25519.PublicKey))
	ks, err := ParseJWKS([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"eu-west-1","x":"` + x + `"}]}`))
	if err != nil || len(ks) != 1 || !bytes.Equal(ks[0].Key, k.Key.Public().(ed25519.PublicKey)) {
		t.Fatalf("ParseJWKS = %v, %v", ks, err)
	}
}
