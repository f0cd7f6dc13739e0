package devcluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// rpRedirect is the demo client's redirect URI: the "app" is not running;
// the browser below stops at the redirect to it.
const rpRedirect = "http://localhost:9000/callback"

// browserClient is a cookie-keeping client that does not follow redirects
// to the demo app.
func browserClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Timeout: 10 * time.Second, Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host == "localhost:9000" {
			return http.ErrUseLastResponse
		}
		if len(via) > 10 {
			return errors.New("too many redirects")
		}
		return nil
	}}
}

// signUpLogIn creates a user through router base and logs client in
// there; it returns the session token.
func signUpLogIn(client *http.Client, base, email string) (string, error) {
	creds := `{"email":"` + email + `","password":"correct horse battery"}`
	var tok string
	for _, step := range []struct {
		path string
		want int
	}{{"/signup", 201}, {"/login", 200}} {
		resp, err := client.Post(base+step.path, "application/json", strings.NewReader(creds))
		if err != nil {
			return "", err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m struct {
			Token string `json:"session_token"`
		}
		json.Unmarshal(raw, &m)
		if resp.StatusCode != step.want || step.path == "/login" && m.Token == "" {
			return "", fmt.Errorf("%s %s: HTTP %d %s", step.path, email, resp.StatusCode, raw)
		}
		tok = m.Token
	}
	return tok, nil
}

// signUpAndLogin is signUpLogIn for the test goroutine.
func signUpAndLogin(t *testing.T, browser *http.Client, base, email string) string {
	t.Helper()
	tok, err := signUpLogIn(browser, base, email)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// authorize runs the authorization request of cfg in the browser and
// returns the redirect to the app.
func authorize(t *testing.T, browser *http.Client, authURL string) *url.URL {
	t.Helper()
	resp, err := browser.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode/100 != 3 || err != nil || !strings.HasPrefix(loc.String(), rpRedirect) {
		t.Fatalf("authorize %s: HTTP %d, location %v: %s", authURL, resp.StatusCode, loc, body)
	}
	return loc
}

// jwtPayload decodes a JWT's payload into v without verifying it.
func jwtPayload(tok string, v any) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("JWT payload: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("JWT payload: %w", err)
	}
	return nil
}

// jwtClaims decodes a JWT's payload without verifying it.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := jwtPayload(tok, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jwtKID(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var h struct {
		KID string `json:"kid"`
	}
	if err != nil || json.Unmarshal(b, &h) != nil {
		t.Fatalf("JWT header: %v", err)
	}
	return h.KID
}

// TestOIDCRelyingParty: an app built with coreos/go-oidc and x/oauth2 logs
// in users of each of the three regions through the routers (one issuer),
// verifies the ID token against the global JWKS, reads userinfo, refreshes
// (the old refresh token is then refused) and logs out (RP-initiated); the
// session is then revoked in the home index, which every router honours.
func TestOIDCRelyingParty(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	issuer := r[0]
	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("discovery at the issuer: %v", err)
	}
	users := map[string]string{"eu-west": "ana@acme.de", "ap-southeast": "bo@example.sg", "us-east": "cy@example.com"}
	for i, home := range []string{"eu-west", "ap-southeast", "us-east"} {
		email := users[home]
		t.Run(home, func(t *testing.T) {
			browser := browserClient()
			signUpAndLogin(t, browser, r[i], email) // any router: the home is found
			cfg := oauth2.Config{ClientID: DemoClient.ID, ClientSecret: DemoClient.Secret, Endpoint: provider.Endpoint(),
				RedirectURL: rpRedirect, Scopes: []string{oidc.ScopeOpenID, "email", oidc.ScopeOfflineAccess}}
			verifier, state, nonce := oauth2.GenerateVerifier(), "st-"+home, "n-"+home
			loc := authorize(t, browser, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
			q := loc.Query()
			if q.Get("state") != state || q.Get("iss") != issuer || !strings.HasPrefix(q.Get("code"), home+".") {
				t.Fatalf("authorization response %s: want state, iss %s and a code of %s", loc, issuer, home)
			}
			tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("code exchange: %v", err)
			}
			rawID, _ := tok.Extra("id_token").(string)
			idt, err := provider.Verifier(&oidc.Config{ClientID: DemoClient.ID}).Verify(ctx, rawID)
			if err != nil {
				t.Fatalf("ID token against the global JWKS: %v", err)
			}
			if idt.Nonce != nonce || !strings.HasPrefix(idt.Subject, home+".") || !strings.HasPrefix(jwtKID(t, rawID), home+"-") {
				t.Fatalf("ID token: nonce %q sub %q kid %q", idt.Nonce, idt.Subject, jwtKID(t, rawID))
			}
			var claims struct {
				Email string `json:"email"`
				SID   string `json:"sid"`
			}
			if err := idt.Claims(&claims); err != nil || claims.Email != email || claims.SID == "" {
				t.Fatalf("ID token claims: %+v %v", claims, err)
			}
			ui, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
			if err != nil || ui.Email != email || ui.Subject != idt.Subject {
				t.Fatalf("userinfo: %+v %v", ui, err)
			}
			// Refresh: a new refresh token; the old one is then refused
			// (and, being a reuse, revokes the family: the new one too).
			old := tok.RefreshToken
			fresh, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
			if err != nil || fresh.RefreshToken == "" || fresh.RefreshToken == old || !strings.HasPrefix(fresh.RefreshToken, home+".") {
				t.Fatalf("refresh: %+v %v", fresh, err)
			}
			// RP-initiated logout.
			var disc struct {
				EndSession string `json:"end_session_endpoint"`
			}
			if err := provider.Claims(&disc); err != nil || disc.EndSession == "" {
				t.Fatalf("discovery: no end_session_endpoint: %v", err)
			}
			logout := disc.EndSession + "?" + url.Values{"id_token_hint": {rawID}, "post_logout_redirect_uri": {"http://localhost:9000/"}, "state": {"bye"}}.Encode()
			resp, err := browser.Get(logout)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if l, _ := resp.Location(); resp.StatusCode/100 != 3 || l == nil || l.Host != "localhost:9000" || l.Query().Get("state") != "bye" {
				t.Fatalf("logout: HTTP %d to %v", resp.StatusCode, l)
			}
			if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: fresh.RefreshToken}).Token(); err == nil {
				t.Fatal("a refresh token of the ended session still works")
			}
			// Every router rejects the session once its replica has the
			// revocation (TestGlobalLogoutLatency measures how soon).
			deadline := time.Now().Add(time.Second)
			for _, rt := range c.Routers {
				for !rt.Index.IsRevoked(claims.SID) {
					if time.Now().After(deadline) {
						t.Fatalf("%s: the session is not revoked 1s after logout", rt.Name)
					}
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
}

// regionRequests counts the requests a region served on its user-facing
// routes (everything but /metrics, /healthz, /readyz and /internal/*,
// which the routers poll on their own).
func regionRequests(t *testing.T, c *Cluster, name string) float64 {
	t.Helper()
	resp, err := http.Get(c.Regions[name].URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	total := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "domicile_http_requests_total{") {
			continue
		}
		i := strings.Index(line, `route="`)
		if i < 0 {
			continue
		}
		route := line[i+len(`route="`):]
		route = route[:strings.IndexByte(route, '"')]
		if route == "/metrics" || route == "/healthz" || route == "/readyz" || strings.HasPrefix(route, "/internal/") {
			continue
		}
		var v float64
		fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
		total += v
	}
	return total
}

// TestOIDCTravellingUser: a user homed in eu-west logs in, then uses the
// ap-southeast router (router-3) for SSO with prompt=none, the code
// exchange and token verification (introspection): no request reaches
// eu-west for those. A profile read through the same router reaches
// eu-west and no other region.
func TestOIDCTravellingUser(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	if LocalRegions[2] != "ap-southeast" {
		t.Fatal("router-3 is expected to be in ap-southeast")
	}
	ctx := context.Background()
	browser := browserClient()
	sessTok := signUpAndLogin(t, browser, r[0], "ana@acme.de")
	if home := jwtClaims(t, sessTok)["home"]; home != "eu-west" {
		t.Fatalf("session home %v", home)
	}
	// The session cookie travels with the user: the browser presents it
	// to router-3 too (same host name, another port, in this test).
	u3, _ := url.Parse(r[2])
	browser.Jar.SetCookies(u3, []*http.Cookie{{Name: "domicile_session", Value: sessTok, Path: "/"}})

	provider, err := oidc.NewProvider(ctx, r[0])
	if err != nil {
		t.Fatal(err)
	}
	// Endpoints of the issuer, reached through router-3.
	via3 := func(u string) string { return strings.Replace(u, r[0], r[2], 1) }
	cfg := oauth2.Config{ClientID: DemoClient.ID, ClientSecret: DemoClient.Secret, RedirectURL: rpRedirect, Scopes: []string{oidc.ScopeOpenID},
		Endpoint: oauth2.Endpoint{AuthURL: via3(provider.Endpoint().AuthURL), TokenURL: via3(provider.Endpoint().TokenURL)}}

	before := map[string]float64{}
	for _, name := range c.RegionNames {
		before[name] = regionRequests(t, c, name)
	}
	verifier := oauth2.GenerateVerifier()
	loc := authorize(t, browser, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n"), oauth2.SetAuthURLParam("prompt", "none")))
	code := loc.Query().Get("code")
	if !strings.HasPrefix(code, "ap-southeast.") || loc.Query().Get("iss") != r[0] {
		t.Fatalf("SSO at router-3: %s (want a code of ap-southeast, iss = the issuer)", loc)
	}
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("code exchange at router-3: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: DemoClient.ID}).Verify(ctx, rawID)
	if err != nil || !strings.HasPrefix(idt.Subject, "eu-west.") || !strings.HasPrefix(jwtKID(t, rawID), "ap-southeast-") {
		t.Fatalf("ID token of the travelling SSO: %v (sub %v, kid %s)", err, idt, jwtKID(t, rawID))
	}
	if _, ok := jwtClaims(t, rawID)["email"]; ok {
		t.Fatal("the ID token made outside the home region carries the email")
	}
	// Token verification: introspection at router-3.
	form := url.Values{"token": {tok.AccessToken}}
	req, _ := http.NewRequest(http.MethodPost, r[2]+"/oauth2/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(DemoClient.ID, DemoClient.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var intro map[string]any
	json.NewDecoder(resp.Body).Decode(&intro)
	resp.Body.Close()
	if resp.StatusCode != 200 || intro["active"] != true || intro["sub"] != idt.Subject {
		t.Fatalf("introspection at router-3: %d %v", resp.StatusCode, intro)
	}
	// Discovery and JWKS at router-3: answered by the router itself.
	for _, p := range []string{"/.well-known/openid-configuration", "/oauth2/keys"} {
		resp, err := http.Get(r[2] + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s at router-3: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	mid := map[string]float64{}
	for _, name := range c.RegionNames {
		mid[name] = regionRequests(t, c, name)
	}
	if n := mid["eu-west"] - before["eu-west"]; n != 0 {
		t.Fatalf("SSO, code exchange, introspection, discovery and JWKS at router-3 sent %v requests to eu-west, want 0", n)
	}
	if mid["ap-southeast"] == before["ap-southeast"] {
		t.Fatal("nothing reached ap-southeast: who answered?")
	}
	// A profile read through the same router goes home, and only there.
	code2, prof := do(t, browser, "GET", r[2]+"/account", "")
	if code2 != 200 || prof["email"] != "ana@acme.de" {
		t.Fatalf("profile through router-3: %d %v", code2, prof)
	}
	after := map[string]float64{}
	for _, name := range c.RegionNames {
		after[name] = regionRequests(t, c, name)
	}
	for _, name := range c.RegionNames {
		n := after[name] - mid[name]
		switch {
		case name == "eu-west" && n != 1:
			t.Errorf("profile read: %v requests at eu-west, want 1", n)
		case name != "eu-west" && n != 0:
			t.Errorf("profile read: %v requests at %s, want 0", n, name)
		}
	}
}

// TestGlobalLogoutLatency logs in and out -logouts times (users of every
// region, through every router) and measures, for each logout, the time
// from sending it until all three routers reject the session (their
// replicas of the home index hold the revocation their session check
// consults): p50 and p99 reported, p99 must be under 1s.
func TestGlobalLogoutLatency(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	c := startCluster(t)
	r := c.RouterURLs()
	homes := []string{"acme.de", "example.sg", "example.com"}
	// Logouts run from several clients at once (each one measured on its
	// own), as they would in production.
	const workers = 8
	lats := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				d, err := logoutOnce(c, r, i, fmt.Sprintf("u%d@%s", i, homes[i%3]))
				if err != nil {
					errs <- err
					return
				}
				lats[w] = append(lats[w], d)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var lat []time.Duration
	for _, l := range lats {
		lat = append(lat, l...)
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("%d logouts: time until all %d routers reject the session: p50 %v, p99 %v, max %v", n, len(c.Routers), p50, p99, lat[len(lat)-1])
	if p99 > time.Second {
		t.Errorf("p99 %v > 1s", p99)
	}
}

// logoutOnce signs a user up, logs in through one router and out through
// another, and returns the time from sending the logout until every router
// rejects the session.
func logoutOnce(c *Cluster, r []string, i int, email string) (time.Duration, error) {
	browser := browserClient()
	// Each user comes from an address of its own (through the "CDN" the
	// routers trust on loopback), as real users do: the per-address rate
	// limits of the credential endpoints do not apply across users.
	browser.Transport = xffRT{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}
	tok, err := signUpLogIn(browser, r[i%3], email)
	if err != nil {
		return 0, err
	}
	var claims struct {
		SID string `json:"sid"`
	}
	if err := jwtPayload(tok, &claims); err != nil || claims.SID == "" {
		return 0, fmt.Errorf("login %s: session token without sid (%v)", email, err)
	}
	start := time.Now()
	resp, err := browser.Get(r[(i+1)%3] + "/oauth2/logout")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return 0, fmt.Errorf("logout %s: HTTP %d", email, resp.StatusCode)
	}
	for {
		all := true
		for _, rt := range c.Routers {
			all = all && rt.Index.IsRevoked(claims.SID)
		}
		if all {
			return time.Since(start), nil
		}
		if time.Since(start) > 5*time.Second {
			return 0, fmt.Errorf("logout %s: not every router rejects the session after 5s", email)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// xffRT sets X-Forwarded-For.
type xffRT struct{ addr string }

func (x xffRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", x.addr)
	return http.DefaultTransport.RoundTrip(r)
}

// TestClientRegistryIsGlobal: a client registered through one region's
// admin API gets tokens from every region (the registry lives in the home
// index), and a deleted one from none.
func TestClientRegistryIsGlobal(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	admin := &http.Client{Timeout: 10 * time.Second, Transport: adminRT{c.Secrets.AdminToken}}
	code, doc := do(t, admin, "POST", c.Regions["us-east"].URL()+"/admin/v1/clients",
		`{"client_name":"backend","grant_types":["client_credentials"],"scopes":["openid"],"redirect_uris":[]}`)
	id, _ := doc["client_id"].(string)
	secret, _ := doc["client_secret"].(string)
	if code != 201 || id == "" || secret == "" {
		t.Fatalf("register: %d %v", code, doc)
	}
	grant := func(router string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, router+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	// Each router sends the grant to its own local region, whose replica
	// of the registry has the client soon.
	deadline := time.Now().Add(10 * time.Second)
	for i, router := range r {
		for {
			code, m := grant(router)
			if code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("router-%d: the new client gets no token: %d %v", i+1, code, m)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_, m := grant(router)
		at, _ := m["access_token"].(string)
		if kid := jwtKID(t, at); !strings.HasPrefix(kid, LocalRegions[i]+"-") {
			t.Fatalf("router-%d: token signed by %s, want %s", i+1, kid, LocalRegions[i])
		}
	}
	if code, _ := do(t, admin, "DELETE", c.Regions["ap-southeast"].URL()+"/admin/v1/clients/"+id, ""); code != 204 {
		t.Fatalf("delete at another region: %d", code)
	}
	// The providers cache a client for up to 5s.
	deadline = time.Now().Add(10 * time.Second)
	for i, router := range r {
		for {
			code, m := grant(router)
			if code == 401 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("router-%d: the deleted client still gets tokens: %d %v", i+1, code, m)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
