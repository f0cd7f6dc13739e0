package devcluster

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	devdeploy "github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/internal/testenv"
)

func adminDo(t *testing.T, c *Cluster, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url+"/admin/v1/policy", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.Secrets.AdminToken)
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// A policy put through router 1 is in force on routers 2 and 3 within a
// second; an invalid one is refused with every problem and changes nothing.
func TestPolicyChangeReachesEveryRouter(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	const pw = `"password":"correct horse battery"`
	expect(t, "sign-up before the change", post(t, nil, r[0]+"/signup", `{"email":"old@newco.example",`+pw+`}`, nil), http.StatusCreated)

	if code, m := adminDo(t, c, http.MethodGet, r[2], ""); code != http.StatusOK || m["version"] != float64(1) {
		t.Fatalf("GET policy: %d %v", code, m)
	}
	// Unauthenticated: 401, problem+json.
	req, _ := http.NewRequest(http.MethodPut, r[0]+"/admin/v1/policy", strings.NewReader("version: 2"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("PUT without token: %d", resp.StatusCode)
	}

	// Invalid: unknown region and a country mapped twice — both reported.
	bad := strings.Replace(string(devdeploy.Policy), "version: 1", "version: 2", 1) + "\n"
	bad = strings.Replace(bad, `"acme.de": eu-west`, `"acme.de": eu-wst`, 1)
	bad = strings.Replace(bad, "countries: [US, CA]", "countries: [US, CA, DE]", 1)
	code, m := adminDo(t, c, http.MethodPut, r[0], bad)
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("invalid policy: %d %v", code, m)
	}
	errs, _ := m["errors"].([]any)
	if len(errs) < 2 {
		t.Fatalf("want every problem listed, got %v", m)
	}
	for _, rt := range c.Routers {
		if v := rt.Router.Policy().Version(); v != 1 {
			t.Fatalf("%s: version %d after a refused policy", rt.Name, v)
		}
	}

	// Valid: newco.example moves to ap-southeast for new sign-ups.
	good := strings.Replace(string(devdeploy.Policy), "version: 1", "version: 2", 1)
	good = strings.Replace(good, `"acme.de": eu-west`, `"acme.de": eu-west, "newco.example": ap-southeast`, 1)
	if !bytes.Contains([]byte(good), []byte("newco.example")) {
		t.Fatal("test policy edit did not apply")
	}
	start := time.Now()
	code, m = adminDo(t, c, http.MethodPut, r[0], good)
	if code != http.StatusOK || m["version"] != float64(2) {
		t.Fatalf("PUT policy: %d %v", code, m)
	}
	var lag []time.Duration
	for _, rt := range c.Routers {
		testenv.WaitFor(t, 1*time.Second-time.Since(start), rt.Name+" to apply version 2", func() bool { return rt.Router.Policy().Version() == 2 })
		lag = append(lag, time.Since(start))
	}
	t.Logf("policy v2 in force on all routers %v after the PUT returned/started", lag)
	if code, m := adminDo(t, c, http.MethodGet, r[2], ""); code != http.StatusOK || m["version"] != float64(2) || !strings.Contains(m["policy"].(string), "newco.example") {
		t.Fatalf("GET policy on router 3: %d %v", code, m)
	}
	// The same version again is refused.
	if code, _ := adminDo(t, c, http.MethodPut, r[1], good); code != http.StatusConflict {
		t.Fatalf("same version again: %d", code)
	}
	// New users follow the new rule; existing users keep their home.
	res := post(t, nil, r[2]+"/signup", `{"email":"new@newco.example",`+pw+`}`, nil)
	expect(t, "sign-up after the change", res, http.StatusCreated)
	if res.Body["home"] != "ap-southeast" {
		t.Fatalf("new user homed in %v", res.Body["home"])
	}
	res = post(t, nil, r[1]+"/login", `{"email":"old@newco.example",`+pw+`}`, nil)
	expect(t, "login of the existing user", res, http.StatusOK)
	if res.Body["home"] != "us-east" {
		t.Fatalf("existing user now served by %v, want us-east (unchanged)", res.Body["home"])
	}
}

// The index counts the entries each residency rule created, so a diff can
// say how many users a changed rule homed.
func TestRuleCounts(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	const pw = `"password":"correct horse battery"`
	for _, u := range []struct{ email, xff string }{
		{"a@acme.de", ""}, {"b@acme.de", ""}, {"c@example.com", "203.0.113.9"}, {"d@example.com", ""},
	} {
		expect(t, "sign-up "+u.email, post(t, nil, r[0]+"/signup", `{"email":"`+u.email+`",`+pw+`}`, map[string]string{"X-Forwarded-For": u.xff}), http.StatusCreated)
	}
	// A duplicate resolved by the index adds nothing.
	post(t, nil, r[1]+"/signup", `{"email":"a@acme.de",`+pw+`}`, nil)
	want := map[string]uint64{"email_domain:acme.de": 2, "country:SG": 1, "default": 1}
	for _, rt := range c.Routers {
		testenv.WaitFor(t, 2*time.Second, rt.Name+" rule counts", func() bool {
			got := rt.Index.RuleCounts()
			if len(got) != len(want) {
				return false
			}
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		})
	}
}
