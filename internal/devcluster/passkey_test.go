package devcluster

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/region/passkeytest"
)

// call sends a request with an optional JSON body and headers, and returns
// the response (body read) and the body as a JSON object.
func call(t *testing.T, client *http.Client, method, u, body string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
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
	return resp, m
}

// localhostOrigin is the origin a browser has on a router's pages: passkeys
// need a domain, and the dev topology serves them on localhost.
func localhostOrigin(t *testing.T, routerURL string) string {
	t.Helper()
	u, err := url.Parse(routerURL)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(u.Host)
	return "http://localhost:" + port
}

// TestPasskeys: through the routers, a user of eu-west registers a passkey
// (begin and finish on different routers) and signs in with it without
// typing anything: the begin goes to the region nearest the client
// (ap-southeast for a client in Singapore), the finish to the passkey's
// home region by the home= hint read from the user handle. A replayed
// assertion is refused, and so is a finish sent to another region with a
// wrong hint. The ceremony endpoints are rate-limited per client address.
func TestPasskeys(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	const email = "ana@acme.de"
	const creds = `{"email":"` + email + `","password":"correct horse battery"}`
	if code, m := do(t, browser, "POST", r[0]+"/signup", creds); code != 201 {
		t.Fatalf("sign-up: %d %v", code, m)
	}
	if code, m := do(t, browser, "POST", r[0]+"/login", creds); code != 200 {
		t.Fatalf("login: %d %v", code, m)
	}
	origin := localhostOrigin(t, r[1])
	auth := &passkeytest.Authenticator{UserVerified: true, BackupEligible: true}

	resp, begin := call(t, browser, "POST", r[1]+"/passkeys/register/begin", "")
	if resp.StatusCode != 200 || resp.Header.Get("Domicile-Region") != "eu-west" {
		t.Fatalf("register begin: %d %v", resp.StatusCode, begin)
	}
	opts, _ := json.Marshal(begin["publicKey"])
	if rp, _ := begin["publicKey"].(map[string]any)["rp"].(map[string]any); rp["id"] != "localhost" {
		t.Fatalf("relying party: %v", rp)
	}
	cred, err := auth.Create(origin, opts)
	if err != nil {
		t.Fatal(err)
	}
	finish, _ := json.Marshal(map[string]any{"state": begin["state"], "name": "Test key", "credential": json.RawMessage(cred)})
	if resp, m := call(t, browser, "POST", r[2]+"/passkeys/register/finish", string(finish)); resp.StatusCode != 201 {
		t.Fatalf("register finish: %d %v", resp.StatusCode, m)
	}

	// A new client, in Singapore, signs in with the passkey alone.
	fresh := func() *http.Client {
		j, _ := cookiejar.New(nil)
		return &http.Client{Timeout: 10 * time.Second, Jar: j}
	}
	const singapore = "203.0.113.9"
	assertion := func(client *http.Client) (body []byte, home string) {
		t.Helper()
		resp, begin := call(t, client, "POST", r[2]+"/passkeys/login/begin", "", "X-Forwarded-For", singapore)
		if resp.StatusCode != 200 {
			t.Fatalf("login begin: %d %v", resp.StatusCode, begin)
		}
		if got := resp.Header.Get("Domicile-Region"); got != "ap-southeast" {
			t.Errorf("login begin served by %s, want the nearest region ap-southeast", got)
		}
		opts, _ := json.Marshal(begin["publicKey"])
		cred, err := auth.Get(origin, opts)
		if err != nil {
			t.Fatal(err)
		}
		// As the page's script does: the region from the user handle.
		var a struct {
			Response struct {
				UserHandle string `json:"userHandle"`
			} `json:"response"`
		}
		json.Unmarshal(cred, &a)
		h, _ := base64.RawURLEncoding.DecodeString(a.Response.UserHandle)
		i := bytes.IndexByte(h, '.')
		if i < 1 {
			t.Fatalf("user handle %q without a region", h)
		}
		body, _ = json.Marshal(map[string]any{"state": begin["state"], "credential": json.RawMessage(cred)})
		return body, string(h[:i])
	}
	client := fresh()
	body, home := assertion(client)
	if home != "eu-west" {
		t.Fatalf("user handle names %s, want eu-west", home)
	}
	resp, sess := call(t, client, "POST", r[0]+"/passkeys/login/finish?home="+home, string(body), "X-Forwarded-For", singapore)
	if resp.StatusCode != 200 || resp.Header.Get("Domicile-Region") != "eu-west" || sess["session_token"] == nil || sess["mfa"] != true {
		t.Fatalf("login finish: %d %v", resp.StatusCode, sess)
	}
	// The session works through any router.
	if code, acct := do(t, client, "GET", r[1]+"/account", ""); code != 200 || acct["email"] != email {
		t.Fatalf("account with the passkey's session: %d %v", code, acct)
	}
	// The same assertion again: refused.
	if resp, m := call(t, fresh(), "POST", r[1]+"/passkeys/login/finish?home="+home, string(body)); resp.StatusCode != 400 {
		t.Fatalf("replayed assertion: %d %v", resp.StatusCode, m)
	}
	// A fresh assertion sent to another region by a wrong hint: that
	// region refuses it (421), and it stays good for the right one.
	client = fresh()
	body, home = assertion(client)
	resp, m := call(t, client, "POST", r[0]+"/passkeys/login/finish?home=us-east", string(body))
	if resp.StatusCode != 421 || resp.Header.Get("Domicile-Region") != "us-east" || !strings.Contains(m["detail"].(string), "eu-west") {
		t.Fatalf("finish at the wrong region: %d %v", resp.StatusCode, m)
	}
	if resp, m := call(t, client, "POST", r[0]+"/passkeys/login/finish?home="+home, string(body)); resp.StatusCode != 200 {
		t.Fatalf("finish at the right region after a wrong one: %d %v", resp.StatusCode, m)
	}
	// The passkey is the user's, listed and in the home region's store.
	if resp, m := call(t, client, "GET", r[2]+"/passkeys", ""); resp.StatusCode != 200 || len(m["passkeys"].([]any)) != 1 {
		t.Fatalf("list: %d %v", resp.StatusCode, m)
	}
	for _, name := range []string{"us-east", "ap-southeast"} {
		if u, err := c.Regions[name].Store.UserByEmail(t.Context(), email); err == nil {
			t.Errorf("region %s holds the user %s", name, u.ID)
		}
	}

	// Rate limits: the ceremonies are credential endpoints.
	limited := false
	for range 400 {
		resp, _ := call(t, fresh(), "POST", r[0]+"/passkeys/login/begin", "", "X-Forwarded-For", "198.51.100.77")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = resp.Header.Get("Retry-After") != ""
			break
		}
	}
	if !limited {
		t.Fatal("400 passkey login begins from one address, none limited")
	}
}
