package router

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/domicile/domicile/homeindex"
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
	logs    *strings.Builder
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pol, err := residency.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	mmdb := filepath.Join(t.TempDir(), "c.mmdb")
	if err := testmmdb.Write(mmdb); err != nil {
		t.Fatal(err)
	}
	geo, err := residency.OpenGeoIP(mmdb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { geo.Close() })
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	f := &fixture{idx: &mapIndex{m: map[homeindex.Key]homeindex.Entry{}}, hasher: h, hits: map[string]int{}, servers: map[string]*httptest.Server{}, logs: &strings.Builder{}}
	urls := map[string]string{}
	for _, name := range pol.Regions() {
		name := name
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			f.mu.Lock()
			f.hits[name]++
			f.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"region":"`+name+`","xff":"`+r.Header.Get("X-Forwarded-For")+`","body":`+string(body)+`}`)
		}))
		t.Cleanup(srv.Close)
		f.servers[name] = srv
		urls[name] = srv.URL
	}
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return f.logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.rt, err = New(Config{
		Name: "r1", Policy: pol, GeoIP: geo, Regions: urls, Index: f.idx, Hasher: h,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
		Logger:         logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

func (f *fixture) do(method, path, body, remote, xff string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = remote
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	rec := httptest.NewRecorder()
	f.rt.Handler().ServeHTTP(rec, req)
	return rec
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
	if strings.Contains(strings.ToLower(f.logs.String()), "@") {
		t.Fatalf("router logs contain an email address:\n%s", f.logs.String())
	}
	if !strings.Contains(f.logs.String(), "key=") {
		t.Fatalf("router logs lack the identifier hash:\n%s", f.logs.String())
	}
}

func TestBadInputAndDownstreamFailure(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, path, body string
		status           int
	}{
		{"invalid json", "/signup", `{"email":`, 400},
		{"json array", "/login", `[]`, 400},
		{"no email", "/login", `{}`, 400},
		{"bad email", "/signup", `{"email":"a@b"}`, 400},
		{"invalid utf-8", "/signup", "{\"email\":\"\xff@acme.de\"}", 400},
		{"too big", "/signup", `{"email":"a@acme.de","p":"` + strings.Repeat("x", 17<<10) + `"}`, 413},
		{"unknown route", "/nope", `{}`, 404},
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
	rec := f.do(http.MethodPost, "/login", `{"email":"ana@acme.de","password":"x"}`, "198.51.100.7:1", "")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("region down: HTTP %d, headers %v, body %s", rec.Code, rec.Header(), rec.Body)
	}
}

func BenchmarkResolve(b *testing.B) {
	pol, _ := residency.Parse([]byte(testPolicy))
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	idx := &mapIndex{m: map[homeindex.Key]homeindex.Entry{}}
	rt, err := New(Config{Name: "b", Policy: pol, Regions: map[string]string{"eu-west": "http://a", "us-east": "http://b", "ap-southeast": "http://c"}, Index: idx, Hasher: h})
	if err != nil {
		b.Fatal(err)
	}
	client := netip.MustParseAddr("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		k := h.EmailKey("ana@acme.de")
		if r, _, _ := rt.resolve(k, "ana@acme.de", client); r != "eu-west" {
			b.Fatal(r)
		}
	}
}
