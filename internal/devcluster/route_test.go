package devcluster

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region"
)

// TestRegionsRefuseUnroutedRequests: a region serves only requests that a
// router signed for it, recently, once.
func TestRegionsRefuseUnroutedRequests(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	const creds = `{"email":"ana@acme.de","password":"correct horse battery"}`
	expect(t, "sign-up", post(t, nil, r[0]+"/signup", creds, nil), http.StatusCreated)
	eu := c.Regions["eu-west"].URL()

	hasher, err := homeindex.NewHasher(c.Secrets.IndexKey)
	if err != nil {
		t.Fatal(err)
	}
	ana := [routesig.IdentLen]byte(hasher.EmailKey("ana@acme.de"))
	bob := [routesig.IdentLen]byte(hasher.EmailKey("bob@acme.de"))
	signFor := func(key []byte, path, region string, ident *[routesig.IdentLen]byte, at time.Time) string {
		s, err := routesig.NewSigner(key, "test-router")
		if err != nil {
			t.Fatal(err)
		}
		return string(s.AppendHeaderFor(nil, http.MethodPost, path, region, ident, at))
	}
	sign := func(key []byte, region string, at time.Time) string {
		return signFor(key, "/login", region, &ana, at)
	}
	now := time.Now()
	cases := []struct {
		name, header string
	}{
		{"no route header", ""},
		{"forged (another key)", sign([]byte(strings.Repeat("x", 32)), "eu-west", now)},
		{"stale", sign(c.Secrets.RouteKey, "eu-west", now.Add(-2*time.Minute))},
		{"from the future", sign(c.Secrets.RouteKey, "eu-west", now.Add(2*time.Minute))},
		{"for another region", sign(c.Secrets.RouteKey, "us-east", now)},
		{"garbage", "v1;r=eu-west;t=1;n=x;s=AAAA"},
		{"routed by another identifier", signFor(c.Secrets.RouteKey, "/login", "eu-west", &bob, now)},
		{"routed by no identifier", signFor(c.Secrets.RouteKey, "/login", "eu-west", nil, now)},
	}
	for _, tc := range cases {
		h := map[string]string{}
		if tc.header != "" {
			h[routesig.Header] = tc.header
		}
		res := post(t, nil, eu+"/login", creds, h)
		expect(t, tc.name, res, http.StatusMisdirectedRequest)
	}

	// A valid header is accepted once; the same header again is a replay.
	valid := sign(c.Secrets.RouteKey, "eu-west", time.Now())
	expect(t, "valid route header", post(t, nil, eu+"/login", creds, map[string]string{routesig.Header: valid}), http.StatusOK)
	expect(t, "replayed route header", post(t, nil, eu+"/login", creds, map[string]string{routesig.Header: valid}), http.StatusMisdirectedRequest)
	// The signature covers the path: a header for /login does not open /signup.
	other := sign(c.Secrets.RouteKey, "eu-west", time.Now())
	expect(t, "header for another path", post(t, nil, eu+"/signup", creds, map[string]string{routesig.Header: other}), http.StatusMisdirectedRequest)
	// Health endpoints stay open to load balancers.
	resp, err := http.Get(eu + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestSessionTokenRoutesHome: once logged in, a request carrying the session
// cookie goes to the user's home region whatever router and country it
// comes from, with no identifier in it.
func TestSessionTokenRoutesHome(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	const creds = `{"email":"ana@acme.de","password":"correct horse battery"}`
	expect(t, "sign-up", post(t, nil, r[0]+"/signup", creds, nil), http.StatusCreated)
	res := post(t, nil, r[0]+"/login", creds, nil)
	expect(t, "login", res, http.StatusOK)
	var cookie *http.Cookie
	for _, ck := range (&http.Response{Header: res.Header}).Cookies() {
		if ck.Name == region.SessionCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("session cookie: %+v", cookie)
	}
	get := func(url string, withCookie bool) string {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9") // Singapore: nearest is ap-southeast
		if withCookie {
			req.AddCookie(cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get(region.HeaderRegion)
	}
	if got := get(r[2]+"/account", false); got != "ap-southeast" {
		t.Fatalf("without a session, a Singapore client is served by %q, want ap-southeast (nearest)", got)
	}
	for _, u := range r {
		testenv.WaitFor(t, 5*time.Second, "router "+u+" routes by the session token", func() bool {
			return get(u+"/account", true) == "eu-west"
		})
	}
	// Bearer works the same way.
	req, _ := http.NewRequest(http.MethodGet, r[1]+"/account", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("Authorization", "Bearer "+cookie.Value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(region.HeaderRegion); got != "eu-west" {
		t.Fatalf("bearer session token served by %q", got)
	}
}

// TestParserDifferentialEndToEnd: however a sign-up body is shaped, the
// account is created in the region the policy gives its email (acme.de:
// eu-west) or not at all — never elsewhere.
func TestParserDifferentialEndToEnd(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	const pw = `"password":"correct horse battery"`
	for i, tc := range []struct{ target, ctype, body string }{
		{"/signup", "application/json", `{"email":"decoy@example.com","email":"victim0@acme.de",` + pw + `}`},
		{"/signup", "application/json", `{"email":"decoy@example.com","Email":"victim1@acme.de",` + pw + `}`},
		{"/signup", "application/json", `{"username":"decoy@example.com","EMAIL":"victim2@acme.de",` + pw + `}`},
		{"/signup?login_hint=decoy@example.com", "application/json", `{"email":"victim3@acme.de",` + pw + `}`},
		{"/signup", "", `{"email":"victim4@acme.de",` + pw + `}`},
		{"/signup", "application/problem+json", `{"email":"victim5@acme.de",` + pw + `}`},
		{"/signup", "text/plain", `{"email":"victim6@acme.de",` + pw + `}`},
		{"/signup", "application/json", `{"Email":"victim7@acme.de",` + pw + `}`},
	} {
		req, _ := http.NewRequest(http.MethodPost, r[i%3]+tc.target, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		req.Header.Set("X-Forwarded-For", "198.51.100.7") // US: the default and country rules say us-east
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		victim := "victim" + string(rune('0'+i)) + "@acme.de"
		got := homes(t, c, victim)
		if len(got) > 1 || (len(got) == 1 && got[0] != "eu-west") {
			t.Errorf("case %d (%s): %s was created in %v (HTTP %d)", i, tc.body, victim, got, resp.StatusCode)
		}
		if resp.StatusCode >= 500 {
			t.Errorf("case %d: HTTP %d", i, resp.StatusCode)
		}
		t.Logf("case %d: HTTP %d, %s in %v", i, resp.StatusCode, victim, got)
	}
}
