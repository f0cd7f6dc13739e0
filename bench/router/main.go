// Command router measures the Domicile router against a plain nginx
// reverse proxy and against the upstream itself, in one run on one
// machine, with the same upstream and the same request mix, and prints a
// markdown table.
//
//	go run ./bench/router                       # full run (about 2 minutes)
//	go run ./bench/router -duration 3s -latency-duration 3s -rounds 1
//	go run ./bench/router -targets direct,nginx -json out.json
//
// Targets: direct (the upstream), nginx (worker_processes 1, keep-alive
// upstream pool), fasthttp (a bare valyala/fasthttp proxy) and domicile
// (one router with a single-voter home index, every region pointing at the
// upstream, -users identifiers pre-claimed). -budget 1us,2us adds bare
// proxies that busy-spend that long on every request ("fasthttp+2µs"): the
// ratio to nginx that a given amount of the router's own work allows.
// The upstream, nginx, the router and the vegeta attacker each run as a
// child process (the bench binary re-executes itself with -role). Needs
// wrk and nginx: apt-get install wrk nginx-light.
//
// Two phases: saturation (wrk -t2 -c64 --latency, -rounds rounds of
// direct, nginx, domicile; medians reported) and constant rate (vegeta at
// -rate req/s, in its own process).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var allTargets = []string{"direct", "nginx", "fasthttp", "domicile"}

type config struct {
	Targets         []string      `json:"targets"`
	Duration        time.Duration `json:"duration_ns"`
	Warmup          time.Duration `json:"warmup_ns"`
	Connections     int           `json:"connections"`
	Threads         int           `json:"threads"`
	Rounds          int           `json:"rounds"`
	Rate            int           `json:"rate"`
	LatencyDuration time.Duration `json:"latency_duration_ns"`
	Users           int           `json:"users"`
	Mix             string        `json:"mix"`
	NginxWorkers    int           `json:"nginx_workers"`
	RouterLogLevel  string        `json:"router_log_level"`
	// Budget: CPU times each spent per request by an extra bare fasthttp
	// target ("fasthttp+2µs"): what a proxy on the router's stack may
	// spend per request on its own work for a given ratio to nginx.
	Budget  []time.Duration `json:"budget_ns,omitempty"`
	JSONOut string          `json:"-"`
	KeepTmp bool            `json:"-"`
	mix     mix
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "-role" {
		roles := map[string]func([]string) error{"upstream": upstreamMain, "router": routerMain, "attack": attackMain, "bareproxy": bareProxyMain}
		f, ok := roles[os.Args[2]]
		if !ok {
			fmt.Fprintf(os.Stderr, "bench/router: unknown -role %q\n", os.Args[2])
			os.Exit(2)
		}
		if err := f(os.Args[3:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench/router -role %s: %v\n", os.Args[2], err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	targets := flag.String("targets", strings.Join(allTargets, ","), "comma-separated targets to run: direct, nginx, fasthttp (a bare valyala/fasthttp proxy: the ceiling of the router's stack), domicile")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "wrk run per target and round (whole seconds)")
	flag.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unreported wrk warm-up run before each measured run (0: none)")
	flag.IntVar(&cfg.Connections, "connections", 64, "wrk connections")
	flag.IntVar(&cfg.Threads, "threads", 2, "wrk threads")
	flag.IntVar(&cfg.Rounds, "rounds", 2, "rounds of direct, nginx, domicile; the median is reported")
	flag.IntVar(&cfg.Rate, "rate", 5000, "constant rate of the latency phase (requests/s)")
	flag.DurationVar(&cfg.LatencyDuration, "latency-duration", 10*time.Second, "latency phase per target (0: skip the phase)")
	flag.IntVar(&cfg.Users, "users", 10000, "identifiers pre-claimed in the home index (logins cycle over them)")
	flag.StringVar(&cfg.Mix, "mix", "50,10,40", "weights of POST /login (known user), POST /signup (new user), GET /hello (no identifier)")
	flag.IntVar(&cfg.NginxWorkers, "nginx-workers", 1, "nginx worker_processes")
	budget := flag.String("budget", "", "comma-separated CPU times (e.g. 1us,2us,5us): for each, an extra bare fasthttp proxy that busy-spends that long on every request (the CPU budget of the router's own work)")
	flag.StringVar(&cfg.RouterLogLevel, "router-log-level", "info", "the router's log level (debug, info, warn, error, none); logs go to a file in the temp dir")
	flag.StringVar(&cfg.JSONOut, "json", "", "also write the raw results to this JSON file")
	flag.BoolVar(&cfg.KeepTmp, "keep-tmp", false, "keep the temp dir (configs, logs, Lua script) and print its path")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench/router: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if err := cfg.validate(*targets, *budget); err != nil {
		fmt.Fprintln(os.Stderr, "bench/router:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	interrupted := ctx.Err() != nil // before stop, which cancels ctx
	stop()
	if err != nil {
		if interrupted {
			fmt.Fprintln(os.Stderr, "bench/router: interrupted; children stopped")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "bench/router:", err)
		os.Exit(1)
	}
}

func (c *config) validate(targets, budget string) error {
	for _, t := range strings.Split(targets, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(allTargets, t) {
			return fmt.Errorf("-targets: unknown target %q (want a subset of %s)", t, strings.Join(allTargets, ","))
		}
		if !slices.Contains(c.Targets, t) {
			c.Targets = append(c.Targets, t)
		}
	}
	// Always in the order direct, nginx, fasthttp, domicile.
	slices.SortFunc(c.Targets, func(a, b string) int { return slices.Index(allTargets, a) - slices.Index(allTargets, b) })
	if budget != "" {
		// The budget targets run right after the bare proxy (before
		// domicile), so that a round measures them in the same minutes.
		at := len(c.Targets)
		if i := slices.Index(c.Targets, "domicile"); i >= 0 {
			at = i
		}
		var names []string
		for _, f := range strings.Split(budget, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil || d <= 0 || d > time.Millisecond {
				return fmt.Errorf("-budget: %q: want durations above 0 and at most 1ms, e.g. 1us,2us,5us", f)
			}
			if !slices.Contains(c.Budget, d) {
				c.Budget = append(c.Budget, d)
				names = append(names, budgetTarget(d))
			}
		}
		c.Targets = slices.Insert(c.Targets, at, names...)
	}
	var err error
	if c.mix, err = parseMix(c.Mix); err != nil {
		return err
	}
	switch {
	case c.Duration < time.Second || c.Duration%time.Second != 0:
		return fmt.Errorf("-duration: %s: want whole seconds, at least 1s (wrk's unit)", c.Duration)
	case c.Warmup != 0 && (c.Warmup < time.Second || c.Warmup%time.Second != 0):
		return fmt.Errorf("-warmup: %s: want 0 or whole seconds", c.Warmup)
	case c.Connections < 1 || c.Threads < 1 || c.Connections < c.Threads:
		return errors.New("-connections and -threads: want connections >= threads >= 1")
	case c.Rounds < 1:
		return errors.New("-rounds: want at least 1")
	case c.LatencyDuration < 0 || (c.LatencyDuration > 0 && c.Rate < 1):
		return errors.New("-rate, -latency-duration: want a positive rate and a non-negative duration")
	case c.Users < 1:
		return errors.New("-users: want at least 1")
	case c.NginxWorkers < 1:
		return errors.New("-nginx-workers: want at least 1")
	}
	return nil
}

// machine describes where the numbers come from.
type machine struct {
	CPUs  int    `json:"cpus"`
	Go    string `json:"go"`
	OS    string `json:"os"`
	Nginx string `json:"nginx,omitempty"`
	Wrk   string `json:"wrk"`
	// Load is /proc/loadavg at the start: other work on the machine skews
	// every number.
	Load string `json:"loadavg,omitempty"`
}

// row is one target's results.
type row struct {
	Target     string            `json:"target"`
	URL        string            `json:"url"`
	Probe      map[string]string `json:"probe"` // first request of each kind → status
	Runs       []wrkResult       `json:"wrk_runs"`
	RPS        float64           `json:"median_requests_per_sec"`
	P50        time.Duration     `json:"median_p50_ns"`
	P99        time.Duration     `json:"median_p99_ns"`
	Non2xx     int64             `json:"non_2xx_3xx"`   // over all measured runs
	SocketErrs int64             `json:"socket_errors"` // over all measured runs
	// RouterCounters: domicile's /metrics counters over all measured runs.
	RouterCounters map[string]float64 `json:"router_counters,omitempty"`
	Latency        *attackResult      `json:"latency,omitempty"`
	// UserCPU, SysCPU: median over the runs of the target's own CPU per
	// request (µs; -1 unknown).
	UserCPU float64 `json:"median_target_user_cpu_us_per_req"`
	SysCPU  float64 `json:"median_target_sys_cpu_us_per_req"`
	// UpstreamCPU, WrkCPU: medians of the upstream's and wrk's CPU per
	// request while this target was measured (µs; -1 unknown).
	UpstreamCPU float64 `json:"median_upstream_cpu_us_per_req"`
	WrkCPU      float64 `json:"median_wrk_cpu_us_per_req"`
	pgid        int     // the target's process group
}

type report struct {
	Machine machine `json:"machine"`
	Config  config  `json:"config"`
	MixText string  `json:"mix"`
	Rows    []*row  `json:"targets"`
}

func run(ctx context.Context, cfg config) (err error) {
	wrkBin, err := lookTool("wrk")
	if err != nil {
		return err
	}
	var nginxBin, nginxV string
	if slices.Contains(cfg.Targets, "nginx") {
		if nginxBin, err = lookTool("nginx"); err != nil {
			return err
		}
		out, _ := exec.Command(nginxBin, "-V").CombinedOutput()
		nginxV = string(out)
	}
	if err := checkPolicy(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}

	dir, err := os.MkdirTemp("", "domicile-bench-router-")
	if err != nil {
		return err
	}
	// nginx workers may run as another user: let them reach their dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if cfg.KeepTmp {
		defer fmt.Fprintln(os.Stderr, "temp dir kept:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	var cs children
	defer cs.stopAll()

	rep := &report{Config: cfg, MixText: cfg.mix.String(), Machine: machine{
		CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		Wrk: firstLine(exec.Command(wrkBin, "-v")),
	}}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		rep.Machine.Load = strings.Join(f[:min(3, len(f))], " ")
		if l, err := strconv.ParseFloat(f[0], 64); err == nil && l > float64(runtime.NumCPU())/2 {
			logf("warning: load average %s on %d CPUs: something else is running, the numbers will be noisy", rep.Machine.Load, runtime.NumCPU())
		}
	}
	if nginxBin != "" {
		rep.Machine.Nginx = strings.TrimPrefix(firstLine(exec.Command(nginxBin, "-v")), "nginx version: ")
	}

	reqs := buildRequests(cfg.mix, cfg.Users)
	script := filepath.Join(dir, "mix.lua")
	if err := writeLuaScript(script, reqs, cfg.Threads); err != nil {
		return err
	}
	reqFile := filepath.Join(dir, "requests.json")
	if err := writeRequests(reqFile, reqs); err != nil {
		return err
	}

	logf("upstream (fasthttp child)…")
	upstream, err := startUpstream(ctx, &cs, self, dir)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	upstreamPG := cs.last()
	for _, t := range cfg.Targets {
		r := &row{Target: t}
		switch t {
		case "direct":
			r.URL = "http://" + upstream
			r.pgid = upstreamPG
		case "nginx":
			logf("nginx (%d worker)…", cfg.NginxWorkers)
			addr, err := startNginx(ctx, &cs, nginxBin, dir, upstream, cfg.NginxWorkers, nginxV)
			if err != nil {
				return fmt.Errorf("nginx: %w", err)
			}
			r.URL = "http://" + addr
			r.pgid = cs.last()
		case "fasthttp":
			logf("bare fasthttp proxy (child)…")
			addr, err := startBareProxy(ctx, &cs, self, dir, upstream, 0)
			if err != nil {
				return fmt.Errorf("bare fasthttp proxy: %w", err)
			}
			r.URL = "http://" + addr
			r.pgid = cs.last()
		case "domicile":
			logf("domicile router (child, log level %s)…", cfg.RouterLogLevel)
			addr, sec, err := startRouter(ctx, &cs, self, dir, "http://"+upstream, cfg.RouterLogLevel)
			if err != nil {
				return fmt.Errorf("domicile router: %w\n(to measure the other targets without it: -targets direct,nginx)", err)
			}
			r.URL = "http://" + addr
			r.pgid = cs.last()
			start := time.Now()
			if err := preclaim(ctx, r.URL, sec, cfg.Users); err != nil {
				return fmt.Errorf("pre-claiming %d users: %w", cfg.Users, err)
			}
			logf("claimed %d users in %s", cfg.Users, time.Since(start).Round(time.Millisecond))
		default: // a budget target
			i := slices.IndexFunc(cfg.Budget, func(d time.Duration) bool { return budgetTarget(d) == t })
			if i < 0 {
				return fmt.Errorf("unknown target %q", t)
			}
			logf("bare fasthttp proxy spending %s per request (child)…", cfg.Budget[i])
			addr, err := startBareProxy(ctx, &cs, self, dir, upstream, cfg.Budget[i])
			if err != nil {
				return fmt.Errorf("%s: %w", t, err)
			}
			r.URL = "http://" + addr
			r.pgid = cs.last()
		}
		r.Probe = probe(ctx, r.URL, reqs)
		logf("%s %s answers: %s", t, r.URL, probeText(r.Probe))
		rep.Rows = append(rep.Rows, r)
	}
	for _, r := range rep.Rows {
		if r.Target != "domicile" {
			for k, v := range r.Probe {
				if !strings.HasPrefix(v, "2") {
					return fmt.Errorf("%s answers %s with %s; the bench itself is broken", r.Target, k, v)
				}
			}
		}
	}

	wo := wrkOptions{bin: wrkBin, script: script, threads: cfg.Threads, connections: cfg.Connections}
	for round := 1; round <= cfg.Rounds; round++ {
		for _, r := range rep.Rows {
			if cfg.Warmup > 0 {
				if _, err := runWrk(ctx, &cs, wo, r.URL, 0, 0, cfg.Warmup); err != nil {
					return fmt.Errorf("%s warm-up: %w", r.Target, err)
				}
			}
			var before map[string]float64
			if r.Target == "domicile" {
				before = routerCounters(ctx, r.URL)
			}
			res, err := runWrk(ctx, &cs, wo, r.URL, r.pgid, upstreamPG, cfg.Duration)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", r.Target, round, err)
			}
			if r.Target == "domicile" {
				res.Router = diffCounters(before, routerCounters(ctx, r.URL))
			}
			if err := cs.anyExited(); err != nil {
				return err
			}
			res.Target, res.Round = r.Target, round
			r.Runs = append(r.Runs, res)
			logf("round %d/%d %-12s %9.0f req/s  p50 %-8s p99 %-8s non-2xx %d  socket errors %d  CPU/req %s  upstream %.1fµs  wrk %.1fµs  other CPU %.0f%%",
				round, cfg.Rounds, r.Target, res.RPS, fmtDur(res.P50), fmtDur(res.P99), res.Non2xx, res.SocketErrors.Total(), fmtCPU(res.UserCPU, res.SysCPU), res.UpstreamCPU, res.WrkCPU, res.OtherCPU)
		}
	}
	for _, r := range rep.Rows {
		r.summarize()
	}

	if cfg.LatencyDuration > 0 {
		for _, r := range rep.Rows {
			res, err := runAttack(ctx, &cs, self, reqFile, r.Target, r.URL, cfg.Rate, cfg.LatencyDuration, time.Second)
			if err != nil {
				return err
			}
			if err := cs.anyExited(); err != nil {
				return err
			}
			r.Latency = &res
			logf("%-8s @%d/s  p50 %-8s p99 %-8s max %-8s success %.4f  other CPU %.0f%%", r.Target, cfg.Rate, fmtDur(res.P50), fmtDur(res.P99), fmtDur(res.Max), res.Success, res.OtherCPU)
		}
	}

	printTable(os.Stdout, rep)
	if cfg.JSONOut != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.JSONOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
		logf("raw results written to %s", cfg.JSONOut)
	}
	return nil
}

// anyExited reports a long-running child that died during the bench.
func (cs *children) anyExited() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.list {
		if err := c.exited(); err != nil {
			return err
		}
	}
	return nil
}

func (r *row) summarize() {
	var rps []float64
	var p50, p99 []time.Duration
	var user, sys, up, wrk []float64
	for _, run := range r.Runs {
		rps = append(rps, run.RPS)
		user = append(user, run.UserCPU)
		sys = append(sys, run.SysCPU)
		up = append(up, run.UpstreamCPU)
		wrk = append(wrk, run.WrkCPU)
		p50 = append(p50, run.P50)
		p99 = append(p99, run.P99)
		r.Non2xx += run.Non2xx
		r.SocketErrs += run.SocketErrors.Total()
		for k, v := range run.Router {
			if r.RouterCounters == nil {
				r.RouterCounters = map[string]float64{}
			}
			r.RouterCounters[k] += v
		}
	}
	r.RPS = median(rps)
	r.P50 = median(p50)
	r.P99 = median(p99)
	r.UserCPU = median(user)
	r.SysCPU = median(sys)
	r.UpstreamCPU = median(up)
	r.WrkCPU = median(wrk)
}

func median[T float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *row) flagged() []string {
	var why []string
	if r.Non2xx > 0 {
		why = append(why, fmt.Sprintf("%d non-2xx/3xx responses under wrk", r.Non2xx))
	}
	if r.SocketErrs > 0 {
		why = append(why, fmt.Sprintf("%d wrk socket errors", r.SocketErrs))
	}
	if r.Latency != nil && r.Latency.Success < 1 {
		why = append(why, fmt.Sprintf("vegeta success %.4f (codes %v)", r.Latency.Success, r.Latency.StatusCodes))
	}
	return why
}

// noisyCPU is the CPU (in % of one CPU) that other processes may use
// during a run before the run is called out as skewed.
const noisyCPU = 10

func printTable(w io.Writer, rep *report) {
	c := rep.Config
	m := rep.Machine
	nginx := "nginx not run"
	if m.Nginx != "" {
		nginx = fmt.Sprintf("%s (worker_processes %d)", m.Nginx, c.NginxWorkers)
	}
	load := ""
	if m.Load != "" {
		load = ", load average at start " + m.Load
	}
	fmt.Fprintf(w, "Machine: %d CPUs%s, %s %s, %s, %s. Everything (wrk/vegeta, targets, upstream) shares these CPUs.\n", m.CPUs, load, m.Go, m.OS, nginx, m.Wrk)
	fmt.Fprintf(w, "Mix: %s; %d pre-claimed users. Upstream: fasthttp child answering 200 {\"ok\":true}. Router log level: %s (to a file).\n", rep.MixText, c.Users, c.RouterLogLevel)
	warm := "no warm-up"
	if c.Warmup > 0 {
		warm = "after a " + c.Warmup.String() + " warm-up"
	}
	fmt.Fprintf(w, "Saturation: wrk -t%d -c%d -d%s --latency (%s), median of %d round(s). ", c.Threads, c.Connections, c.Duration, warm, c.Rounds)
	if c.LatencyDuration > 0 {
		fmt.Fprintf(w, "Latency: vegeta at %d req/s for %s per target (after a 1s warm-up), keep-alive, own process.\n\n", c.Rate, c.LatencyDuration)
	} else {
		fmt.Fprintf(w, "Latency phase skipped.\n\n")
	}
	fmt.Fprintf(w, "Ratio to nginx: of the median req/s; per-round ratio: the median of each round's ratio (the targets of a round run back to back).\n")
	fmt.Fprintf(w, "CPU/req: user+system CPU time of the target's own processes (for direct, the upstream) per request over each measured wrk run, from /proc; median of the rounds. Upstream, wrk: the same for the upstream and for wrk while that target was measured (all share the CPUs, so what a proxy makes them spend counts too).\n\n")
	rate := fmtRate(c.Rate)
	header := []string{"target", fmt.Sprintf("req/s (wrk -t%d -c%d)", c.Threads, c.Connections), "p50", "p99", "non-2xx", "socket errors", "ratio to nginx", "per-round ratio", "CPU/req user+sys", "upstream, wrk CPU/req"}
	if c.LatencyDuration > 0 {
		header = append(header, "p50 @"+rate, "p99 @"+rate, "max @"+rate, "success @"+rate, "added p99 vs direct")
	}
	var nginxRPS float64
	var nginxRow *row
	var directP99 time.Duration
	haveDirect := false
	for _, r := range rep.Rows {
		if r.Target == "nginx" {
			nginxRPS, nginxRow = r.RPS, r
		}
		if r.Target == "direct" && r.Latency != nil {
			directP99, haveDirect = r.Latency.P99, true
		}
	}
	var rows [][]string
	var notes []string
	for _, r := range rep.Rows {
		name := r.Target
		if why := r.flagged(); len(why) > 0 {
			name += " ⚠"
			notes = append(notes, fmt.Sprintf("⚠ %s: %s; probe: %s", r.Target, strings.Join(why, "; "), probeText(r.Probe)))
		}
		ratio := "–"
		if nginxRPS > 0 {
			ratio = fmt.Sprintf("%.2f", r.RPS/nginxRPS)
		}
		perRound := "–"
		if v, ok := roundRatio(r, nginxRow); ok {
			perRound = fmt.Sprintf("%.2f", v)
		}
		cells := []string{name, fmt.Sprintf("%.0f", r.RPS), fmtDur(r.P50), fmtDur(r.P99), strconv.FormatInt(r.Non2xx, 10), strconv.FormatInt(r.SocketErrs, 10), ratio, perRound, fmtCPU(r.UserCPU, r.SysCPU), fmtOthers(r.UpstreamCPU, r.WrkCPU)}
		if c.LatencyDuration > 0 {
			l := r.Latency
			added := "–"
			if haveDirect && r.Target != "direct" {
				added = "+" + fmtDur(l.P99-directP99)
				if l.P99 < directP99 {
					added = "-" + fmtDur(directP99-l.P99)
				}
			}
			cells = append(cells, fmtDur(l.P50), fmtDur(l.P99), fmtDur(l.Max), fmt.Sprintf("%.2f%%", 100*l.Success), added)
		}
		rows = append(rows, cells)
	}
	writeMarkdown(w, header, rows)
	var noisy []string
	for _, r := range rep.Rows {
		for _, run := range r.Runs {
			if run.OtherCPU > noisyCPU {
				noisy = append(noisy, fmt.Sprintf("%s wrk round %d %.0f%%", r.Target, run.Round, run.OtherCPU))
			}
		}
		if r.Latency != nil && r.Latency.OtherCPU > noisyCPU {
			noisy = append(noisy, fmt.Sprintf("%s @%s %.0f%%", r.Target, rate, r.Latency.OtherCPU))
		}
	}
	if len(noisy) > 0 {
		notes = append(notes, fmt.Sprintf("⚠ other processes used more than %d%% of a CPU during: %s (in %% of one CPU); those numbers are skewed", noisyCPU, strings.Join(noisy, ", ")))
	}
	for _, r := range rep.Rows {
		if len(r.RouterCounters) > 0 {
			notes = append(notes, fmt.Sprintf("%s, its /metrics over the measured wrk runs: %s", r.Target, countersText(r.RouterCounters)))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

// roundRatio is the median over the rounds of r's req/s divided by
// nginx's in the same round. The targets of one round run back to back, so
// this ratio follows the shared machine's slow and fast minutes less than
// the ratio of the two medians does.
func roundRatio(r, nginx *row) (float64, bool) {
	if nginx == nil || len(r.Runs) != len(nginx.Runs) || len(r.Runs) == 0 {
		return 0, false
	}
	var v []float64
	for i, run := range r.Runs {
		if base := nginx.Runs[i].RPS; base > 0 {
			v = append(v, run.RPS/base)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	return median(v), true
}

// fmtCPU formats a target's CPU per request.
func fmtCPU(user, sys float64) string {
	if user < 0 || sys < 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f+%.1fµs", user, sys)
}

// fmtOthers formats the upstream's and wrk's CPU per request.
func fmtOthers(up, wrk float64) string {
	f := func(v float64) string {
		if v < 0 {
			return "–"
		}
		return fmt.Sprintf("%.1fµs", v)
	}
	return f(up) + ", " + f(wrk)
}

func writeMarkdown(w io.Writer, header []string, rows [][]string) {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len([]rune(h))
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-len([]rune(c))) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
}

// countersText shows router counters as shares: "responses 200 99.9%,
// 503 0.1%; resolutions index 50.0%, nearest 40.0%, ...".
func countersText(c map[string]float64) string {
	var parts []string
	for _, kind := range []struct{ prefix, title string }{{"code ", "responses"}, {"source ", "resolutions"}} {
		var keys []string
		var total float64
		for k, v := range c {
			if strings.HasPrefix(k, kind.prefix) {
				keys = append(keys, k)
				total += v
			}
		}
		if total == 0 {
			continue
		}
		slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(c[b], c[a]) })
		var s []string
		for _, k := range keys {
			s = append(s, fmt.Sprintf("%s %.0f (%.1f%%)", strings.TrimPrefix(k, kind.prefix), c[k], 100*c[k]/total))
		}
		parts = append(parts, kind.title+": "+strings.Join(s, ", "))
	}
	return strings.Join(parts, "; ")
}

func probeText(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+" → "+p[k])
	}
	return strings.Join(parts, ", ")
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtRate(r int) string {
	if r >= 1000 && r%1000 == 0 {
		return fmt.Sprintf("%dk/s", r/1000)
	}
	return fmt.Sprintf("%d/s", r)
}

// lookTool finds wrk or nginx (nginx lives in /usr/sbin, which may not be
// in a user's PATH).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (in PATH or /usr/sbin): install the tools with `apt-get install wrk nginx-light`", name)
}

// firstLine is the first line of a command's combined output (version
// commands print to stderr and may exit non-zero).
func firstLine(cmd *exec.Cmd) string {
	out, _ := cmd.CombinedOutput()
	s, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if i := strings.Index(s, " Copyright"); i > 0 { // wrk -v
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
