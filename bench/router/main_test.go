package main

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

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

func TestRoundRatio(t *testing.T) {
	runs := func(rps ...float64) *row {
		r := &row{}
		for _, v := range rps {
			var w wrkResult
			w.RPS = v
			r.Runs = append(r.Runs, w)
		}
		return r
	}
	nginx := runs(100, 200, 50)
	got, ok := roundRatio(runs(90, 150, 50), nginx) // 0.9, 0.75, 1.0
	if !ok || got != 0.9 {
		t.Fatalf("roundRatio = %v, %v; want 0.9", got, ok)
	}
	if _, ok := roundRatio(runs(90, 150), nginx); ok {
		t.Fatal("rounds that do not pair up gave a ratio")
	}
	if _, ok := roundRatio(runs(90), nil); ok {
		t.Fatal("no nginx row gave a ratio")
	}
}

func TestBudgetTargets(t *testing.T) {
	c := config{Mix: "50,10,40", Duration: time.Second, Connections: 64, Threads: 2, Rounds: 1, Users: 1, NginxWorkers: 1}
	if err := c.validate("domicile,nginx,fasthttp", "2us,1us,2us"); err != nil {
		t.Fatal(err)
	}
	want := []string{"nginx", "fasthttp", "fasthttp+2µs", "fasthttp+1µs", "domicile"}
	if !slices.Equal(c.Targets, want) {
		t.Fatalf("targets %v, want %v (budget targets after the bare proxy, before domicile, once each)", c.Targets, want)
	}
	if !slices.Equal(c.Budget, []time.Duration{2 * time.Microsecond, time.Microsecond}) {
		t.Fatalf("budget %v", c.Budget)
	}
	for _, bad := range []string{"0s", "-1us", "2ms", "x"} {
		c := config{Mix: "50,10,40", Duration: time.Second, Connections: 64, Threads: 2, Rounds: 1, Users: 1, NginxWorkers: 1}
		if err := c.validate("nginx", bad); err == nil || !strings.Contains(err.Error(), "-budget") {
			t.Errorf("-budget %q: err %v, want a -budget error", bad, err)
		}
	}
}
