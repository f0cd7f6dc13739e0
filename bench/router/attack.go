package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// attackResult is the constant-rate phase against one target.
type attackResult struct {
	Target      string         `json:"target"`
	Rate        int            `json:"rate"`
	Duration    time.Duration  `json:"duration_ns"`
	Requests    uint64         `json:"requests"`
	Throughput  float64        `json:"throughput"` // successful requests per second
	Success     float64        `json:"success"`    // ratio of 2xx/3xx responses
	P50         time.Duration  `json:"p50_ns"`
	P90         time.Duration  `json:"p90_ns"`
	P99         time.Duration  `json:"p99_ns"`
	Max         time.Duration  `json:"max_ns"`
	StatusCodes map[string]int `json:"status_codes"`
	Errors      []string       `json:"errors,omitempty"`
	OtherCPU    float64        `json:"other_cpu_pct"` // see wrkResult
}

// attackMain is the -role attack child: a warm-up, then a constant-rate
// vegeta attack of one target with the request mix; it prints one
// attackResult as JSON on stdout.
func attackMain(args []string) error {
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	target := fs.String("target", "", "target name (for the report)")
	base := fs.String("url", "", "base URL of the target")
	rate := fs.Int("rate", 5000, "requests per second")
	duration := fs.Duration("duration", 10*time.Second, "measured attack duration")
	warmup := fs.Duration("warmup", time.Second, "unreported warm-up at the same rate")
	reqFile := fs.String("requests", "", "requests.json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reqs, err := readRequests(*reqFile)
	if err != nil {
		return err
	}
	// An Attacker runs one attack; the warm-up and the measured attack
	// share this client, so the measured one starts on warm connections.
	hc := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: vegeta.DefaultConnections,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer hc.CloseIdleConnections()
	tr := targeter(*base, reqs)
	pacer := vegeta.Rate{Freq: *rate, Per: time.Second}
	if *warmup > 0 {
		for range vegeta.NewAttacker(vegeta.Client(hc)).Attack(tr, pacer, *warmup, "warmup") {
		}
	}
	var m vegeta.Metrics
	lat := make([]time.Duration, 0, int(float64(*rate)*duration.Seconds())+16)
	for res := range vegeta.NewAttacker(vegeta.Client(hc)).Attack(tr, pacer, *duration, "measure") {
		m.Add(res)
		lat = append(lat, res.Latency)
	}
	m.Close()
	slices.Sort(lat)
	out := attackResult{
		Target: *target, Rate: *rate, Duration: *duration,
		Requests: m.Requests, Throughput: m.Throughput, Success: m.Success,
		P50: quantile(lat, 0.50), P90: quantile(lat, 0.90), P99: quantile(lat, 0.99),
		StatusCodes: m.StatusCodes,
	}
	if len(lat) > 0 {
		out.Max = lat[len(lat)-1]
	}
	if len(m.Errors) > 10 {
		m.Errors = m.Errors[:10]
	}
	out.Errors = m.Errors
	return json.NewEncoder(os.Stdout).Encode(out)
}

// quantile of sorted values (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// targeter rotates over the requests; the targets are built once.
func targeter(base string, reqs []request) vegeta.Targeter {
	base = strings.TrimRight(base, "/")
	ctJSON := http.Header{"Content-Type": []string{"application/json"}}
	ts := make([]vegeta.Target, len(reqs))
	for i, r := range reqs {
		ts[i] = vegeta.Target{Method: r.Method, URL: base + r.Path}
		if r.Body != "" {
			ts[i].Body, ts[i].Header = []byte(r.Body), ctJSON
		}
	}
	var next atomic.Uint64
	return func(t *vegeta.Target) error {
		*t = ts[(next.Add(1)-1)%uint64(len(ts))]
		return nil
	}
}

// runAttack runs the attack child against one target and reads its result.
func runAttack(ctx context.Context, cs *children, self, reqFile, name, url string, rate int, d, warmup time.Duration) (attackResult, error) {
	cmd := exec.CommandContext(ctx, self, "-role", "attack", "-target", name, "-url", url,
		"-rate", strconv.Itoa(rate), "-duration", d.String(), "-warmup", warmup.String(), "-requests", reqFile)
	setChildAttrs(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cpu := startCPUMeter(cs)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return attackResult{}, ctx.Err()
		}
		return attackResult{}, fmt.Errorf("attack child (%s): %w: %s", name, err, stderr.String())
	}
	other := cpu.other(cmd) // includes the warm-up second
	var res attackResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, fmt.Errorf("attack child (%s): bad output: %w: %q", name, err, stdout.String())
	}
	res.OtherCPU = other
	return res, nil
}
