package router

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/residency"
	"github.com/domicile/domicile/session"
)

const testIssuer = "https://id.example.com"

// oidcRegion is a fake region node: it publishes session and OIDC keys
// and answers every other request with its name, counting them.
type oidcRegion struct {
	name     string
	srv      *httptest.Server
	sessions *session.Issuer
	oidcKeys atomic.Pointer[string] // body of /internal/oidc-keys; nil: 503
	fetches  atomic.Int64           // reads of /internal/oidc-keys
}

type oidcFixture struct {
	rt      *Router
	idx     *mapIndex
	hasher  *homeindex.Hasher
	regions map[string]*oidcRegion
	revoked sync.Map
	mu      sync.Mutex
	hits    map[string]map[string]int // region → path → requests
	logs    testenv.LogBuffer
}

// newOIDCFixture starts three fake regions and a router with an issuer,
// local region ap-southeast, and a revocation set the test controls. index,
// if not nil, replaces the in-memory index (and its revocations).
func newOIDCFixture(t *testing.T, index IndexReader) *oidcFixture {
	t.Helper()
	pol, err := residency.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	geo := testGeoIP(t)
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	f := &oidcFixture{idx: &mapIndex{m: map[homeindex.Key]homeindex.Entry{}}, hasher: h, regions: map[string]*oidcRegion{},
		hits: map[string]map[string]int{}}
	urls := map[string][]string{}
	for i, name := range pol.Regions() {
		r := &oidcRegion{name: name}
		sk, err := session.GenerateSigningKey(name, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.sessions, err = session.NewIssuer(name, sk); err != nil {
			t.Fatal(err)
		}
		sessJWKS, err := session.MarshalJWKS([]session.PublicKey{r.sessions.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		// eu-west and us-east sign with Ed25519, ap-southeast with P-256.
		var pub any
		if i%2 == 0 {
			pub, _, _ = ed25519.GenerateKey(rand.Reader)
		} else {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			pub = &k.PublicKey
		}
		r.publish(t, jose.JSONWebKey{Key: pub, KeyID: name + "-1", Use: "sig"})
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			body, _ := io.ReadAll(req.Body)
			switch req.URL.Path {
			case "/healthz":
				return
			case KeysPath:
				w.Write(sessJWKS)
				return
			case OIDCKeysPath:
				r.fetches.Add(1)
				if b := r.oidcKeys.Load(); b != nil {
					io.WriteString(w, *b)
				} else {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
				return
			}
			f.mu.Lock()
			if f.hits[name] == nil {
				f.hits[name] = map[string]int{}
			}
			f.hits[name][req.URL.Path]++
			f.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"region": name, "path": req.URL.Path, "body": string(body)})
		}))
		t.Cleanup(r.srv.Close)
		f.regions[name] = r
		urls[name] = []string{r.srv.URL}
	}
	cfg := Config{
		Name: "r1", Policy: pol, GeoIP: geo, Regions: urls, Index: f.idx, Hasher: h,
		Logger: debugLogger(&f.logs), RouteKey: testRouteKey,
		Health:      HealthConfig{Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond},
		Issuer:      testIssuer,
		Revoked:     func(sid string) bool { _, ok := f.revoked.Load(sid); return ok },
		RateLimits:  RateLimits{PerIP: Limit{Rate: -1}, PerIdentifier: Limit{Rate: -1}},
		LocalRegion: "ap-southeast",
	}
	if index != nil {
		cfg.Index, cfg.Revoked = index, nil
	}
	f.rt, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.rt.keysEvery = 50 * time.Millisecond
	f.rt.startLoops()
	t.Cleanup(func() { f.rt.Shutdown(context.Background()) })
	testenv.WaitFor(t, 5*time.Second, "every region's keys", func() bool {
		return len(f.rt.keys.Keys()) == 3 && len(f.rt.oidc.keyIDs()) == 3
	})
	return f
}

// publish sets the JWKS the region serves at /internal/oidc-keys.
func (r *oidcRegion) publish(t *testing.T, keys ...jose.JSONWebKey) {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	r.oidcKeys.Store(&s)
}

// waitFetches waits until the region's OIDC keys were read n more times.
func (r *oidcRegion) waitFetches(t *testing.T, n int64) {
	t.Helper()
	want := r.fetches.Load() + n
	testenv.WaitFor(t, 5*time.Second, "key fetches", func() bool { return r.fetches.Load() >= want })
}

func (f *oidcFixture) hitsOf(region string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, k := range f.hits[region] {
		n += k
	}
	return n
}

func (f *oidcFixture) totalHits() int {
	n := 0
	for name := range f.regions {
		n += f.hitsOf(name)
	}
	return n
}

// send runs a request through the router from remote (default
// 198.51.100.7, a us-east client) with the given headers.
func (f *oidcFixture) send(method, uri, body, remote string, headers map[string]string) *reply {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.Header.SetHost("id.example.com")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.SetBodyString(body)
		req.Header.SetContentLength(len(body))
	}
	if remote == "" {
		remote = "198.51.100.7:1"
	}
	return serve(f.rt, &req, remote)
}

func (f *oidcFixture) form(uri, body string) *reply {
	return f.send(http.MethodPost, uri, body, "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

// region is the region that answered r ("" if the router did).
func region(t *testing.T, r *reply) string {
	t.Helper()
	var v struct{ Region string }
	if r.Code != http.StatusOK || json.Unmarshal([]byte(r.Body.String()), &v) != nil {
		return ""
	}
	return v.Region
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// accessToken is a JWT as the regions issue them (the signature is not
// checked by the router, only by the region).
func accessToken(kid, sub string) string {
	return b64(`{"alg":"EdDSA","kid":"`+kid+`","typ":"at+jwt"}`) + "." +
		b64(`{"iss":"`+testIssuer+`","sub":"`+sub+`","aud":"app","exp":4102444800,"iat":1700000000,"jti":"j"}`) + "." +
		b64(strings.Repeat("s", 64))
}

func TestDiscovery(t *testing.T) {
	f := newOIDCFixture(t, nil)
	r := f.send(http.MethodGet, pathDiscovery, "", "", nil)
	if r.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", r.Code, r.Body)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(r.Body.String()), &d); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"issuer":                                         testIssuer,
		"authorization_endpoint":                         testIssuer + "/oauth2/authorize",
		"token_endpoint":                                 testIssuer + "/oauth2/token",
		"introspection_endpoint":                         testIssuer + "/oauth2/introspect",
		"revocation_endpoint":                            testIssuer + "/oauth2/revoke",
		"userinfo_endpoint":                              testIssuer + "/userinfo",
		"end_session_endpoint":                           testIssuer + "/oauth2/logout",
		"jwks_uri":                                       testIssuer + "/oauth2/keys",
		"response_types_supported":                       []any{"code"},
		"grant_types_supported":                          []any{"authorization_code", "refresh_token", "client_credentials"},
		"code_challenge_methods_supported":               []any{"S256"},
		"authorization_response_iss_parameter_supported": true,
		"id_token_signing_alg_values_supported":          []any{"ES256", "EdDSA"}, // from the regions' keys
		"token_endpoint_auth_methods_supported":          []any{"client_secret_basic", "client_secret_post", "none"},
		"backchannel_logout_supported":                   true,
		"subject_types_supported":                        []any{"public"},
		"request_uri_parameter_supported":                false,
	}
	for k, v := range want {
		if got, _ := json.Marshal(d[k]); string(got) != mustJSON(v) {
			t.Errorf("%s = %s, want %s", k, got, mustJSON(v))
		}
	}
	for _, k := range []string{"scopes_supported", "claims_supported"} {
		if l, _ := d[k].([]any); !slices.Contains(l, any("openid")) && !slices.Contains(l, any("sub")) {
			t.Errorf("%s = %v", k, d[k])
		}
	}
	if cc := r.Header().Get("Cache-Control"); !strings.Contains(cc, "max-age=") || !strings.Contains(cc, "public") {
		t.Errorf("Cache-Control %q", cc)
	}
	if r.Header().Get("Access-Control-Allow-Origin") != "*" || !strings.HasPrefix(r.Header().Get("Content-Type"), "application/json") {
		t.Errorf("headers %v", r.Header())
	}
	etag := r.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if r := f.send(http.MethodGet, pathDiscovery, "", "", map[string]string{"If-None-Match": etag}); r.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: HTTP %d", r.Code)
	}
	if n := f.totalHits(); n != 0 {
		t.Errorf("discovery reached a region %d times", n)
	}

	// Without an issuer, the router serves no OIDC documents.
	plain := newFixture(t)
	for _, p := range []string{pathDiscovery, pathJWKS} {
		if r := plain.do(http.MethodGet, p, "", "198.51.100.7:1", ""); r.Code != http.StatusNotFound {
			t.Errorf("%s without issuer: HTTP %d", p, r.Code)
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestConfigErrorsNameTheField(t *testing.T) {
	pol, _ := residency.Parse([]byte(testPolicy))
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	regions := map[string][]string{"eu-west": {"http://a"}, "us-east": {"http://b"}, "ap-southeast": {"http://c"}}
	for _, tc := range []struct{ issuer, local, want string }{
		{"id.example.com", "", "issuer"},
		{"ftp://id.example.com", "", "issuer"},
		{"https://id.example.com/", "", "issuer"},
		{"https://id.example.com/tenant", "", "issuer"},
		{"https://id.example.com?x=1", "", "issuer"},
		{"https://", "", "issuer"},
		{testIssuer, "mars", "local_region"},
	} {
		_, err := New(Config{Name: "r", Policy: pol, Regions: regions, Index: &mapIndex{}, Hasher: h, RouteKey: testRouteKey,
			Issuer: tc.issuer, LocalRegion: tc.local})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("issuer %q local %q: err = %v, want one naming %s", tc.issuer, tc.local, err, tc.want)
		}
	}
	if _, err := New(Config{Name: "r", Policy: pol, Regions: regions, Index: &mapIndex{}, Hasher: h, RouteKey: testRouteKey,
		Issuer: "http://127.0.0.1:8080", LocalRegion: "eu-west"}); err != nil {
		t.Errorf("dev issuer: %v", err)
	}
}

// jwksKIDs fetches /oauth2/keys and returns its kids, checking that every
// key is public.
func jwksKIDs(t *testing.T, f *oidcFixture) []string {
	t.Helper()
	r := f.send(http.MethodGet, pathJWKS, "", "", nil)
	if r.Code != http.StatusOK || !strings.Contains(r.Header().Get("Cache-Control"), "max-age=") {
		t.Fatalf("HTTP %d %v: %s", r.Code, r.Header(), r.Body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(r.Body.String()), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Use != "sig" || (k.Algorithm != "EdDSA" && k.Algorithm != "ES256") {
			t.Errorf("key %s: public %v use %q alg %q", k.KeyID, k.IsPublic(), k.Use, k.Algorithm)
		}
		kids = append(kids, k.KeyID)
	}
	return kids
}

func TestUnionJWKS(t *testing.T) {
	f := newOIDCFixture(t, nil)
	if got := jwksKIDs(t, f); fmt.Sprint(got) != "[ap-southeast-1 eu-west-1 us-east-1]" {
		t.Fatalf("union JWKS kids %v", got)
	}
	us := f.regions["us-east"]
	eu := f.regions["eu-west"]
	pub := func() any { p, _, _ := ed25519.GenerateKey(rand.Reader); return p }

	// Rotation with overlap: the next key is published beside the old one,
	// then the old one is withdrawn.
	us.publish(t, jose.JSONWebKey{Key: pub(), KeyID: "us-east-1"}, jose.JSONWebKey{Key: pub(), KeyID: "us-east-2"})
	testenv.WaitFor(t, 5*time.Second, "us-east-2 published", func() bool { return slices.Contains(jwksKIDs(t, f), "us-east-2") })
	us.publish(t, jose.JSONWebKey{Key: pub(), KeyID: "us-east-2"})
	testenv.WaitFor(t, 5*time.Second, "us-east-1 withdrawn", func() bool { return !slices.Contains(jwksKIDs(t, f), "us-east-1") })

	// A region cannot publish a key under another region's kid: its whole
	// set is refused and its last good keys stay.
	us.publish(t, jose.JSONWebKey{Key: pub(), KeyID: "us-east-3"}, jose.JSONWebKey{Key: pub(), KeyID: "eu-west-7"})
	us.waitFetches(t, 3)
	if got := jwksKIDs(t, f); fmt.Sprint(got) != "[ap-southeast-1 eu-west-1 us-east-2]" {
		t.Fatalf("after a foreign kid: %v", got)
	}
	// Nor a private key, an RSA key, or a kid that is not <region>-<n>.
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, body := range map[string]string{
		"private": mustJSONKeys(t, jose.JSONWebKey{Key: priv, KeyID: "us-east-4"}),
		"rsa":     `{"keys":[{"kty":"RSA","kid":"us-east-4","n":"sXch","e":"AQAB"}]}`,
		"bad kid": mustJSONKeys(t, jose.JSONWebKey{Key: pub(), KeyID: "us-east"}),
		"alg":     mustJSONKeys(t, jose.JSONWebKey{Key: pub(), KeyID: "us-east-4", Algorithm: "ES256"}),
		"no keys": `{}`,
		"garbage": `<html>`,
	} {
		us.oidcKeys.Store(&body)
		us.waitFetches(t, 2)
		if got := jwksKIDs(t, f); fmt.Sprint(got) != "[ap-southeast-1 eu-west-1 us-east-2]" {
			t.Fatalf("after %s: %v", name, got)
		}
	}
	if !strings.Contains(f.logs.String(), "names region") {
		t.Error("the foreign kid was not logged")
	}

	// A region that is down keeps its last keys.
	eu.oidcKeys.Store(nil) // 503
	eu.waitFetches(t, 2)
	eu.srv.Close()
	testenv.WaitFor(t, 5*time.Second, "eu-west ejected", func() bool { return f.rt.pools["eu-west"].healthyCount() == 0 })
	time.Sleep(200 * time.Millisecond)
	if got := jwksKIDs(t, f); fmt.Sprint(got) != "[ap-southeast-1 eu-west-1 us-east-2]" {
		t.Fatalf("with eu-west down: %v", got)
	}
	if n := f.totalHits(); n != 0 {
		t.Errorf("the JWKS reached a region %d times", n)
	}
}

func mustJSONKeys(t *testing.T, keys ...jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSessionKeysUnion(t *testing.T) {
	f := newOIDCFixture(t, nil)
	r := f.send(http.MethodGet, pathSessionKeys, "", "", nil)
	if r.Code != http.StatusOK || r.Header().Get("Cache-Control") == "" {
		t.Fatalf("HTTP %d %v: %s", r.Code, r.Header(), r.Body)
	}
	keys, err := session.ParseJWKS([]byte(r.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range keys {
		kids = append(kids, k.KID)
		if !k.Key.Equal(f.regions[k.Region].sessions.PublicKey().Key) {
			t.Errorf("%s: not the region's key", k.KID)
		}
	}
	if fmt.Sprint(kids) != "[ap-southeast-1 eu-west-1 us-east-1]" {
		t.Fatalf("session keys %v", kids)
	}
}

// TestOAuthRouting: each OAuth endpoint goes to the region its token names.
func TestOAuthRouting(t *testing.T) {
	f := newOIDCFixture(t, nil)
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	tests := []struct {
		name, method, uri, body string
		headers                 map[string]string
		remote, want, source    string
	}{
		{"code", "POST", pathToken, "grant_type=authorization_code&code=eu-west.AAAA&redirect_uri=https%3A%2F%2Fapp&code_verifier=v", form, "", "eu-west", srcToken},
		{"code of another region", "POST", pathToken, "code=us-east.BBBB&grant_type=authorization_code", form, "", "us-east", srcToken},
		{"refresh token", "POST", pathToken, "grant_type=refresh_token&refresh_token=ap-southeast.CCCC", form, "", "ap-southeast", srcToken},
		{"client credentials: local region", "POST", pathToken, "grant_type=client_credentials&scope=api", form, "192.0.2.1:1", "ap-southeast", srcLocal},
		{"content type with charset", "POST", pathToken, "grant_type=authorization_code&code=eu-west.AAAA",
			map[string]string{"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}, "", "eu-west", srcToken},
		{"introspect opaque", "POST", pathIntrospect, "token=us-east.DDDD&token_type_hint=refresh_token", form, "", "us-east", srcToken},
		{"introspect JWT by kid", "POST", pathIntrospect, "token=" + accessToken("eu-west-3", "us-east.u1"), form, "", "eu-west", srcToken},
		{"revoke opaque", "POST", pathRevoke, "token=ap-southeast.EEEE", form, "", "ap-southeast", srcToken},
		{"revoke JWT by kid", "POST", pathRevoke, "token=" + accessToken("us-east-1", "eu-west.u1"), form, "", "us-east", srcToken},
		{"userinfo bearer: by sub", "GET", pathUserinfo, "", map[string]string{"Authorization": "Bearer " + accessToken("ap-southeast-1", "eu-west.u1")}, "", "eu-west", srcToken},
		{"userinfo bearer lower-case", "GET", pathUserinfo, "", map[string]string{"Authorization": "bearer " + accessToken("eu-west-1", "us-east.u1")}, "", "us-east", srcToken},
		{"userinfo form", "POST", pathUserinfo, "access_token=" + accessToken("eu-west-1", "ap-southeast.u1"), form, "", "ap-southeast", srcToken},
		{"userinfo query", "GET", pathUserinfo + "?access_token=" + accessToken("eu-west-1", "us-east.u9"), "", nil, "", "us-east", srcToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counterValue(f.rt.resolutions.WithLabelValues(tt.source, tt.want, f.rt.routeOf([]byte(strings.SplitN(tt.uri, "?", 2)[0])).label))
			r := f.send(tt.method, tt.uri, tt.body, tt.remote, tt.headers)
			if got := region(t, r); got != tt.want {
				t.Fatalf("went to %q (HTTP %d %s), want %s", got, r.Code, r.Body, tt.want)
			}
			if tt.body != "" && !strings.Contains(r.Body.String(), mustJSON(tt.body)[1:len(mustJSON(tt.body))-1]) {
				t.Errorf("body not forwarded intact: %s", r.Body)
			}
			after := counterValue(f.rt.resolutions.WithLabelValues(tt.source, tt.want, f.rt.routeOf([]byte(strings.SplitN(tt.uri, "?", 2)[0])).label))
			if after != before+1 {
				t.Errorf("resolution metric source=%s: %v → %v", tt.source, before, after)
			}
		})
	}
	for _, leak := range []string{"AAAA", "u1", "eu-west.", "Bearer"} {
		if strings.Contains(f.logs.String(), leak) {
			t.Errorf("router logs contain %q:\n%s", leak, f.logs.String())
		}
	}
}

// TestOAuthMalformed: what the router cannot route is refused with an
// OAuth error, never a 5xx, and reaches no region.
func TestOAuthMalformed(t *testing.T) {
	f := newOIDCFixture(t, nil)
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	badHeader := b64(`{"alg":"EdDSA","kid":`) + "." + b64(`{}`) + ".x"
	type tc struct {
		name, method, uri, body string
		headers                 map[string]string
		status                  int
		code                    string
	}
	tests := []tc{
		{"no grant_type", "POST", pathToken, "code=eu-west.AAAA", form, 400, "invalid_request"},
		{"unknown grant", "POST", pathToken, "grant_type=password&username=a&password=b", form, 400, "unsupported_grant_type"},
		{"no code", "POST", pathToken, "grant_type=authorization_code", form, 400, "invalid_request"},
		{"empty code", "POST", pathToken, "grant_type=authorization_code&code=", form, 400, "invalid_request"},
		{"code without prefix", "POST", pathToken, "grant_type=authorization_code&code=AAAA", form, 400, "invalid_request"},
		{"code empty prefix", "POST", pathToken, "grant_type=authorization_code&code=.AAAA", form, 400, "invalid_request"},
		{"code empty rest", "POST", pathToken, "grant_type=authorization_code&code=eu-west.", form, 400, "invalid_request"},
		{"code of an unknown region", "POST", pathToken, "grant_type=authorization_code&code=mars.AAAA", form, 400, "invalid_grant"},
		{"refresh of an unknown region", "POST", pathToken, "grant_type=refresh_token&refresh_token=EU-WEST.AAAA", form, 400, "invalid_grant"},
		{"code repeated", "POST", pathToken, "grant_type=authorization_code&code=eu-west.A&code=us-east.B", form, 400, "invalid_request"},
		{"grant repeated", "POST", pathToken, "grant_type=authorization_code&grant_type=client_credentials&code=eu-west.A", form, 400, "invalid_request"},
		{"code in the query", "POST", pathToken + "?code=us-east.B", "grant_type=authorization_code&code=eu-west.A", form, 400, "invalid_request"},
		{"JSON body", "POST", pathToken, `{"grant_type":"client_credentials"}`, map[string]string{"Content-Type": "application/json"}, 400, "invalid_request"},
		{"no body", "POST", pathToken, "", form, 400, "invalid_request"},
		{"GET token", "GET", pathToken + "?grant_type=client_credentials", "", nil, 400, "invalid_request"},
		{"bad percent-encoding", "POST", pathToken, "grant_type=authorization_code&code=eu-west.%zz", form, 400, "invalid_request"},
		{"body too large", "POST", pathToken, "grant_type=client_credentials&x=" + strings.Repeat("a", 17<<10), form, 413, "invalid_request"},
		{"introspect no token", "POST", pathIntrospect, "token_type_hint=access_token", form, 400, "invalid_request"},
		{"introspect garbage", "POST", pathIntrospect, "token=garbage", form, 400, "invalid_request"},
		{"introspect unknown region", "POST", pathIntrospect, "token=mars.AAAA", form, 400, "invalid_token"},
		{"introspect JWT unknown kid region", "POST", pathIntrospect, "token=" + accessToken("mars-1", "eu-west.u"), form, 400, "invalid_token"},
		{"introspect JWT bad kid", "POST", pathIntrospect, "token=" + accessToken("nope", "eu-west.u"), form, 400, "invalid_request"},
		{"introspect JWT bad header", "POST", pathIntrospect, "token=" + badHeader, form, 400, "invalid_request"},
		{"introspect token twice", "POST", pathIntrospect, "token=eu-west.A&token=us-east.B", form, 400, "invalid_request"},
		{"introspect token in query", "POST", pathIntrospect + "?token=us-east.B", "token=eu-west.A", form, 400, "invalid_request"},
		{"revoke GET", "GET", pathRevoke + "?token=eu-west.A", "", nil, 400, "invalid_request"},
		{"userinfo no token", "GET", pathUserinfo, "", nil, 401, "invalid_request"},
		{"userinfo basic auth", "GET", pathUserinfo, "", map[string]string{"Authorization": "Basic YTpi"}, 401, "invalid_request"},
		{"userinfo opaque", "GET", pathUserinfo, "", bearer("eu-west.AAAA"), 401, "invalid_token"},
		{"userinfo garbage", "GET", pathUserinfo, "", bearer("%%%"), 401, "invalid_token"},
		{"userinfo client-credentials token", "GET", pathUserinfo, "", bearer(accessToken("eu-west-1", "client-1")), 401, "invalid_token"},
		{"userinfo unknown region", "GET", pathUserinfo, "", bearer(accessToken("eu-west-1", "mars.u1")), 401, "invalid_token"},
		{"userinfo sub not a string", "GET", pathUserinfo, "", bearer(b64(`{"alg":"EdDSA"}`) + "." + b64(`{"sub":7}`) + ".x"), 401, "invalid_token"},
		{"userinfo header and query", "GET", pathUserinfo + "?access_token=" + accessToken("eu-west-1", "eu-west.u"), "", bearer(accessToken("eu-west-1", "us-east.u")), 400, "invalid_request"},
		{"userinfo DELETE", "DELETE", pathUserinfo, "", bearer(accessToken("eu-west-1", "eu-west.u")), 400, "invalid_request"},
	}
	for name, tok := range forgedTokens() {
		tests = append(tests,
			tc{"forged code " + name, "POST", pathToken, "grant_type=authorization_code&code=" + urlEncode(tok), form, 0, ""},
			tc{"forged introspect " + name, "POST", pathIntrospect, "token=" + urlEncode(tok), form, 0, ""})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.send(tt.method, tt.uri, tt.body, "", tt.headers)
			if r.Code >= 500 || r.Code < 400 || (tt.status != 0 && r.Code != tt.status) {
				t.Fatalf("HTTP %d, want %d: %s", r.Code, tt.status, r.Body)
			}
			var e struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if err := json.Unmarshal([]byte(r.Body.String()), &e); err != nil || e.Error == "" || (tt.code != "" && e.Error != tt.code) {
				t.Fatalf("body %s, want error %q", r.Body, tt.code)
			}
			if ct := r.Header().Get("Content-Type"); ct != "application/json" || r.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v", r.Header())
			}
			if strings.HasPrefix(tt.uri, pathUserinfo) && (r.Code == 400 || r.Code == 401) {
				if wa := r.Header().Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
					t.Errorf("WWW-Authenticate %q", wa)
				}
			}
		})
	}
	if n := f.totalHits(); n != 0 {
		t.Fatalf("malformed OAuth requests reached the regions %d times", n)
	}
	// Forged access tokens whose sub names a region go there (the router
	// routes by the sub; the region verifies the token); the others are
	// refused.
	for name, tok := range forgedTokens() {
		r := f.send("POST", pathUserinfo, "access_token="+urlEncode(tok), "", form)
		if got := region(t, r); got != "ap-southeast" && (r.Code < 400 || r.Code >= 500) {
			t.Errorf("forged userinfo %s: HTTP %d %s", name, r.Code, r.Body)
		}
	}
	for code := 500; code < 600; code++ {
		if c := f.rt.byStatus[code].Load(); c != nil && counterValue(*c) > 0 {
			t.Errorf("%v responses with status %d", counterValue(*c), code)
		}
	}
}

func urlEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// sessionOf issues a session token of region's user.
func (f *oidcFixture) sessionOf(t *testing.T, region, sid string) string {
	t.Helper()
	tok, err := f.regions[region].sessions.Issue(session.Claims{Subject: region + ".u1", Home: region, SessionID: sid,
		Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTravellingUser: a user homed in eu-west uses the ap-southeast router
// for SSO (prompt=none) and token verification: no request reaches
// eu-west for those; a profile read through the same router reaches
// eu-west and no other region.
func TestTravellingUser(t *testing.T) {
	f := newOIDCFixture(t, nil)
	sess := f.sessionOf(t, "eu-west", "sid-travel")
	cookie := map[string]string{"Cookie": SessionCookie + "=" + sess}
	const sg = "203.0.113.9:1" // a client in Singapore
	authz := pathAuthorize + "?response_type=code&client_id=app&redirect_uri=https%3A%2F%2Fapp%2Fcb&scope=openid&state=s&code_challenge=c&code_challenge_method=S256"

	// SSO: answered by the local region from the session alone.
	if got := region(t, f.send("GET", authz+"&prompt=none", "", sg, cookie)); got != "ap-southeast" {
		t.Fatalf("prompt=none with a session went to %q, want the local region", got)
	}
	// The code exchange: by the code's prefix (the local region).
	if got := region(t, f.form(pathToken, "grant_type=authorization_code&code=ap-southeast.AAAA&code_verifier=v&client_id=app")); got != "ap-southeast" {
		t.Fatalf("code exchange went to %q", got)
	}
	// Token verification: discovery and JWKS at the router, introspection
	// of the local region's access token at the local region.
	for _, p := range []string{pathDiscovery, pathJWKS} {
		if r := f.send("GET", p, "", sg, nil); r.Code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", p, r.Code)
		}
	}
	at := accessToken("ap-southeast-1", "eu-west.u1")
	if got := region(t, f.form(pathIntrospect, "token="+at)); got != "ap-southeast" {
		t.Fatalf("introspection went to %q", got)
	}
	if n := f.hitsOf("eu-west"); n != 0 {
		t.Fatalf("SSO and token verification reached eu-west %d times", n)
	}
	// Personal data: home, and only home.
	before := map[string]int{"ap-southeast": f.hitsOf("ap-southeast"), "us-east": f.hitsOf("us-east")}
	if got := region(t, f.send("GET", pathUserinfo, "", sg, map[string]string{"Authorization": "Bearer " + at})); got != "eu-west" {
		t.Fatalf("userinfo went to %q", got)
	}
	if got := region(t, f.send("GET", "/profile", "", sg, cookie)); got != "eu-west" {
		t.Fatalf("profile read went to %q", got)
	}
	if f.hitsOf("eu-west") != 2 || f.hitsOf("ap-southeast") != before["ap-southeast"] || f.hitsOf("us-east") != before["us-east"] {
		t.Fatalf("profile reads: hits %v", f.hits)
	}

	// What is not identity-only SSO keeps today's resolution.
	known, _ := homeindex.NormalizeEmail("ana@example.com")
	f.idx.m[f.hasher.EmailKey(known)] = homeindex.Entry{Region: "eu-west"}
	post := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie["Cookie"]}
	for _, tc := range []struct {
		name, method, uri, body string
		headers                 map[string]string
		want                    string
	}{
		{"interactive login with a session: home", "GET", authz, "", cookie, "eu-west"},
		{"prompt=login: home", "GET", authz + "&prompt=login", "", cookie, "eu-west"},
		{"prompt=none and login: home", "GET", authz + "&prompt=none%20login", "", cookie, "eu-west"},
		{"prompt twice: home", "GET", authz + "&prompt=none&prompt=none", "", cookie, "eu-west"},
		{"prompt=none without a session: as today (nearest)", "GET", authz + "&prompt=none", "", nil, "ap-southeast"},
		{"prompt=none, no session, login_hint: the hint's home", "GET", authz + "&prompt=none&login_hint=ana%40example.com", "", nil, "eu-west"},
		{"prompt=none with a forged session: as today", "GET", authz + "&prompt=none", "", map[string]string{"Cookie": SessionCookie + "=" + forgedTokens()["EdDSA unknown kid"]}, "ap-southeast"},
		{"POST authorize prompt=none with a session: local", "POST", pathAuthorize, "response_type=code&client_id=app&prompt=none", post, "ap-southeast"},
		{"logout: home", "GET", pathLogout, "", cookie, "eu-west"},
		{"logout without a session: id_token_hint's sub", "GET", pathLogout + "?id_token_hint=" + accessToken("ap-southeast-1", "eu-west.u1"), "", nil, "eu-west"},
		{"session of a local user, prompt=none: local", "GET", authz + "&prompt=none", "", map[string]string{"Cookie": SessionCookie + "=" + f.sessionOf(t, "ap-southeast", "sid-local")}, "ap-southeast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := region(t, f.send(tc.method, tc.uri, tc.body, sg, tc.headers)); got != tc.want {
				t.Fatalf("went to %q, want %s", got, tc.want)
			}
		})
	}
	if counterValue(f.rt.resolutions.WithLabelValues(srcLocal, "ap-southeast", pathAuthorize)) != 2 {
		t.Error("the local SSO resolutions are not counted under source local")
	}
	if strings.Contains(f.logs.String(), "ana@") || strings.Contains(f.logs.String(), "sid-travel") {
		t.Errorf("router logs contain identifiers:\n%s", f.logs.String())
	}
}

// TestTravellingWithoutLocalRegion: without local_region, SSO goes home and
// client credentials to the region of the client's address.
func TestTravellingWithoutLocalRegion(t *testing.T) {
	f := newOIDCFixture(t, nil)
	f.rt.cfg.LocalRegion = ""
	cookie := map[string]string{"Cookie": SessionCookie + "=" + f.sessionOf(t, "eu-west", "s")}
	if got := region(t, f.send("GET", pathAuthorize+"?prompt=none&client_id=app", "", "203.0.113.9:1", cookie)); got != "eu-west" {
		t.Fatalf("prompt=none went to %q, want home", got)
	}
	r := f.send("POST", pathToken, "grant_type=client_credentials", "203.0.113.9:1", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if got := region(t, r); got != "ap-southeast" {
		t.Fatalf("client credentials went to %q", got)
	}
}

// TestRevokedSession: a session revoked in the index is rejected from then
// on, also when its token is in the verified-token cache.
func TestRevokedSession(t *testing.T) {
	f := newOIDCFixture(t, nil)
	sess := f.sessionOf(t, "eu-west", "sid-gone")
	cookie := map[string]string{"Cookie": SessionCookie + "=" + sess}
	authz := pathAuthorize + "?prompt=none&client_id=app"
	const us = "198.51.100.7:1" // nearest: us-east
	for range 2 {               // the second time from the cache
		if got := region(t, f.send("GET", "/profile", "", us, cookie)); got != "eu-west" {
			t.Fatalf("live session: profile went to %q", got)
		}
		if got := region(t, f.send("GET", authz, "", us, cookie)); got != "ap-southeast" {
			t.Fatalf("live session: SSO went to %q", got)
		}
	}
	f.revoked.Store("sid-gone", true)
	if got := region(t, f.send("GET", "/profile", "", us, cookie)); got != "us-east" {
		t.Fatalf("revoked session still routes home (%q)", got)
	}
	if got := region(t, f.send("GET", authz, "", us, cookie)); got != "us-east" {
		t.Fatalf("revoked session still gets local SSO (%q)", got)
	}
}

// TestRevokedSessionHomeIndex: the same with the real home index replica:
// the router rejects the session from the commit of the Revoke on.
func TestRevokedSessionHomeIndex(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node, err := homeindex.Open(homeindex.Config{
		ID: "r1", Dir: t.TempDir(), Listener: ln, Bootstrap: true, Token: "t",
		Peers:  []homeindex.Peer{{ID: "r1", RaftAddr: ln.Addr().String(), APIAddr: "http://127.0.0.1:1"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	testenv.WaitFor(t, 10*time.Second, "leader", node.IsLeader)
	f := newOIDCFixture(t, node)
	sess := f.sessionOf(t, "eu-west", "sid-index")
	cookie := map[string]string{"Cookie": SessionCookie + "=" + sess}
	if got := region(t, f.send("GET", "/profile", "", "198.51.100.7:1", cookie)); got != "eu-west" {
		t.Fatalf("live session: profile went to %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := node.Revoke(ctx, "sid-index", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := region(t, f.send("GET", "/profile", "", "198.51.100.7:1", cookie)); got != "us-east" {
		t.Fatalf("after the Revoke commit the session still routes home (%q)", got)
	}
	// Another session of the same user is not affected.
	other := map[string]string{"Cookie": SessionCookie + "=" + f.sessionOf(t, "eu-west", "sid-other")}
	if got := region(t, f.send("GET", "/profile", "", "198.51.100.7:1", other)); got != "eu-west" {
		t.Fatalf("another session: %q", got)
	}
}

// BenchmarkResolveOAuth is the resolution of a code exchange (form body,
// code prefix) and of a userinfo request (JWT sub).
func BenchmarkResolveOAuth(b *testing.B) {
	pol, _ := residency.Parse([]byte(testPolicy))
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	rt, err := New(Config{Name: "b", Policy: pol, Regions: map[string][]string{"eu-west": {"http://a"}, "us-east": {"http://b"}, "ap-southeast": {"http://c"}},
		Index: &mapIndex{m: map[homeindex.Key]homeindex.Entry{}}, Hasher: h, RouteKey: testRouteKey, Issuer: testIssuer, LocalRegion: "ap-southeast"})
	if err != nil {
		b.Fatal(err)
	}
	client := netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct{ name, path, body, auth string }{
		{"token-code", pathToken, "grant_type=authorization_code&code=eu-west.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&redirect_uri=https%3A%2F%2Fapp%2Fcb&code_verifier=vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv&client_id=app", ""},
		{"userinfo", pathUserinfo, "", "Bearer " + accessToken("ap-southeast-1", "eu-west.01J0000000000000000000000")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			var req fasthttp.Request
			if tc.body != "" {
				req.Header.SetMethod("POST")
				req.Header.SetContentType("application/x-www-form-urlencoded")
				req.SetBodyString(tc.body)
				req.Header.SetContentLength(len(tc.body))
			} else {
				req.Header.SetMethod("GET")
				req.Header.Set("Authorization", tc.auth)
			}
			req.SetRequestURI(tc.path)
			ctx.Init(&req, net.TCPAddrFromAddrPort(netip.AddrPortFrom(client, 1)), nil)
			kind := oauthKindOf(ctx.Path())
			b.ReportAllocs()
			for b.Loop() {
				p := rt.parsers.Get()
				id, perr := rt.identify(&ctx, p)
				rt.parsers.Put(p)
				if perr != nil {
					b.Fatal(perr)
				}
				r, oerr := rt.resolveByToken(&ctx, kind, &id, client)
				if oerr != nil || r.source != srcToken {
					b.Fatal(r, oerr)
				}
			}
		})
	}
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
