package devcluster

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/region"
	"github.com/domicile/domicile/region/store"
)

var linkRE = regexp.MustCompile(`https?://\S+`)

// mailedLink returns the link in the last message the region sent to addr.
func mailedLink(t *testing.T, c *Cluster, regionName, addr string) *url.URL {
	t.Helper()
	var link string
	deadline := time.Now().Add(5 * time.Second)
	for link == "" && time.Now().Before(deadline) {
		if m, ok := c.Regions[regionName].Outbox.Last(addr); ok {
			link = linkRE.FindString(m.Text)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if link == "" {
		t.Fatalf("no mail with a link to %s in %s's outbox", addr, regionName)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// do sends a request with an optional JSON body through client.
func do(t *testing.T, client *http.Client, method, u, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s: HTTP %d %s", method, u, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

// TestAccountLifecycle: verification and reset links (single use,
// expiring), the password policy, lockout without enumeration, profile,
// export and erasure, all through the routers; the audit chain holds.
func TestAccountLifecycle(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	hc := &http.Client{Timeout: 10 * time.Second}
	const pw = "correct horse battery"
	const email = "ana@acme.de"

	// Sign-up refuses a common password, then succeeds.
	if code, m := do(t, hc, "POST", r[0]+"/signup", `{"email":"ana@acme.de","password":"password123"}`); code != 400 || !strings.Contains(m["detail"].(string), "too common") {
		t.Fatalf("common password: HTTP %d %v", code, m)
	}
	if code, m := do(t, hc, "POST", r[0]+"/signup", `{"email":"ana@acme.de","password":"`+pw+`"}`); code != 201 {
		t.Fatalf("sign-up: HTTP %d %v", code, m)
	}

	// The verification link works once, through any router.
	link := mailedLink(t, c, "eu-west", email)
	if link.Query().Get("home") != "eu-west" {
		t.Fatalf("link %s does not name the home region", link)
	}
	if link.Path != "/ui/verify-email" {
		t.Fatalf("verification link %s: want the hosted page", link)
	}
	// An app uses the JSON API with the link's token, through any router.
	api := r[2] + "/verify-email?home=" + link.Query().Get("home") + "&token=" + link.Query().Get("token")
	if code, m := do(t, hc, "GET", api, ""); code != 200 || m["email_verified"] != true {
		t.Fatalf("verify: HTTP %d %v", code, m)
	}
	if code, _ := do(t, hc, "GET", api, ""); code != 400 {
		t.Fatalf("verification token used twice: HTTP %d", code)
	}

	// Reset: the same answer for an unknown address; the link is single
	// use; the new password replaces the old one.
	code1, m1 := do(t, hc, "POST", r[1]+"/password/reset", `{"email":"ana@acme.de"}`)
	code2, m2 := do(t, hc, "POST", r[1]+"/password/reset", `{"email":"nobody@acme.de"}`)
	if code1 != 202 || code2 != 202 || m1["status"] != m2["status"] {
		t.Fatalf("reset answers differ: %d %v / %d %v", code1, m1, code2, m2)
	}
	reset := resetAPI(t, mailedLink(t, c, "eu-west", email))
	if code, m := do(t, hc, "POST", reset.String(), `{"password":"qwerty123"}`); code != 400 {
		t.Fatalf("reset to a common password: HTTP %d %v", code, m)
	}
	if code, m := do(t, hc, "POST", reset.String(), `{"password":"a brand new passphrase"}`); code != 200 {
		t.Fatalf("reset: HTTP %d %v", code, m)
	}
	if code, _ := do(t, hc, "POST", reset.String(), `{"password":"yet another passphrase"}`); code != 400 {
		t.Fatalf("reset link used twice: HTTP %d", code)
	}
	if code, _ := do(t, hc, "POST", r[0]+"/login", `{"email":"ana@acme.de","password":"`+pw+`"}`); code != 401 {
		t.Fatalf("old password after reset: HTTP %d", code)
	}
	// An expired token is refused like an unknown one.
	st := c.Regions["eu-west"].Store
	u, err := st.UserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	expired := "expired-token-for-the-test"
	if err := st.CreateToken(context.Background(), store.Token{Hash: sha256.Sum256([]byte(expired)), UserID: u.ID, Purpose: "reset_password", ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if code, _ := do(t, hc, "POST", r[0]+"/password/reset/confirm?home=eu-west&token="+expired, `{"password":"an expired attempt here"}`); code != 400 {
		t.Fatalf("expired token: HTTP %d", code)
	}

	// A good login clears the failure count (one failure above).
	if code, _ := do(t, hc, "POST", r[0]+"/login", `{"email":"ana@acme.de","password":"a brand new passphrase"}`); code != 200 {
		t.Fatalf("login with the new password: HTTP %d", code)
	}
	// Lockout after LockoutFailures failures, for a known account and for
	// an unknown address alike (no enumeration through the lockout).
	for _, who := range []string{"ana@acme.de", "ghost@acme.de"} {
		for i := range region.LockoutFailures {
			if code, _ := do(t, hc, "POST", r[i%3]+"/login", `{"email":"`+who+`","password":"wrong guess number"}`); code != 401 {
				t.Fatalf("%s failure %d: HTTP %d", who, i, code)
			}
		}
		if code, _ := do(t, hc, "POST", r[0]+"/login", `{"email":"`+who+`","password":"a brand new passphrase"}`); code != 429 {
			t.Fatalf("%s after %d failures: HTTP %d, want 429", who, region.LockoutFailures, code)
		}
	}
	// A password reset ends the lockout.
	do(t, hc, "POST", r[1]+"/password/reset", `{"email":"ana@acme.de"}`)
	reset = resetAPI(t, mailedLink(t, c, "eu-west", email))
	if code, _ := do(t, hc, "POST", reset.String(), `{"password":"the third passphrase"}`); code != 200 {
		t.Fatalf("reset while locked: HTTP %d", code)
	}

	// Session: profile, progressive attributes, export, erasure.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	if code, m := do(t, browser, "POST", r[2]+"/login", `{"email":"ana@acme.de","password":"the third passphrase"}`); code != 200 {
		t.Fatalf("login: HTTP %d %v", code, m)
	}
	// The cookie was set for router 3's host; every router shares the host
	// name 127.0.0.1 here, so the jar sends it to all of them.
	if code, m := do(t, browser, "GET", r[0]+"/account", ""); code != 200 || m["email"] != email || m["email_verified"] != true {
		t.Fatalf("account: HTTP %d %v", code, m)
	}
	if code, m := do(t, browser, "PATCH", r[1]+"/account", `{"name":"Ana","attributes":{"company":"Acme","locale":"de"}}`); code != 200 || m["name"] != "Ana" {
		t.Fatalf("patch: HTTP %d %v", code, m)
	}
	if code, _ := do(t, browser, "PATCH", r[1]+"/account", `{"attributes":{"Bad Key":"x"}}`); code != 400 {
		t.Fatalf("bad attribute key: HTTP %d", code)
	}
	code, exp := do(t, browser, "GET", r[0]+"/account/export", "")
	if code != 200 {
		t.Fatalf("export: HTTP %d", code)
	}
	raw, _ := json.Marshal(exp)
	for _, want := range []string{email, "Acme", "user.login", "user.password_reset"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("export lacks %q: %s", want, raw)
		}
	}
	if code, _ := do(t, browser, "DELETE", r[0]+"/account", ""); code != 204 {
		t.Fatalf("delete: HTTP %d", code)
	}
	hasher, _ := homeindex.NewHasher(c.Secrets.IndexKey)
	key := hasher.EmailKey(email)
	for _, rt := range c.Routers {
		rt := rt
		waitFor(t, "index entry released on "+rt.Name, func() bool { _, ok := rt.Index.Lookup(key); return !ok })
	}
	if _, err := st.UserByID(context.Background(), u.ID); err == nil {
		t.Fatal("the user is still in eu-west's database")
	}
	if code, _ := do(t, hc, "POST", r[0]+"/login", `{"email":"ana@acme.de","password":"the third passphrase"}`); code != 401 {
		t.Fatalf("login after deletion: HTTP %d", code)
	}
	// The address is free again (anywhere the policy says).
	if code, _ := do(t, hc, "POST", r[1]+"/signup", `{"email":"ana@acme.de","password":"`+pw+`"}`); code != 201 {
		t.Fatalf("sign-up after deletion: HTTP %d", code)
	}

	// Every step above is in the audit chain, which verifies.
	n, err := st.VerifyAudit(context.Background())
	if err != nil || n < 20 {
		t.Fatalf("audit: %d entries checked, %v", n, err)
	}
}

// resetAPI turns an emailed reset link (to the hosted page) into the JSON
// API's URL with the same token, as an app would.
func resetAPI(t *testing.T, link *url.URL) *url.URL {
	t.Helper()
	if link.Path != "/ui/password/reset/confirm" {
		t.Fatalf("reset link %s: want the hosted page", link)
	}
	u := *link
	u.Path = "/password/reset/confirm"
	return &u
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
