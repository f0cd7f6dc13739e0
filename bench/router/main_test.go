package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const wrkSample = `Running 3s test @ http://127.0.0.1:41677
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms    2.03ms  41.62ms   94.22%
    Req/Sec    27.31k     3.05k   33.41k    71.67%
  Latency Distribution
     50%  798.00us
     75%    1.12ms
     90%    2.01ms
     99%    1.20s
  163122 requests in 3.00s, 17.89MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 25
Requests/sec:  54327.81
Transfer/sec:      5.96MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 163122, RPS: 54327.81, P50: 798 * time.Microsecond, P75: 1120 * time.Microsecond,
		P90: 2010 * time.Microsecond, P99: 1200 * time.Millisecond, Non2xx: 25, SocketErrors: socketErrors{Read: 3, Timeout: 7}}
	r.Output = ""
	if r.Requests != want.Requests || r.RPS != want.RPS || r.P50 != want.P50 || r.P75 != want.P75 ||
		r.P90 != want.P90 || r.P99 != want.P99 || r.Non2xx != want.Non2xx || r.SocketErrors != want.SocketErrors {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Fatal("parsed a failed run")
	}
}

func TestBuildRequests(t *testing.T) {
	m, err := parseMix("50,10,40")
	if err != nil {
		t.Fatal(err)
	}
	reqs := buildRequests(m, 1000)
	count := map[string]int{}
	users := map[string]bool{}
	for i, r := range reqs {
		count[r.Kind]++
		if r.Kind == "login" {
			users[r.Body] = true
		}
		// Interleaved: no run of 10 requests lacks a login.
		if i >= 10 && !strings.Contains(reqs[i-10].Kind+reqs[i-9].Kind+reqs[i-8].Kind+reqs[i-7].Kind+reqs[i-6].Kind+
			reqs[i-5].Kind+reqs[i-4].Kind+reqs[i-3].Kind+reqs[i-2].Kind+reqs[i-1].Kind, "login") {
			t.Fatalf("no login in the 10 requests before %d", i)
		}
	}
	if count["login"] != 1000 || count["signup"] != 200 || count["hello"] != 800 {
		t.Fatalf("kinds %v, want login 1000, signup 200, hello 800", count)
	}
	if len(users) != 1000 {
		t.Fatalf("%d distinct login bodies, want 1000", len(users))
	}
	for _, bad := range []string{"", "1,2", "a,b,c", "0,0,0", "-1,2,3"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) accepted", bad)
		}
	}
}

// TestLuaScript checks that wrk can load the generated script (when wrk
// is installed): wrk -d1s against a closed port still runs setup/init.
func TestLuaScript(t *testing.T) {
	m, _ := parseMix("50,10,40")
	path := filepath.Join(t.TempDir(), "mix.lua")
	if err := writeLuaScript(path, buildRequests(m, 100), 2); err != nil {
		t.Fatal(err)
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed")
	}
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(wrk, "-t2", "-c2", "-d1s", "-s", path, "http://"+addr).CombinedOutput()
	if strings.Contains(string(out), "script") || strings.Contains(string(out), ".lua") {
		t.Fatalf("wrk rejects the script:\n%s", out)
	}
}

func TestCheckPolicy(t *testing.T) {
	if err := checkPolicy(); err != nil {
		t.Fatal(err)
	}
}
