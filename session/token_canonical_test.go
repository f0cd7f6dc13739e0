package session

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The canonical fast path (verifyCanonical) must reach exactly the result
// of the general path (verifyGeneral, through go-jose) for every token it
// takes; these tests compare the two.

// sameResult compares both paths on token.
func sameResult(t *testing.T, table *keyTable, token string) (fast bool) {
	t.Helper()
	c1, nbf1, k1, err1, ok := verifyCanonical(token, table)
	if !ok {
		return false
	}
	c2, nbf2, k2, err2 := verifyGeneral(token, table)
	if fmt.Sprint(err1) != fmt.Sprint(err2) {
		t.Fatalf("token %q:\nfast:    %v\ngeneral: %v", token, err1, err2)
	}
	if !reflect.DeepEqual(c1, c2) || !nbf1.Equal(nbf2) || (err1 == nil && k1 != k2) {
		t.Fatalf("token %q:\nfast:    %+v %v %p\ngeneral: %+v %v %p", token, c1, nbf1, k1, c2, nbf2, k2)
	}
	return true
}

func canonicalTable(t testing.TB, rs ...testRegion) *keyTable {
	t.Helper()
	return newTestVerifier(t, nil, rs...).keys.Load()
}

func TestCanonicalPathMatchesGeneral(t *testing.T) {
	eu := newTestRegion(t, "eu-west", 1)
	us := newTestRegion(t, "us-east", 1)
	eu9 := newTestRegion(t, "eu-west", 9) // not in the table
	table := canonicalTable(t, eu, us)
	sign := ed25519Signer(eu.key)
	c := testClaims("eu-west", "sid-1")
	withAMR := c
	withAMR.AMR = []string{"pwd", "otp"}
	issued := issue(t, eu, c)
	parts := strings.Split(issued, ".")
	payload := func(m map[string]any) map[string]any {
		p := wirePayload(c)
		for k, v := range m {
			if v == nil {
				delete(p, k)
			} else {
				p[k] = v
			}
		}
		return p
	}
	raw := func(header, body string) string { // a hand-written payload, signed
		in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(body))
		return in + "." + b64.EncodeToString(sign([]byte(in)))
	}
	hdr := `{"alg":"EdDSA","kid":"eu-west-1","typ":"dom-session+jwt"}`
	fast := map[string]string{
		"issued":             issued,
		"issued with amr":    issue(t, eu, withAMR),
		"other region":       issue(t, us, testClaims("us-east", "s")),
		"unknown kid":        issue(t, eu9, testClaims("eu-west", "s")),
		"map payload":        handToken(t, sessionHeader("eu-west-1"), wirePayload(c), sign),
		"nbf":                handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"nbf": c.IssuedAt.Unix() + 5}), sign),
		"nbf negative":       handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"nbf": -5}), sign),
		"empty amr":          raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"amr":[]}`),
		"amr too many":       handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"amr": strings.Split("a b c d e f g h i", " ")}), sign),
		"amr empty value":    handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"amr": []string{""}}), sign),
		"wrong home":         handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"home": "us-east"}), sign),
		"no sub":             handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"sub": nil}), sign),
		"exp huge":           handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"exp": int64(1) << 40}), sign),
		"iat after exp":      handToken(t, sessionHeader("eu-west-1"), payload(map[string]any{"iat": c.Expiry.Unix() + 1}), sign),
		"other key signs":    handToken(t, sessionHeader("eu-west-1"), wirePayload(c), ed25519Signer(us.key)),
		"short signature":    parts[0] + "." + parts[1] + "." + parts[2][:20],
		"no signature":       parts[0] + "." + parts[1] + ".",
		"signature newline":  parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:],
		"empty payload":      raw(hdr, ``),
		"payload not json":   raw(hdr, `{"sub":`),
		"payload array":      raw(hdr, `[1]`),
		"escaped string":     raw(hdr, `{"sub":"a\u0041","home":"eu-west","sid":"s","iat":1,"exp":1700003600}`),
		"whitespace":         raw(hdr, `{"sub": "x","home":"eu-west","sid":"s","iat":1,"exp":1700003600}`),
		"duplicate member":   raw(hdr, `{"sub":"x","sub":"y","home":"eu-west","sid":"s","iat":1,"exp":1700003600}`),
		"upper-case member":  raw(hdr, `{"SUB":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600}`),
		"unknown member":     raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"x":1}`),
		"float exp":          raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600.0}`),
		"exponent exp":       raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":17e8}`),
		"leading zero":       raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":01,"exp":1700003600}`),
		"minus zero":         raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":-0,"exp":1700003600}`),
		"string exp":         raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":"1700003600"}`),
		"null nbf":           raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"nbf":null}`),
		"trailing comma":     raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,}`),
		"trailing data":      raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600}x`),
		"amr not array":      raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"amr":"pwd"}`),
		"amr trailing comma": raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"amr":["a",]}`),
		"amr unterminated":   raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"amr":["a"`),
		"non-ascii":          raw(hdr, `{"sub":"é","home":"eu-west","sid":"s","iat":1,"exp":1700003600}`),
		"invalid utf-8":      raw(hdr, "{\"sub\":\"\xff\",\"home\":\"eu-west\",\"sid\":\"s\",\"iat\":1,\"exp\":1700003600}"),
		"19 digits":          raw(hdr, `{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1000000000000000000}`),
	}
	general := map[string]string{
		"padded header":       b64.EncodeToString([]byte(hdr)) + "=." + parts[1] + "." + parts[2],
		"header newline":      parts[0][:5] + "\n" + parts[0][5:] + "." + parts[1] + "." + parts[2],
		"payload newline":     parts[0] + "." + parts[1][:5] + "\r\n" + parts[1][5:] + "." + parts[2],
		"upper-case typ":      handToken(t, map[string]any{"alg": "EdDSA", "kid": "eu-west-1", "typ": strings.ToUpper(TokenType)}, wirePayload(c), sign),
		"extra header":        handToken(t, map[string]any{"alg": "EdDSA", "kid": "eu-west-1", "typ": TokenType, "x": 1}, wirePayload(c), sign),
		"crit":                handToken(t, map[string]any{"alg": "EdDSA", "crit": []string{"exp"}, "kid": "eu-west-1", "typ": TokenType}, wirePayload(c), sign),
		"kid escaped":         raw(`{"alg":"EdDSA","kid":"eu-west\u002d1","typ":"dom-session+jwt"}`, `{}`),
		"kid upper-case":      raw(`{"alg":"EdDSA","kid":"EU-WEST-1","typ":"dom-session+jwt"}`, `{}`),
		"empty kid":           raw(`{"alg":"EdDSA","kid":"","typ":"dom-session+jwt"}`, `{}`),
		"two parts":           parts[0] + "." + parts[1],
		"four parts":          issued + ".x",
		"bad payload base64":  parts[0] + ".!!!." + parts[2],
		"non-canonical bits":  parts[0] + "." + parts[1][:len(parts[1])-1] + nonCanonical(parts[1]) + "." + parts[2],
		"header whitespace":   raw(`{"alg":"EdDSA", "kid":"eu-west-1","typ":"dom-session+jwt"}`, `{}`),
		"header other order":  raw(`{"kid":"eu-west-1","alg":"EdDSA","typ":"dom-session+jwt"}`, `{}`),
		"bad signature chars": parts[0] + "." + parts[1] + ".***",
		"signature padded":    issued + "==",
	}
	for name, tok := range fast {
		t.Run(name, func(t *testing.T) {
			if !sameResult(t, table, tok) {
				t.Fatal("not taken by the canonical path")
			}
		})
	}
	for name, tok := range general {
		t.Run(name, func(t *testing.T) {
			if sameResult(t, table, tok) {
				t.Fatal("taken by the canonical path")
			}
		})
	}
	// And Verify itself agrees on the issued tokens.
	v := newTestVerifier(t, []VerifierOption{WithCacheSize(0)}, eu, us)
	got, err := v.Verify(issue(t, eu, withAMR), testNow)
	if err != nil || !reflect.DeepEqual(got.AMR, withAMR.AMR) || got.Home != "eu-west" {
		t.Fatalf("Verify: %+v, %v", got, err)
	}
}

// nonCanonical returns the last character of the base64url text s with
// its unused low bits set, which a non-strict decoder reads as s's last
// character ("" if s has no unused bits).
func nonCanonical(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	unused := map[int]int{2: 4, 3: 2}[len(s)%4]
	if unused == 0 {
		return s[len(s)-1:]
	}
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return string(alphabet[i|(1<<unused-1)])
}

func TestParseCanonicalMatchesJSON(t *testing.T) {
	for _, p := range []string{
		`{}`, `{"sub":"a"}`, `{"amr":[]}`, `{"amr":["a","b"]}`, `{"amr":null}`, `{"nbf":0}`, `{"iat":-12}`,
		`{"sub":"a","home":"eu-west","sid":"s","iat":1,"exp":2,"nbf":3,"amr":["x"]}`,
		`{"exp":2,"sid":"s","sub":"a","home":"h","iat":1}`,
	} {
		var fast, std wireClaims
		ok := fast.parseCanonical([]byte(p), "eu-west")
		if err := json.Unmarshal([]byte(p), &std); err != nil {
			t.Fatal(err)
		}
		if ok && !reflect.DeepEqual(fast, std) {
			t.Errorf("%s: parseCanonical %+v, json.Unmarshal %+v", p, fast, std)
		}
	}
}

// FuzzCanonicalPayload signs arbitrary payloads under the canonical header
// and compares both paths.
func FuzzCanonicalPayload(f *testing.F) {
	eu := newTestRegion(f, "eu-west", 1)
	table := canonicalTable(f, eu)
	for _, p := range []string{
		`{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600}`,
		`{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"amr":["pwd","otp"]}`,
		`{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"nbf":5}`,
		`{"exp":1700003600,"home":"eu-west","iat":1700000000,"sid":"s","sub":"x"}`,
		`{"sub":"x","home":"eu-west","sid":"s","iat":-0,"exp":99999999999999999}`,
		`{"sub":"x","home":"eu-west","sid":"s","iat":1,"exp":1700003600,"amr":[]}`,
	} {
		f.Add([]byte(p))
	}
	in := b64.EncodeToString([]byte(`{"alg":"EdDSA","kid":"eu-west-1","typ":"dom-session+jwt"}`)) + "."
	f.Fuzz(func(t *testing.T, payload []byte) {
		input := in + b64.EncodeToString(payload)
		tok := input + "." + b64.EncodeToString(ed25519.Sign(eu.key.Key, []byte(input)))
		if len(tok) > maxTokenLen {
			return
		}
		sameResult(t, table, tok)
		var fast, std wireClaims
		if fast.parseCanonical(payload, "eu-west") {
			if err := json.Unmarshal(payload, &std); err != nil || !reflect.DeepEqual(fast, std) {
				t.Fatalf("%q: parseCanonical %+v, json.Unmarshal %+v, %v", payload, fast, std, err)
			}
		}
	})
}

// FuzzCanonicalToken compares both paths on arbitrary token text.
func FuzzCanonicalToken(f *testing.F) {
	eu := newTestRegion(f, "eu-west", 1)
	table := canonicalTable(f, eu)
	tok, err := eu.issuer.Issue(Claims{Subject: "eu-west.u1", Home: "eu-west", SessionID: "s", Expiry: time.Now().Add(time.Hour), AMR: []string{"pwd"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add(tok + "=")
	f.Add(strings.Replace(tok, ".", ".\n", 1))
	f.Fuzz(func(t *testing.T, token string) {
		if len(token) > maxTokenLen {
			return
		}
		sameResult(t, table, token)
	})
}

// BenchmarkVerifyColdAMR is BenchmarkVerifyCold with an "amr" claim, as
// the regions issue sessions.
func BenchmarkVerifyColdAMR(b *testing.B) {
	eu := newTestRegion(b, "eu-west", 1)
	v := newTestVerifier(b, []VerifierOption{WithCacheSize(0)}, eu)
	c := testClaims("eu-west", "s")
	c.AMR = []string{"pwd", "otp", "mfa"}
	benchVerify(b, v, []string{issue(b, eu, c)})
}

// TestParseCanonicalKnowsEveryClaim: parseCanonical reads exactly the
// members of wireClaims (a member it did not know would only send tokens
// to the general path; one it knew that wireClaims no longer has would
// make the paths disagree).
func TestParseCanonicalKnowsEveryClaim(t *testing.T) {
	var tags []string
	rt := reflect.TypeFor[wireClaims]()
	for i := range rt.NumField() {
		tags = append(tags, strings.Split(rt.Field(i).Tag.Get("json"), ",")[0])
	}
	slices.Sort(tags)
	known := []string{"amr", "exp", "home", "iat", "nbf", "sid", "sub"}
	if !slices.Equal(tags, known) {
		t.Fatalf("wireClaims members %v, parseCanonical reads %v: update parseCanonical", tags, known)
	}
	for _, name := range known {
		for _, v := range []string{`"x"`, `7`, `["x"]`} {
			p := `{"` + name + `":` + v + `}`
			var fast, std wireClaims
			if fast.parseCanonical([]byte(p), "") {
				if err := json.Unmarshal([]byte(p), &std); err != nil || !reflect.DeepEqual(fast, std) {
					t.Errorf("%s: parseCanonical %+v, json.Unmarshal %+v (%v)", p, fast, std, err)
				}
			}
		}
	}
}
