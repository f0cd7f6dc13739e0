package router

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawUpstream answers each request with the bytes scripted for its path,
// as a region node might send them, and counts the connections that carried
// the scripted paths.
type rawUpstream struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   map[net.Conn]bool // connections that served a /t/ path
	scripts map[string]string // path → raw response; "" after the head: close
}

// closeAfter ends a script whose connection is closed after it is sent;
// pause splits a script in two writes 20 ms apart.
const (
	closeAfter = "\x00close"
	pause      = "\x00pause"
)

func startRawUpstream(t *testing.T, scripts map[string]string) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, conns: map[net.Conn]bool{}, scripts: scripts}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		script, ok := u.scripts[req.URL.Path]
		switch {
		case !ok && req.URL.Path == "/healthz":
			script = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
		case !ok:
			script = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
		default:
			u.mu.Lock()
			u.conns[c] = true
			u.mu.Unlock()
		}
		if req.Method == http.MethodHead {
			script, _, _ = strings.Cut(script, "\r\n\r\n")
			script += "\r\n\r\n"
		}
		script, closing := strings.CutSuffix(script, closeAfter)
		first, rest, paused := strings.Cut(script, pause)
		if _, err := io.WriteString(c, first); err != nil {
			return
		}
		if paused {
			time.Sleep(20 * time.Millisecond)
			if _, err := io.WriteString(c, rest); err != nil {
				return
			}
		}
		if closing {
			return
		}
	}
}

func (u *rawUpstream) connCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

// TestRegionResponses: every shape of response a region node may send
// (short and long bodies of known length, chunked with a trailer, interim
// responses, no body, a body delimited by closing the connection, HEAD)
// reaches the client intact, and the connection to the node is reused
// after each of them unless the response ended it. A body cut short is a
// 502 when the router holds it, and a broken download when it streams it;
// an upgrade the router did not ask for is a 502; the connection any of
// these came on is not reused.
func TestRegionResponses(t *testing.T) {
	big := strings.Repeat("b", maxBufferedBody+1000)
	up := startRawUpstream(t, map[string]string{
		"/t/small":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"/t/big":       "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big,
		"/t/chunked":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n" + pause + "X-Sum: 1\r\n\r\n",
		"/t/bigchunks": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("400\r\n"+strings.Repeat("c", 1024)+"\r\n", 100) + "0\r\n\r\n",
		"/t/interim":   "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/t/empty":     "HTTP/1.1 204 No Content\r\n\r\n",
		"/t/upgrade":   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
		"/t/close":     "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end" + closeAfter,
		"/t/short":     "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" + closeAfter,
		"/t/bigshort":  "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big[:len(big)/2] + closeAfter,
	})
	u := "http://" + up.ln.Addr().String()
	rt := newTestRouter(t, map[string][]string{"eu-west": {u}, "us-east": {u}, "ap-southeast": {u}}, RateLimits{})
	url := startRouter(t, rt)
	client := &http.Client{}

	get := func(method, path string) (int, string, http.Header, error) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header, err
	}
	for _, tt := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/t/small", 200, "hello"},
		{"GET", "/t/big", 200, big},
		{"HEAD", "/t/big", 200, ""},
		{"GET", "/t/chunked", 200, "hello world"},
		{"GET", "/t/bigchunks", 200, strings.Repeat("c", 100*1024)},
		{"GET", "/t/interim", 200, "ok"},
		{"GET", "/t/empty", 204, ""},
		{"GET", "/t/small", 200, "hello"},
	} {
		status, body, h, err := get(tt.method, tt.path)
		if err != nil || status != tt.status || body != tt.body {
			t.Fatalf("%s %s: HTTP %d, %d bytes (%.20q), %v; want %d, %d bytes", tt.method, tt.path, status, len(body), body, err, tt.status, len(tt.body))
		}
		if tt.path == "/t/small" && h.Get("Content-Type") != "text/plain" {
			t.Fatalf("content type %q", h.Get("Content-Type"))
		}
		if h.Get("X-Sum") != "" {
			t.Fatal("a trailer was forwarded as a header")
		}
	}
	if n := up.connCount(); n != 1 {
		t.Fatalf("the requests above took %d connections to the node, want 1 (reused)", n)
	}

	if status, body, _, err := get("GET", "/t/close"); err != nil || status != 200 || body != "until the end" {
		t.Fatalf("close-delimited body: HTTP %d %q %v", status, body, err)
	}
	if status, body, _, err := get("GET", "/t/upgrade"); err != nil || status != http.StatusBadGateway || !strings.Contains(body, "switched protocols") {
		t.Fatalf("unasked upgrade: HTTP %d %q %v, want 502", status, body, err)
	}
	if status, body, _, err := get("GET", "/t/short"); err != nil || status != http.StatusBadGateway || !strings.Contains(body, "incomplete") {
		t.Fatalf("short body: HTTP %d %q %v, want 502", status, body, err)
	}
	if _, body, _, err := get("GET", "/t/bigshort"); err == nil && len(body) == len(big) {
		t.Fatal("a streamed body cut short reached the client whole")
	}
	if status, body, _, err := get("GET", "/t/small"); err != nil || status != 200 || body != "hello" {
		t.Fatalf("after the broken responses: HTTP %d %q %v", status, body, err)
	}
	// Each of the four responses that ended their connection left the
	// next request a new one.
	if n := up.connCount(); n != 5 {
		t.Fatalf("%d connections to the node, want 5", n)
	}
	// The transport observed the latency of every response head it read
	// (the 13 above; the health checks go through another client).
	_, metrics, _, err := get("GET", "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var observed int
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "domicile_router_upstream_duration_seconds_count{") {
			n, _ := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
			observed += n
		}
	}
	if observed != 13 {
		t.Fatalf("upstream latency observed %d times, want 13", observed)
	}
}
