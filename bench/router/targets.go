package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/residency"
	"github.com/domicile/domicile/router"
)

// benchRegions are the regions of benchPolicy; claims are spread over them.
var benchRegions = []string{"eu-west", "us-east", "ap-southeast"}

// benchPolicy is the residency policy of the Domicile target. No geo-IP
// database is configured, so country rules never match and new users are
// placed by email domain or the default.
const benchPolicy = `version: 1
regions:
  eu-west:      {jurisdiction: EU, countries: [DE, FR, IE, NL, ES, IT, AT, BE]}
  us-east:      {jurisdiction: US, countries: [US, CA]}
  ap-southeast: {jurisdiction: SG, countries: [SG, AU, NZ, JP]}
default: us-east
email_domains: {"acme.de": eu-west, "*.gov.uk": eu-west, "example.sg": ap-southeast}
`

// regionUpstreams is RouterConfig.Regions: every region is the one
// upstream. This is the one place that knows the type of Regions.
func regionUpstreams(upstreamURL string) map[string]launch.URLList {
	m := make(map[string]launch.URLList, len(benchRegions))
	for _, r := range benchRegions {
		m[r] = launch.URLList{upstreamURL}
	}
	return m
}

// noLimit is a rate limit no benchmark reaches: the limiter still runs on
// every credential request (as in production) but never answers 429. The
// burst must span seconds, not a millisecond (as 1e9/s with burst 1e6
// would): requests reach the limiter slightly out of order of their
// timestamps, and a tiny tolerance turns that jitter into 429s.
var noLimit = router.Limit{Rate: 1e6, Burst: 10_000_000}

// routerConfig is the configuration of the benchmarked router: one router
// whose home-index replica is a single bootstrapped voter.
func routerConfig(listen, raft, indexDir, upstreamURL, secretsFile string, log *slog.Logger) launch.RouterConfig {
	const name = "bench-router"
	return launch.RouterConfig{
		Name:        name,
		Listen:      listen,
		Regions:     regionUpstreams(upstreamURL),
		SecretsFile: secretsFile,
		PolicyYAML:  []byte(benchPolicy),
		Logger:      log,
		RateLimits:  launch.RateLimitConfig{PerIP: noLimit, PerIdentifier: noLimit},
		Index: launch.IndexConfig{
			Dir:       indexDir,
			Bind:      raft,
			Bootstrap: true,
			Peers:     []launch.PeerConfig{{ID: name, Raft: raft, API: "http://" + listen}},
		},
	}
}

// ---- child roles (run in the re-executed bench binary) ----

// bareProxyMain is a reverse proxy with no logic at all on valyala/fasthttp
// (the stack of the router's forwarding path): server, HostClient with a
// keep-alive pool, Do. It is the ceiling the router can reach.
func bareProxyMain(args []string) error {
	fs := flag.NewFlagSet("bareproxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := fs.String("upstream", "", "host:port of the upstream")
	spin := fs.Duration("spin", 0, "CPU time to spend on every request before forwarding it (a busy loop)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	c := &fasthttp.HostClient{Addr: *upstream, MaxConns: 1024}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if *spin > 0 {
			busy(*spin)
		}
		if err := c.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}}
	role := "bareproxy"
	if *spin > 0 {
		role += "-" + spin.String() // each budget target its own profile
	}
	stopProfile, err := startProfile(role)
	if err != nil {
		return err
	}
	exitOnSignal(stopProfile)
	return srv.Serve(ln)
}

// busy keeps the CPU busy for d of wall-clock time (a loop on the vDSO
// clock, no system call).
func busy(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

// startBareProxy runs bareProxyMain as a child; spin > 0 is a budget
// target (see -budget).
func startBareProxy(ctx context.Context, cs *children, self, dir, upstream string, spin time.Duration) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	name, log := "fasthttp", "bareproxy.log"
	if spin > 0 {
		name, log = budgetTarget(spin), fmt.Sprintf("bareproxy-%s.log", spin)
	}
	c, err := cs.start(ctx, name, filepath.Join(dir, log), self, "-role", "bareproxy", "-listen", addr, "-upstream", upstream, "-spin", spin.String())
	if err != nil {
		return "", err
	}
	return addr, waitListening(ctx, c, addr, 10*time.Second)
}

// upstreamMain serves every request with 200 {"ok":true} (fasthttp reads
// the whole request body before the handler runs; the handler drops it).
func upstreamMain(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	body := []byte(`{"ok":true}`)
	srv := &fasthttp.Server{
		Name: "bench-upstream",
		Handler: func(ctx *fasthttp.RequestCtx) {
			_ = ctx.PostBody()
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		},
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  120 * time.Second,
	}
	exitOnSignal(func() {})
	return srv.Serve(ln)
}

// routerMain runs the Domicile router until SIGTERM/SIGINT.
func routerMain(args []string) error {
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	listen := fs.String("listen", "", "HTTP address")
	raft := fs.String("raft", "", "Raft transport address")
	indexDir := fs.String("index-dir", "", "home index directory")
	upstream := fs.String("upstream", "", "URL of every region")
	secrets := fs.String("secrets", "", "secrets file")
	logFile := fs.String("log", "", "log file (default stderr)")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error or none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if v := os.Getenv("DOMICILE_BENCH_ROUTER_PROCS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			runtime.GOMAXPROCS(n)
		}
	}
	log, closeLog, err := newFileLogger(*logFile, *logLevel)
	if err != nil {
		return err
	}
	defer closeLog()
	r, err := launch.StartRouter(routerConfig(*listen, *raft, *indexDir, *upstream, *secrets, log))
	if err != nil {
		return err
	}
	stopProfile, err := startProfile("router")
	if err != nil {
		return err
	}
	defer stopProfile()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return r.Shutdown(ctx)
}

func newFileLogger(path, level string) (*slog.Logger, func(), error) {
	if level == "none" {
		return slog.New(slog.NewJSONHandler(io.Discard, nil)), func() {}, nil
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("-router-log-level: %q is not debug, info, warn, error or none", level)
	}
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, err
		}
		w, closeFn = f, func() { f.Close() }
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), closeFn, nil
}

// exitOnSignal makes a stateless child exit at once on SIGTERM/SIGINT.
func exitOnSignal(stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; stop(); os.Exit(0) }()
}

// startProfile starts a CPU profile of this child for its whole run if
// DOMICILE_BENCH_CPUPROFILE is set: the profile goes to that path plus
// "." and role (e.g. cpu.out.router, cpu.out.bareproxy), so the router's
// stack and the bare proxy's can be compared. stop ends it.
//
// DOMICILE_BENCH_MEMPROFILE likewise writes an allocation profile (every
// allocation sampled) when the child stops.
func startProfile(role string) (stop func(), err error) {
	stopCPU, err := startCPUProfile(role)
	if err != nil {
		return nil, err
	}
	mp := os.Getenv("DOMICILE_BENCH_MEMPROFILE")
	if mp == "" {
		return stopCPU, nil
	}
	runtime.MemProfileRate = 1
	return func() {
		stopCPU()
		if f, err := os.Create(mp + "." + role); err == nil {
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}, nil
}

// startCPUProfile is the CPU half of startProfile.
func startCPUProfile(role string) (stop func(), err error) {
	path := os.Getenv("DOMICILE_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path + "." + role)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// ---- child processes (parent side) ----

// setChildAttrs gives cmd its own process group, killed as a whole when
// cmd's context ends.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 3 * time.Second
}

// child is a long-running child process (upstream, nginx, router).
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string // its stdout and stderr
	done    chan struct{}
	err     error // set when done is closed
}

// children are the long-running child processes; stopAll ends them.
type children struct {
	mu   sync.Mutex
	list []*child
}

func (cs *children) start(ctx context.Context, name, logPath, bin string, args ...string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	setChildAttrs(cmd)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	cs.mu.Lock()
	cs.list = append(cs.list, c)
	cs.mu.Unlock()
	return c, nil
}

// last is the process group of the newest child (0: none).
func (cs *children) last() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.list) == 0 {
		return 0
	}
	return cs.list[len(cs.list)-1].cmd.Process.Pid // its own group (Setpgid)
}

// stopAll ends every child, newest first: SIGTERM to its process group,
// then SIGKILL after 3s.
func (cs *children) stopAll() {
	cs.mu.Lock()
	list := cs.list
	cs.list = nil
	cs.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop()
	}
}

func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	pgid := c.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.done
	}
}

// exited returns an error describing the child's exit, or nil if it runs.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited (%v); the end of %s:\n%s", c.name, c.err, c.logPath, tail(c.logPath, 3000))
	default:
		return nil
	}
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitListening waits until addr accepts TCP connections.
func waitListening(ctx context.Context, c *child, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if err := c.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections on %s after %s: %v (its output: %s)", c.name, addr, timeout, err, c.logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func startUpstream(ctx context.Context, cs *children, self, dir string) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	c, err := cs.start(ctx, "upstream", filepath.Join(dir, "upstream.log"), self, "-role", "upstream", "-listen", addr)
	if err != nil {
		return "", err
	}
	return addr, waitListening(ctx, c, addr, 10*time.Second)
}

// nginxConfig is a plain reverse proxy with a keep-alive upstream pool.
// Temp paths point into dir so nginx writes nothing outside it; modules
// compiled out (nginx -V --without-…) get no temp path directive.
func nginxConfig(dir, listen, upstream string, workers int, nginxV string) string {
	var temps strings.Builder
	for _, m := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if m != "client_body" && m != "proxy" && strings.Contains(nginxV, "--without-http_"+m+"_module") {
			continue
		}
		fmt.Fprintf(&temps, "    %s_temp_path %s;\n", m, filepath.Join(dir, m+"_temp"))
	}
	return fmt.Sprintf(`# Generated by bench/router.
worker_processes %d;
daemon off;
master_process on;
pid %s;
error_log %s warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
%s
    upstream backend {
        server %s;
        keepalive 256;
    }

    server {
        listen %s;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, workers, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), temps.String(), upstream, listen)
}

func startNginx(ctx context.Context, cs *children, bin, dir, upstream string, workers int, nginxV string) (string, error) {
	dir = filepath.Join(dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	conf := nginxConfig(dir, addr, upstream, workers, nginxV)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return "", err
	}
	// -e: the error log before the config is read (else the compiled-in
	// /var/log/nginx/error.log).
	c, err := cs.start(ctx, "nginx", filepath.Join(dir, "stderr.log"), bin,
		"-p", dir+"/", "-c", "nginx.conf", "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return "", err
	}
	if err := waitListening(ctx, c, addr, 10*time.Second); err != nil {
		return "", fmt.Errorf("%w\nnginx error.log:\n%s", err, tail(filepath.Join(dir, "error.log"), 2000))
	}
	return addr, nil
}

// startRouter starts the Domicile router child with fresh secrets and
// waits for its /readyz.
func startRouter(ctx context.Context, cs *children, self, dir, upstreamURL, logLevel string) (string, *launch.Secrets, error) {
	secretsFile := filepath.Join(dir, "secrets.json")
	sec, err := launch.LoadOrCreateSecrets(secretsFile) // fresh: dir is new
	if err != nil {
		return "", nil, err
	}
	listen, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	raft, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	c, err := cs.start(ctx, "router", filepath.Join(dir, "router.stderr"), self, "-role", "router",
		"-listen", listen, "-raft", raft, "-index-dir", filepath.Join(dir, "index"),
		"-upstream", upstreamURL, "-secrets", secretsFile,
		"-log", filepath.Join(dir, "router.log"), "-log-level", logLevel)
	if err != nil {
		return "", nil, err
	}
	if err := waitListening(ctx, c, listen, 30*time.Second); err != nil {
		return "", nil, err
	}
	// /readyz: the index replica has caught up and has a leader.
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return listen, sec, nil
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if err := c.exited(); err != nil {
			return "", nil, err
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("router /readyz is not 200 after 30s (last: %s); see %s", last, filepath.Join(dir, "router.log"))
		}
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// preclaim claims user0..user<n-1>@bench.example in the home index through
// the router's internal API, spread over the three regions, so that
// logins resolve through an index lookup.
func preclaim(ctx context.Context, routerURL string, sec *launch.Secrets, users int) error {
	hasher, err := homeindex.NewHasher(sec.IndexKey)
	if err != nil {
		return err
	}
	const workers = 64
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer hc.CloseIdleConnections()
	cl, err := homeindex.NewClient([]string{routerURL}, sec.InternalToken, hc)
	if err != nil {
		return err
	}
	// Claims name regions, which the index knows once the router has put
	// the policy into it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := cl.Status(ctx)
		if err == nil && st.PolicyVersion >= 1 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("home index has no policy after 30s (status error: %v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= users || ctx.Err() != nil {
					return
				}
				email, err := homeindex.NormalizeEmail(userEmail(i))
				if err == nil {
					err = cl.Claim(ctx, []homeindex.Key{hasher.EmailKey(email)}, benchRegions[i%len(benchRegions)], fmt.Sprintf("bench-owner-%d", i))
				}
				if err != nil && !errors.Is(err, homeindex.ErrConflict) {
					errs <- fmt.Errorf("claim %s: %w", userEmail(i), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Check one entry end to end.
	email, _ := homeindex.NormalizeEmail(userEmail(users - 1))
	e, ok, err := cl.Lookup(ctx, hasher.EmailKey(email))
	if err != nil || !ok || e.Region != benchRegions[(users-1)%len(benchRegions)] {
		return fmt.Errorf("lookup of %s after claiming: found=%v entry=%+v err=%v", userEmail(users-1), ok, e, err)
	}
	return nil
}

// checkPolicy fails early if benchPolicy does not parse or names other
// regions than benchRegions.
func checkPolicy() error {
	p, err := residency.Parse([]byte(benchPolicy))
	if err != nil {
		return err
	}
	got := p.Regions()
	if len(got) != len(benchRegions) {
		return fmt.Errorf("bench policy regions %v, want %v", got, benchRegions)
	}
	for _, r := range benchRegions {
		found := false
		for _, g := range got {
			found = found || g == r
		}
		if !found {
			return fmt.Errorf("bench policy regions %v lack %s", got, r)
		}
	}
	return nil
}

// probe sends the first request of each kind once and returns the status
// codes (or errors), to show before the load what each target answers.
func probe(ctx context.Context, base string, reqs []request) map[string]string {
	out := map[string]string{}
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	for _, r := range reqs {
		key := r.Method + " " + r.Path
		if _, done := out[key]; done {
			continue
		}
		var body io.Reader
		if r.Body != "" {
			body = strings.NewReader(r.Body)
		}
		req, err := http.NewRequestWithContext(ctx, r.Method, base+r.Path, body)
		if err != nil {
			out[key] = err.Error()
			continue
		}
		if r.Body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			out[key] = err.Error()
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		resp.Body.Close()
		s := fmt.Sprint(resp.StatusCode)
		if resp.StatusCode >= 300 {
			s += " " + strings.TrimSpace(string(b))
		}
		out[key] = s
	}
	return out
}

// routerCounters reads the router's forwarding counters from /metrics:
// responses by status code and resolutions by source, e.g.
// "code 503" or "source index". Nil if the router does not export them.
func routerCounters(ctx context.Context, base string) map[string]float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	metrics := map[string]string{
		"domicile_router_forward_responses_total{": "code",
		"domicile_router_resolutions_total{":       "source",
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for prefix, label := range metrics {
			if !strings.HasPrefix(line, prefix) {
				continue
			}
			labels, value, ok := strings.Cut(line[len(prefix):], "} ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				continue
			}
			for l := range strings.SplitSeq(labels, ",") {
				if name, val, ok := strings.Cut(l, "="); ok && name == label {
					out[label+" "+strings.Trim(val, `"`)] += v
				}
			}
		}
	}
	return out
}

// diffCounters is after - before, without zero entries.
func diffCounters(before, after map[string]float64) map[string]float64 {
	if after == nil {
		return nil
	}
	d := map[string]float64{}
	for k, v := range after {
		if x := v - before[k]; x != 0 {
			d[k] = x
		}
	}
	return d
}

// budgetTarget is the name of the budget target that spends d per request.
func budgetTarget(d time.Duration) string { return "fasthttp+" + d.String() }
