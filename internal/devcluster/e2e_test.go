package devcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/internal/sqltx"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region"
	"github.com/domicile/domicile/region/store"
)

// lightArgon2 keeps the end-to-end test fast under -race; the password
// code path is the same, only the cost differs (region tests use the default).
var lightArgon2 = &region.Argon2Params{MemoryKiB: 1024, Time: 1, Threads: 1}

type recorder struct {
	mu       sync.Mutex
	statuses []string
}

func (r *recorder) add(s string) { r.mu.Lock(); r.statuses = append(r.statuses, s); r.mu.Unlock() }

type reply struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

func startCluster(t *testing.T) *Cluster {
	t.Helper()
	return startClusterWith(t, Config{})
}

func startClusterWith(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs := &testenv.LogBuffer{}
	cfg.DataDir = t.TempDir()
	if cfg.Argon2 == nil {
		cfg.Argon2 = lightArgon2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("cluster logs:\n%s", logs.String())
		}
	})
	return c
}

func post(t *testing.T, rec *recorder, url, body string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	_ = json.Unmarshal(raw, &r.Body)
	if rec != nil {
		rec.add(req.URL.Path + " " + resp.Status)
		if resp.StatusCode >= 500 {
			t.Errorf("POST %s %s: %d %s", url, body, resp.StatusCode, raw)
		}
	}
	return r
}

func expect(t *testing.T, what string, r reply, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: got HTTP %d (%s), want %d", what, r.Status, r.Raw, status)
	}
	if status >= 400 && r.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%s: error Content-Type %q, want application/problem+json", what, r.Header.Get("Content-Type"))
	}
}

// homes returns the regions whose database holds email.
func homes(t *testing.T, c *Cluster, email string) []string {
	t.Helper()
	var out []string
	for _, name := range c.RegionNames {
		_, err := c.Regions[name].Store.UserByEmail(context.Background(), email)
		switch {
		case err == nil:
			out = append(out, name)
		case !errors.Is(err, store.ErrNotFound):
			t.Fatalf("%s: %v", name, err)
		}
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	scenario(t, startCluster(t))
}

// The same scenario with every region on its own PostgreSQL schema and
// sessions in the real Redis.
func TestEndToEndOnPostgresAndRedis(t *testing.T) {
	dsns := map[string]string{}
	for _, name := range []string{"eu-west", "us-east", "ap-southeast"} {
		dsns[name] = testenv.PostgresDSN(t)
	}
	c := startClusterWith(t, Config{
		Database: func(region string) store.Config { return store.Config{Driver: "postgres", DSN: dsns[region]} },
		Sessions: launch.SessionsConfig{Store: "redis", Redis: testenv.RedisAddr(t), Prefix: testenv.RedisPrefix(t)},
	})
	for name, r := range c.Regions {
		if r.Store.Flavor() != sqltx.Postgres {
			t.Fatalf("%s runs on %s", name, r.Store.Flavor())
		}
	}
	scenario(t, c)
}

func scenario(t *testing.T, c *Cluster) {
	r := c.RouterURLs()
	rec := &recorder{}
	const pw = `"password":"correct horse battery"`

	// 1. An acme.de user signs up via router 1 and lives in eu-west only.
	res := post(t, rec, r[0]+"/signup", `{"email":"ana@acme.de",`+pw+`}`, nil)
	expect(t, "sign-up ana@acme.de", res, http.StatusCreated)
	if res.Body["home"] != "eu-west" {
		t.Fatalf("ana's home: %v", res.Body["home"])
	}
	if got := homes(t, c, "ana@acme.de"); len(got) != 1 || got[0] != "eu-west" {
		t.Fatalf("ana@acme.de is stored in %v, want exactly [eu-west]", got)
	}

	// 2. An unknown domain from 203.0.113.9 (SG in the dev MMDB) lands in ap-southeast.
	res = post(t, rec, r[1]+"/signup", `{"email":"li@unknown-domain.example",`+pw+`}`, map[string]string{"X-Forwarded-For": "203.0.113.9"})
	expect(t, "sign-up from Singapore", res, http.StatusCreated)
	if got := homes(t, c, "li@unknown-domain.example"); len(got) != 1 || got[0] != "ap-southeast" {
		t.Fatalf("li is stored in %v, want exactly [ap-southeast]", got)
	}
	// No rule and no known country: the policy default.
	res = post(t, rec, r[2]+"/signup", `{"email":"bo@unknown-domain.example",`+pw+`}`, nil)
	expect(t, "sign-up with no rule", res, http.StatusCreated)
	if got := homes(t, c, "bo@unknown-domain.example"); len(got) != 1 || got[0] != c.Policy.Evaluate(residencyFacts("bo@unknown-domain.example")).Region {
		t.Fatalf("bo is stored in %v, want the default region", got)
	}

	// 3. Login through router 3 reaches the home region.
	res = post(t, rec, r[2]+"/login", `{"email":"ana@acme.de",`+pw+`}`, nil)
	expect(t, "login via router 3", res, http.StatusOK)
	sid, _ := res.Body["session_id"].(string)
	if res.Body["home"] != "eu-west" || len(sid) < 40 {
		t.Fatalf("login reply: %s", res.Raw)
	}
	if s, err := c.Regions["eu-west"].Sessions.Get(context.Background(), sid); err != nil || !strings.HasPrefix(s.UserID, "eu-west.") {
		t.Fatalf("session in eu-west: %+v %v", s, err)
	}
	for _, other := range []string{"us-east", "ap-southeast"} {
		if _, err := c.Regions[other].Sessions.Get(context.Background(), sid); err == nil {
			t.Fatalf("session found in %s", other)
		}
	}
	// The Singapore user can log in through router 1, even from elsewhere.
	res = post(t, rec, r[0]+"/login", `{"email":"LI@unknown-domain.example",`+pw+`}`, map[string]string{"X-Forwarded-For": "198.51.100.7"})
	expect(t, "login li via router 1 from the US", res, http.StatusOK)
	if res.Body["home"] != "ap-southeast" {
		t.Fatalf("li's login was served by %v", res.Body["home"])
	}

	// 4. The same email again, through another router, is refused — also
	// when policy would send it to another region (li from Germany).
	expect(t, "duplicate ana via router 2", post(t, rec, r[1]+"/signup", `{"email":"Ana@Acme.de",`+pw+`}`, nil), http.StatusConflict)
	expect(t, "duplicate li from DE via router 3", post(t, rec, r[2]+"/signup", `{"email":"li@unknown-domain.example",`+pw+`}`, map[string]string{"X-Forwarded-For": "192.0.2.1"}), http.StatusConflict)
	if got := homes(t, c, "li@unknown-domain.example"); len(got) != 1 {
		t.Fatalf("li is stored in %v after a duplicate sign-up", got)
	}

	// 5. Wrong password and unknown user: 401 with identical bodies.
	wrong := post(t, rec, r[0]+"/login", `{"email":"ana@acme.de","password":"wrong password!"}`, nil)
	expect(t, "wrong password", wrong, http.StatusUnauthorized)
	unknown := post(t, rec, r[0]+"/login", `{"email":"nobody@acme.de","password":"wrong password!"}`, nil)
	expect(t, "unknown user", unknown, http.StatusUnauthorized)
	if wrong.Body["detail"] != unknown.Body["detail"] || wrong.Body["title"] != unknown.Body["title"] {
		t.Fatalf("401 bodies differ: %s vs %s", wrong.Raw, unknown.Raw)
	}

	// 6. Malformed input: 400 problem+json, never 5xx.
	bad := []struct{ path, body string }{
		{"/signup", `{"email":`},
		{"/signup", `not json`},
		{"/login", `[1,2,3]`},
		{"/signup", `{"email":"no-at-sign",` + pw + `}`},
		{"/signup", `{"email":"x@acme.de","password":"short"}`},
		{"/signup", "{\"email\":\"\xff\xfe@acme.de\"}"},
		{"/login", `{"email":"x@acme.de"`},
	}
	for _, b := range bad {
		res := post(t, rec, r[0]+b.path, b.body, nil)
		expect(t, "malformed "+b.path+" "+b.body, res, http.StatusBadRequest)
		if res.Body["status"] != float64(400) || res.Body["title"] == nil {
			t.Fatalf("not a problem document: %s", res.Raw)
		}
	}
	res = post(t, rec, r[0]+"/signup", `{"email":"a@acme.de","password":"`+strings.Repeat("x", 20000)+`"}`, nil)
	expect(t, "oversized body", res, http.StatusRequestEntityTooLarge)

	// Health, readiness and metrics on every server.
	var urls []string
	urls = append(urls, r...)
	for _, name := range c.RegionNames {
		urls = append(urls, c.Regions[name].URL())
	}
	for _, u := range urls {
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := http.Get(u + p)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s%s: %d %s", u, p, resp.StatusCode, body)
			}
			if p == "/metrics" && !bytes.Contains(body, []byte("domicile_http_requests_total")) {
				t.Fatalf("GET %s/metrics lacks request counters", u)
			}
		}
	}
	t.Logf("requests: %v", rec.statuses)
}

func TestLeaderLossKeepsSignupAndLogin(t *testing.T) {
	c := startCluster(t)
	rec := &recorder{}
	const pw = `"password":"correct horse battery"`
	expect(t, "sign-up before", post(t, rec, c.RouterURLs()[0]+"/signup", `{"email":"before@acme.de",`+pw+`}`, nil), http.StatusCreated)

	leader := -1
	for i, r := range c.Routers {
		if r.Index.IsLeader() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := time.Now()
	if err := c.StopRouter(ctx, leader); err != nil {
		t.Fatalf("stop leader: %v", err)
	}
	rest := c.RouterURLs()
	if len(rest) != 2 {
		t.Fatalf("%d routers left", len(rest))
	}
	// Within 5 s of the kill, sign-up and login work through both others.
	deadline := stopped.Add(5 * time.Second)
	signup := post(t, nil, rest[0]+"/signup", `{"email":"after@acme.de",`+pw+`}`, nil)
	for signup.Status != http.StatusCreated && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		signup = post(t, nil, rest[0]+"/signup", `{"email":"after@acme.de",`+pw+`}`, nil)
	}
	elapsed := time.Since(stopped)
	expect(t, "sign-up after leader loss", signup, http.StatusCreated)
	if elapsed > 5*time.Second {
		t.Fatalf("sign-up succeeded only %s after the leader was stopped", elapsed)
	}
	t.Logf("sign-up succeeded %s after the leader (router-%d) was stopped", elapsed.Round(time.Millisecond), leader+1)
	for _, u := range rest {
		expect(t, "login before-user via "+u, post(t, rec, u+"/login", `{"email":"before@acme.de",`+pw+`}`, nil), http.StatusOK)
		expect(t, "login after-user via "+u, post(t, rec, u+"/login", `{"email":"after@acme.de",`+pw+`}`, nil), http.StatusOK)
	}
	expect(t, "duplicate after failover", post(t, rec, rest[1]+"/signup", `{"email":"after@acme.de",`+pw+`}`, nil), http.StatusConflict)
}

func portOf(t *testing.T, rawURL string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(strings.TrimPrefix(rawURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// A whole-topology restart from the same data keeps every user findable:
// no router serves a lookup before its replica has re-applied its log.
func TestRestartKeepsUsersRoutable(t *testing.T) {
	dir := t.TempDir()
	logs := &testenv.LogBuffer{}
	cfg := Config{DataDir: dir, Argon2: lightArgon2, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const pw = `"password":"correct horse battery"`
	users := []struct{ email, xff, home string }{
		{"ana@acme.de", "", "eu-west"},
		{"li@example.com", "203.0.113.9", "ap-southeast"},
		{"sam@example.com", "198.51.100.7", "us-east"},
	}
	for _, u := range users {
		res := post(t, nil, c.RouterURLs()[0]+"/signup", `{"email":"`+u.email+`",`+pw+`}`, map[string]string{"X-Forwarded-For": u.xff})
		expect(t, "sign-up "+u.email, res, http.StatusCreated)
	}
	// Same ports again: the Raft configuration on disk names them.
	cfg.RegionPorts = map[string]int{}
	for name, r := range c.Regions {
		cfg.RegionPorts[name] = portOf(t, r.URL())
	}
	for _, r := range c.Routers {
		cfg.RouterPorts = append(cfg.RouterPorts, portOf(t, r.URL()))
		cfg.RaftPorts = append(cfg.RaftPorts, portOf(t, r.Index.RaftAddr()))
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c, err = Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v\n%s", err, logs.String())
	}
	defer c.Shutdown(context.Background())
	// Log in at once, from a place whose policy region differs from home.
	for _, rt := range c.RouterURLs() {
		for _, u := range users {
			res := post(t, nil, rt+"/login", `{"email":"`+u.email+`",`+pw+`}`, map[string]string{"X-Forwarded-For": "192.0.2.1"})
			expect(t, "login after restart "+u.email+" via "+rt, res, http.StatusOK)
			if res.Body["home"] != u.home {
				t.Fatalf("%s served by %v, want %s", u.email, res.Body["home"], u.home)
			}
		}
	}
}
