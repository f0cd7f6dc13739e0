// Package wrk runs the wrk HTTP load generator (wrk 4.x, Debian package
// wrk) and parses its report, for the bench tools.
package wrk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Result is one wrk run's report.
type Result struct {
	Requests     int64         `json:"requests"`
	RPS          float64       `json:"requests_per_sec"`
	P50          time.Duration `json:"p50_ns"`
	P75          time.Duration `json:"p75_ns"`
	P90          time.Duration `json:"p90_ns"`
	P99          time.Duration `json:"p99_ns"`
	Non2xx       int64         `json:"non_2xx_3xx"`
	SocketErrors SocketErrors  `json:"socket_errors"`
	Output       string        `json:"wrk_output"`
}

// SocketErrors are wrk's socket error counts.
type SocketErrors struct {
	Connect int64 `json:"connect"`
	Read    int64 `json:"read"`
	Write   int64 `json:"write"`
	Timeout int64 `json:"timeout"`
}

// Total is the sum of the counts.
func (s SocketErrors) Total() int64 { return s.Connect + s.Read + s.Write + s.Timeout }

// Options are wrk's command-line settings.
type Options struct {
	Bin         string // default "wrk"
	Script      string // Lua script (-s), optional
	Threads     int
	Connections int
	Duration    time.Duration
}

// Args returns wrk's arguments for a run against url (with --latency).
func (o Options) Args(url string) []string {
	secs := max(int(o.Duration.Round(time.Second)/time.Second), 1)
	args := []string{"-t" + strconv.Itoa(o.Threads), "-c" + strconv.Itoa(o.Connections), "-d" + strconv.Itoa(secs) + "s", "--latency"}
	if o.Script != "" {
		args = append(args, "-s", o.Script)
	}
	return append(args, url)
}

// Run runs wrk against url and parses its report.
func Run(ctx context.Context, o Options, url string) (Result, error) {
	bin := o.Bin
	if bin == "" {
		bin = "wrk"
	}
	args := o.Args(url)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return Result{}, fmt.Errorf("wrk %s: %w: %s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	res, err := Parse(stdout.String())
	if err != nil {
		return res, fmt.Errorf("wrk %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return res, nil
}

var (
	reRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reTotal  = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	rePct    = regexp.MustCompile(`(?m)^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	reSocket = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	timeMul  = map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
)

// Parse reads wrk's text report (wrk 4.x with --latency).
func Parse(out string) (Result, error) {
	r := Result{Output: out}
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no Requests/sec line in wrk output")
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m = reTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	found := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := rePct.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		d := time.Duration(math.Round(v * timeMul[m[3]]))
		switch m[1] {
		case "50":
			r.P50 = d
		case "75":
			r.P75 = d
		case "90":
			r.P90 = d
		case "99":
			r.P99 = d
		}
		found++
	}
	if found < 4 {
		return r, errors.New("no latency distribution in wrk output (was --latency passed?)")
	}
	if m = reSocket.FindStringSubmatch(out); m != nil {
		p := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
		r.SocketErrors = SocketErrors{p(m[1]), p(m[2]), p(m[3]), p(m[4])}
	}
	if m = reNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}
