package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/residency"
	"github.com/valyala/fasthttp"
)

// seen counts, per request id, how many times any node received it.
type seen struct {
	mu  sync.Mutex
	ids map[string]int
}

func (s *seen) handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/internal/") {
			return
		}
		s.mu.Lock()
		s.ids[r.Header.Get(HeaderRequestID)]++
		s.mu.Unlock()
		time.Sleep(2 * time.Millisecond) // requests are in flight when a node dies
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"node":%q}`, name)
	})
}

// startRouter serves rt on a real listener.
func startRouter(t *testing.T, rt *Router) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go rt.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rt.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String()
}

func newTestRouter(t testing.TB, regions map[string][]string, limits RateLimits) *Router {
	t.Helper()
	pol, err := residency.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	rt, err := New(Config{
		Name: "r1", Policy: pol, Regions: regions, Index: &mapIndex{m: map[homeindex.Key]homeindex.Entry{}}, Hasher: h,
		RouteKey: testRouteKey, RateLimits: limits,
		Health: HealthConfig{Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// TestNodeKilledUnderLoad: one of eu-west's two nodes dies under a load of
// sign-ups (not idempotent). It is ejected, the other node serves
// everything after that, and no request reaches a node twice.
func TestNodeKilledUnderLoad(t *testing.T) {
	s := &seen{ids: map[string]int{}}
	a := httptest.NewServer(s.handler("a"))
	b := httptest.NewServer(s.handler("b"))
	defer b.Close()
	other := httptest.NewServer(s.handler("other"))
	defer other.Close()
	off := RateLimits{PerIP: Limit{Rate: -1}, PerIdentifier: Limit{Rate: -1}}
	rt := newTestRouter(t, map[string][]string{"eu-west": {a.URL, b.URL}, "us-east": {other.URL}, "ap-southeast": {other.URL}}, off)
	url := startRouter(t, rt)

	var (
		n         atomic.Int64
		byCode    sync.Map
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		ejectedAt atomic.Int64 // unix nanos when the test saw the ejection
		afterOK   atomic.Int64
		afterKO   atomic.Int64
	)
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				started := time.Now().UnixNano()
				req, _ := http.NewRequest(http.MethodPost, url+"/signup", strings.NewReader(`{"email":"u`+id+`@acme.de","password":"x"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(HeaderRequestID, id)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("request %s: %v", id, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				n.Add(1)
				c, _ := byCode.LoadOrStore(resp.StatusCode, new(atomic.Int64))
				c.(*atomic.Int64).Add(1)
				if at := ejectedAt.Load(); at != 0 && started > at {
					if resp.StatusCode == http.StatusOK {
						afterOK.Add(1)
					} else {
						afterKO.Add(1)
					}
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	a.CloseClientConnections()
	a.Listener.Close()
	testenv.WaitFor(t, 5*time.Second, "node a ejected", func() bool { return rt.pools["eu-west"].healthyCount() == 1 })
	ejectedAt.Store(time.Now().UnixNano())
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()

	codes := map[int]int64{}
	byCode.Range(func(k, v any) bool { codes[k.(int)] = v.(*atomic.Int64).Load(); return true })
	t.Logf("%d requests; by status %v; after ejection %d ok, %d not", n.Load(), codes, afterOK.Load(), afterKO.Load())
	s.mu.Lock()
	for id, k := range s.ids {
		if k > 1 {
			t.Errorf("request %s reached a node %d times: a non-idempotent request was replayed", id, k)
		}
	}
	s.mu.Unlock()
	for code := range codes {
		if code != http.StatusOK && code != http.StatusBadGateway {
			t.Errorf("unexpected status %d (%d times)", code, codes[code])
		}
	}
	if afterOK.Load() == 0 || afterKO.Load() != 0 {
		t.Errorf("after the ejection: %d ok, %d failed; want all ok", afterOK.Load(), afterKO.Load())
	}
	if !rt.pools["eu-west"].nodes[1].healthy.Load() {
		t.Error("the surviving node was ejected")
	}
}

// TestNodeReturnsAfterRecovery: an ejected node comes back after Rise good
// checks.
func TestNodeReturnsAfterRecovery(t *testing.T) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	rt := newTestRouter(t, map[string][]string{"eu-west": {srv.URL}, "us-east": {srv.URL}, "ap-southeast": {srv.URL}}, RateLimits{})
	startRouter(t, rt)
	down.Store(true)
	testenv.WaitFor(t, 5*time.Second, "ejected", func() bool { return rt.pools["eu-west"].healthyCount() == 0 })
	down.Store(false)
	testenv.WaitFor(t, 5*time.Second, "back in service", func() bool { return rt.pools["eu-west"].healthyCount() == 1 })
}

// TestCredentialRateLimits: a burst of logins for one identifier is cut
// off with 429 and Retry-After; another identifier from the same address is
// not affected until the per-address limit.
func TestCredentialRateLimits(t *testing.T) {
	s := &seen{ids: map[string]int{}}
	up := httptest.NewServer(s.handler("up"))
	defer up.Close()
	rt := newTestRouter(t, map[string][]string{"eu-west": {up.URL}, "us-east": {up.URL}, "ap-southeast": {up.URL}},
		RateLimits{PerIdentifier: Limit{Rate: 0.1, Burst: 3}, PerIP: Limit{Rate: 0.1, Burst: 6}})
	url := startRouter(t, rt)
	post := func(path, email string) *http.Response {
		resp, err := http.Post(url+path, "application/json", strings.NewReader(`{"email":"`+email+`","password":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := range 3 {
		if resp := post("/login", "ana@acme.de"); resp.StatusCode != http.StatusOK {
			t.Fatalf("attempt %d: HTTP %d", i, resp.StatusCode)
		}
	}
	resp := post("/login", "ANA@acme.de") // the same identifier, normalised
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("4th attempt: HTTP %d, headers %v", resp.StatusCode, resp.Header)
	}
	// Not a credential endpoint: no limit.
	for range 5 {
		if resp := post("/profile", "ana@acme.de"); resp.StatusCode != http.StatusOK {
			t.Fatalf("non-credential path limited: HTTP %d", resp.StatusCode)
		}
	}
	// Another identifier from the same address: allowed until the address's burst (6) is spent.
	codes := []int{}
	for range 4 {
		codes = append(codes, post("/signup", "bo@acme.de").StatusCode)
	}
	if fmt.Sprint(codes) != "[200 200 429 429]" {
		t.Fatalf("per-address limit: %v, want [200 200 429 429]", codes)
	}
}

// TestStreamingAndHeaderHygiene: large bodies go through in both directions
// without being held whole; hop-by-hop headers, headers named by
// Connection and client-sent Domicile- headers do not reach the region;
// the router adds X-Forwarded-*, Forwarded, a request id and a route
// header.
func TestStreamingAndHeaderHygiene(t *testing.T) {
	const upBytes, downBytes = 8 << 20, 16 << 20
	var got http.Header
	var gotLen int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/internal/") {
			return
		}
		got = r.Header.Clone()
		gotLen, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/download" {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Connection", "X-Upstream-Secret")
			w.Header().Set("X-Upstream-Secret", "1")
			chunk := make([]byte, 64<<10)
			for sent := 0; sent < downBytes; sent += len(chunk) {
				w.Write(chunk)
			}
		}
	}))
	defer up.Close()
	rt := newTestRouter(t, map[string][]string{"eu-west": {up.URL}, "us-east": {up.URL}, "ap-southeast": {up.URL}}, RateLimits{})
	url := startRouter(t, rt)

	req, _ := http.NewRequest(http.MethodPut, url+"/upload?x=1", io.LimitReader(zeros{}, upBytes))
	req.ContentLength = upBytes
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "secret")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Domicile-Home-Rule", "forged")
	req.Header.Set("Domicile-Route", "forged")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || gotLen != upBytes {
		t.Fatalf("upload: HTTP %d, region got %d of %d bytes", resp.StatusCode, gotLen, upBytes)
	}
	for _, h := range []string{"X-Hop", "Proxy-Authorization", "Domicile-Home-Rule"} {
		if v := got.Get(h); v != "" {
			t.Errorf("region received %s: %q", h, v)
		}
	}
	if v := got.Get("Domicile-Route"); v == "forged" || !strings.HasPrefix(v, "v1;r=") {
		t.Errorf("route header %q", v)
	}
	if got.Get("X-Forwarded-For") != "127.0.0.1" || got.Get("Forwarded") != "for=127.0.0.1;proto=http" ||
		got.Get("X-Forwarded-Proto") != "http" || got.Get(HeaderRequestID) == "" || got.Get(HeaderRouter) != "r1" {
		t.Errorf("forwarding headers: %v", got)
	}

	resp, err = http.Get(url + "/download")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != downBytes {
		t.Fatalf("download: %d of %d bytes, %v", n, downBytes, err)
	}
	if resp.Header.Get("X-Upstream-Secret") != "" {
		t.Error("a response header named by Connection reached the client")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestStripHop parses requests and responses carrying every hop-by-hop
// header (in odd cases) and checks that exactly those, the headers
// Connection names and (on requests) the Domicile- ones are removed.
func TestStripHop(t *testing.T) {
	hop := "Connection: keep-alive, X-Named\r\nX-Named: 1\r\nproxy-connection: keep-alive\r\nKEEP-ALIVE: timeout=5\r\n" +
		"Proxy-Authenticate: Basic\r\nProxy-Authorization: Basic Zm9v\r\nTE: trailers\r\nUpgrade: h2c\r\n"
	keep := []string{"X-Keep", "Accept", "X-Te", "Keep-Alive-Not"}
	kept := "X-Keep: 1\r\nAccept: */*\r\nX-Te: 1\r\nKeep-Alive-Not: 1\r\n"
	gone := []string{"Connection", "X-Named", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Upgrade"}

	var req fasthttp.Request
	raw := "GET /x HTTP/1.1\r\nHost: h\r\n" + hop + kept + "Domicile-Route: forged\r\n\r\n"
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	if !stripRequest(&req.Header) {
		t.Fatal("stripRequest refused valid header names")
	}
	checkStripped(t, "request", req.Header.Peek, append(gone, "Domicile-Route"), keep)

	// Connection: close from the client is not sent on.
	req.Reset()
	if err := req.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	stripRequest(&req.Header)
	if req.Header.ConnectionClose() {
		t.Error("the client's Connection: close would be sent to the region")
	}
	// An invalid header name refuses the request.
	req.Reset()
	req.Header.Set("X-Ok", "1")
	req.Header.DisableNormalizing()
	req.Header.Set("Bad Name", "1")
	if stripRequest(&req.Header) {
		t.Error("a header name with a space was accepted")
	}

	var resp fasthttp.Response
	raw = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + hop + kept + "Trailer: X-Sum\r\n\r\n"
	if err := resp.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	stripResponse(&resp.Header)
	checkStripped(t, "response", resp.Header.Peek, append(gone, "Trailer"), keep)
}

// checkStripped checks that a message (peek reads its headers) has none of
// gone and all of keep.
func checkStripped(t *testing.T, what string, peek func(string) []byte, gone, keep []string) {
	t.Helper()
	for _, h := range gone {
		if v := peek(h); len(v) > 0 {
			t.Errorf("%s still has %s: %q", what, h, v)
		}
	}
	for _, h := range keep {
		if len(peek(h)) == 0 {
			t.Errorf("%s lost %s", what, h)
		}
	}
}
