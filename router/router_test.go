package router

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/internal/testmmdb"
	"github.com/domicile/domicile/residency"
)

const testPolicy = `
version: 1
regions:
  eu-west:      {jurisdiction: EU, countries: [DE, FR]}
  us-east:      {jurisdiction: US, countries: [US]}
  ap-southeast: {jurisdiction: SG, countries: [SG]}
default: us-east
email_domains: {"acme.de": eu-west, "*.gov.uk": eu-west}
`

// mapIndex is an in-memory stand-in for the replica (the Raft replica has
// its own tests); it lets these tests set exactly what the index knows.
type mapIndex struct {
	mu sync.Mutex
	m  map[homeindex.Key]homeindex.Entry
}

func (x *mapIndex) Lookup(k homeindex.Key) (homeindex.Entry, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.m[k]
	return e, ok
}
func (x *mapIndex) Ready() bool    { return true }
func (x *mapIndex) CaughtUp() bool { return true }

type fixture struct {
	rt      *Router
	idx     *mapIndex
	hasher  *homeindex.Hasher
	hits    map[string]int
	mu      sync.Mutex
	servers map[string]*httptest.Server
	logs    testenv.LogBuffer
}

// debugLogger is a debug-level logger that writes to l.
func debugLogger(l *testenv.LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testGeoIP opens the bundled test geo-IP database (documentation ranges
// mapped to countries), closed when the test ends.
func testGeoIP(tb testing.TB) *residency.GeoIP {
	tb.Helper()
	mmdb := filepath.Join(tb.TempDir(), "c.mmdb")
	if err := testmmdb.Write(mmdb); err != nil {
		tb.Fatal(err)
	}
	geo, err := residency.OpenGeoIP(mmdb)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { geo.Close() })
	return geo
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pol, err := residency.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	geo := testGeoIP(t)
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	f := &fixture{idx: &mapIndex{m: map[homeindex.Key]homeindex.Entry{}}, hasher: h, hits: map[string]int{}, servers: map[string]*httptest.Server{}}
	urls := map[string][]string{}
	for _, name := range pol.Regions() {
		name := name
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/internal/") {
				return // health checks and key fetches are not counted
			}
			f.mu.Lock()
			f.hits[name]++
			f.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"region":"`+name+`","xff":"`+r.Header.Get("X-Forwarded-For")+`","body":`+string(body)+`}`)
		}))
		t.Cleanup(srv.Close)
		f.servers[name] = srv
		urls[name] = []string{srv.URL}
	}
	f.rt, err = New(Config{
		Name: "r1", Policy: pol, GeoIP: geo, Regions: urls, Index: f.idx, Hasher: h,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
		Logger:         debugLogger(&f.logs), RouteKey: testRouteKey,
		Health: HealthConfig{Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.rt.startLoops()
	t.Cleanup(func() { f.rt.Shutdown(context.Background()) })
	return f
}

var testRouteKey = []byte(strings.Repeat("r", 32))

// reply is a response from the router, as a test sees it.
type reply struct {
	Code   int
	header http.Header
	Body   *strings.Builder
}

func (r *reply) Header() http.Header { return r.header }

// do runs one request through the router's handler with the given peer
// address (so that geo-IP and trusted-proxy rules can be exercised).
func (f *fixture) do(method, path, body, remote, xff string) *reply {
	return f.doH(method, path, body, remote, map[string]string{"Content-Type": "application/json", "X-Forwarded-For": xff})
}

func (f *fixture) doH(method, path, body, remote string, headers map[string]string) *reply {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetHost("id.example.com")
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	req.SetBodyString(body)
	req.Header.SetContentLength(len(body))
	return serve(f.rt, &req, remote)
}

// serve runs req through rt's handler from the peer address remote and
// collects the response, streamed or not.
func serve(rt *Router, req *fasthttp.Request, remote string) *reply {
	var ctx fasthttp.RequestCtx
	ctx.Init(req, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(remote)), nil)
	rt.FastHandler()(&ctx)
	r := &reply{Code: ctx.Response.StatusCode(), header: http.Header{}, Body: &strings.Builder{}}
	for k, v := range ctx.Response.Header.All() {
		r.header.Add(string(k), string(v))
	}
	if s := ctx.Response.BodyStream(); s != nil {
		io.Copy(r.Body, s)
		ctx.Response.CloseBodyStream()
	} else {
		r.Body.Write(ctx.Response.Body())
	}
	return r
}

func TestResolutionSources(t *testing.T) {
	f := newFixture(t)
	known, _ := homeindex.NormalizeEmail("Known@Example.com")
	f.idx.m[f.hasher.EmailKey(known)] = homeindex.Entry{Region: "ap-southeast", Owner: homeindex.OwnerOf("ap-southeast.x")}
	tests := []struct {
		name, email, remote, xff, want string
	}{
		{"index wins over everything", "known@example.com", "192.0.2.1:1", "", "ap-southeast"},
		{"index key is normalised", "  KNOWN@example.COM ", "192.0.2.1:1", "", "ap-southeast"},
		{"exact email domain", "ana@acme.de", "198.51.100.7:1", "", "eu-west"},
		{"wildcard email domain", "x@tax.gov.uk", "203.0.113.9:1", "", "eu-west"},
		{"country of the peer", "x@example.com", "203.0.113.9:1", "", "ap-southeast"},
		{"country via trusted proxy", "x@example.com", "192.168.1.1:1", "192.0.2.44", "eu-west"},
		{"forged XFF from untrusted peer ignored", "x@example.com", "198.51.100.7:1", "203.0.113.9", "us-east"},
		{"default", "x@example.com", "8.8.8.8:1", "", "us-east"},
		{"ipv6 country", "x@example.com", "[2001:db8::5]:1", "", "eu-west"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := f.do(http.MethodPost, "/signup", `{"email":"`+tt.email+`","password":"pw"}`, tt.remote, tt.xff)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), `"region":"`+tt.want+`"`) {
				t.Fatalf("forwarded to the wrong region: %s (want %s)", rec.Body, tt.want)
			}
			// The body reaches the region unchanged.
			if !strings.Contains(rec.Body.String(), `"password":"pw"`) {
				t.Fatalf("body not forwarded intact: %s", rec.Body)
			}
		})
	}
	logs := f.logs.String()
	if strings.Contains(strings.ToLower(logs), "@") {
		t.Fatalf("router logs contain an email address:\n%s", logs)
	}
	if !strings.Contains(logs, "key=") {
		t.Fatalf("router logs lack the identifier hash:\n%s", logs)
	}
}

func TestBadInputAndDownstreamFailure(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, path, body string
		status           int
	}{
		{"invalid json", "/signup", `{"email":`, 400},
		{"identifier not a string", "/login", `{"email":17}`, 400},
		{"bad email", "/signup", `{"email":"a@b"}`, 400},
		{"invalid utf-8", "/signup", "{\"email\":\"\xff@acme.de\"}", 400},
		{"too big", "/signup", `{"email":"a@acme.de","p":"` + strings.Repeat("x", 17<<10) + `"}`, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := f.do(http.MethodPost, tt.path, tt.body, "198.51.100.7:1", "")
			if rec.Code != tt.status {
				t.Fatalf("HTTP %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	if n := f.hits["eu-west"] + f.hits["us-east"] + f.hits["ap-southeast"]; n != 0 {
		t.Fatalf("bad input reached a region %d times", n)
	}
	// A region that is down: 503 problem+json with Retry-After.
	f.servers["eu-west"].Close()
	testenv.WaitFor(t, 5*time.Second, "eu-west ejected", func() bool { return f.rt.pools["eu-west"].healthyCount() == 0 })
	rec := f.do(http.MethodPost, "/login", `{"email":"ana@acme.de","password":"x"}`, "198.51.100.7:1", "")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("region down: HTTP %d, headers %v, body %s", rec.Code, rec.Header(), rec.Body)
	}
}

// BenchmarkResolve is the router's resolution of one request: reading the
// identifier from a JSON body, normalising and hashing it, the index lookup
// (a hit), and, for a new user, the policy with geo-IP.
func BenchmarkResolve(b *testing.B) {
	pol, _ := residency.Parse([]byte(testPolicy))
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	idx := &mapIndex{m: map[homeindex.Key]homeindex.Entry{}}
	idx.m[h.EmailKey("ana@example.com")] = homeindex.Entry{Region: "ap-southeast"}
	geo := testGeoIP(b)
	rt, err := New(Config{Name: "b", Policy: pol, GeoIP: geo, Regions: map[string][]string{"eu-west": {"http://a"}, "us-east": {"http://b"}, "ap-southeast": {"http://c"}}, Index: idx, Hasher: h, RouteKey: testRouteKey})
	if err != nil {
		b.Fatal(err)
	}
	client := netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct{ name, body, want, source string }{
		{"index-hit", `{"email":"ana@example.com","password":"correct horse battery"}`, "ap-southeast", srcIndex},
		{"new-user-email-domain", `{"email":"bob@acme.de","password":"correct horse battery"}`, "eu-west", "email_domain"},
		{"new-user-country", `{"email":"bob@example.net","password":"correct horse battery"}`, "ap-southeast", "country"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			var req fasthttp.Request
			req.Header.SetMethod("POST")
			req.SetRequestURI("/login")
			req.Header.SetContentType("application/json")
			req.SetBodyString(tc.body)
			req.Header.SetContentLength(len(tc.body))
			ctx.Init(&req, net.TCPAddrFromAddrPort(netip.AddrPortFrom(client, 1)), nil)
			b.ReportAllocs()
			for b.Loop() {
				p := rt.parsers.Get()
				id, perr := rt.identify(&ctx, p)
				rt.parsers.Put(p)
				if perr != nil {
					b.Fatal(perr)
				}
				r, perr := rt.resolveID(&id, client, time.Time{})
				if perr != nil || r.region != tc.want || r.source != tc.source {
					b.Fatal(r, perr)
				}
			}
		})
	}
}

// TestMetricsAfterMixedMethods sends requests with different methods to the
// router's own (echo) routes over one keep-alive connection, then scrapes
// /metrics: the scrape succeeds and every method label is a real method.
// (The fasthttp-to-net/http bridge hands echo strings that alias buffers
// reused by the next request; a label kept from one would change under the
// registry.)
func TestMetricsAfterMixedMethods(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	rt := newTestRouter(t, map[string][]string{"eu-west": {up.URL}, "us-east": {up.URL}, "ap-southeast": {up.URL}}, RateLimits{})
	url := startRouter(t, rt)
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	for i := range 30 {
		method := []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPut, http.MethodPatch, "PROPFIND"}[i%6]
		req, _ := http.NewRequest(method, url+[]string{"/healthz", "/readyz", "/.well-known/openid-configuration"}[i%3], nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := c.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d: %s", resp.StatusCode, body)
	}
	valid := map[string]bool{"GET": true, "POST": true, "DELETE": true, "PUT": true, "PATCH": true, "HEAD": true, "OPTIONS": true, "other": true}
	n := 0
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, "domicile_http_requests_total{") {
			continue
		}
		n++
		i := strings.Index(line, `method="`)
		if i < 0 {
			t.Fatalf("no method label: %s", line)
		}
		m := line[i+len(`method="`):]
		m = m[:strings.IndexByte(m, '"')]
		if !valid[m] {
			t.Errorf("method label %q: %s", m, line)
		}
	}
	if n == 0 {
		t.Fatalf("no domicile_http_requests_total in /metrics:\n%s", body)
	}
}
