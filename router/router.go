package router

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fastjson"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/httpserver"
	"github.com/domicile/domicile/internal/metrics"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/residency"
	"github.com/domicile/domicile/session"
)

// PolicyStore is where the policy in force is kept: the home index, so
// every router switches at the same commit.
type PolicyStore interface {
	SetPolicy(ctx context.Context, version int, policyYAML []byte) error
	Policy() (int, []byte)
}

// IndexReader is the part of the home index replica the router reads.
type IndexReader interface {
	Lookup(homeindex.Key) (homeindex.Entry, bool)
	// CaughtUp: the replica has applied its log, so a miss means "new user".
	CaughtUp() bool
	// Ready: CaughtUp and the cluster has a leader.
	Ready() bool
}

// Config configures a router.
type Config struct {
	Name string
	// Policy is the policy to start with; the one in the index replaces it
	// (SetPolicy) as soon as the replica has applied it.
	Policy *residency.Policy
	GeoIP  *residency.GeoIP // optional: without it, country rules never match
	// Regions lists the base URLs of every region's nodes.
	Regions map[string][]string
	Index   IndexReader
	// IndexAPI, if set, is mounted at /internal/index/ (the replica's
	// internal API for regions and forwarded writes).
	IndexAPI       http.Handler
	Hasher         *homeindex.Hasher
	TrustedProxies []netip.Prefix
	// MaxBodyBytes bounds what the router reads of a body to find the
	// identifier (default 16 KiB). Only JSON and form bodies are read;
	// others are streamed to the region unread.
	MaxBodyBytes int
	// RouteKey signs the Domicile-Route header (at least 32 bytes).
	RouteKey []byte
	// Sessions verifies session tokens offline; nil: tokens are not used
	// for resolution.
	Sessions SessionVerifier
	// Health tunes the active health checks of region nodes.
	Health HealthConfig
	// RateLimits limit credential endpoints per client.
	RateLimits RateLimits
	Logger     *slog.Logger
	// Collectors are extra metrics to serve (e.g. the index replica's).
	Collectors []prometheus.Collector
	// AdminToken guards /admin/v1 (Bearer); empty disables the admin API.
	AdminToken string
	// Policies receives policies put through the admin API.
	Policies PolicyStore

	// Issuer is the OpenID Connect issuer: the global public URL
	// (https://id.example.com, no path), the same on every router and
	// region. The router serves the discovery document and the union JWKS
	// of every region's OIDC keys under it. Empty: it serves neither
	// (404).
	Issuer string
	// LocalRegion is the region this router runs in (one of Regions).
	// Identity-only operations go there instead of to the user's home:
	// SSO (GET /oauth2/authorize with prompt=none) on a live session, and
	// client-credentials grants. Empty: SSO goes home, client credentials
	// to the region the policy gives the client's address.
	LocalRegion string
	// Revoked reports whether a session was revoked (global logout); it is
	// consulted on every session-token check, cached or not. Nil: the
	// Index's IsRevoked method if it has one (the home index replica
	// does). Ignored if Sessions is set.
	Revoked func(sid string) bool
}

// revocations is the part of the home index replica that knows revoked
// sessions.
type revocations interface {
	IsRevoked(sessionID string) bool
}

// SessionVerifier verifies a session token offline.
type SessionVerifier interface {
	Verify(token string, now time.Time) (session.Claims, error)
}

// Router is the edge HTTP server.
type Router struct {
	cfg      Config
	echo     *echo.Echo
	echoFast fasthttp.RequestHandler
	log      *slog.Logger
	metrics  *metrics.Metrics
	pools    map[string]*pool
	policy   atomic.Pointer[residency.Policy]
	signer   *routesig.Signer
	parsers  fastjson.ParserPool
	health   HealthConfig
	limits   limiters
	instance string            // prefix of the request ids this router makes
	name     []byte            // cfg.Name, for the Domicile-Router header
	keys     *session.Verifier // nil if Config.Sessions was given
	routes   map[string]route  // the paths the router treats apart
	oidc     *oidcState        // nil without Config.Issuer
	// keysEvery is how often the session and OIDC keys of every region
	// are re-read (keysRefresh; tests shorten it).
	keysEvery time.Duration

	resolutions *prometheus.CounterVec
	statuses    *prometheus.CounterVec
	byStatus    [600]atomic.Pointer[prometheus.Counter]

	srv   *fasthttp.Server
	stop  chan struct{}
	wg    sync.WaitGroup
	loops sync.Once
}

// clientTimeout bounds reading a request (head and body), writing a
// response, and a keep-alive connection's idle time. The idle time is the
// same as the read time so that a busy connection's read deadline only
// moves forward (see coarseConn); and it is longer than the usual idle
// timeout of the load balancers and CDNs in front (60 s), which must close
// an idle connection before the router does.
const clientTimeout = 75 * time.Second

// New validates cfg and builds a router. Start its health checks and serve
// with Serve.
func New(cfg Config) (*Router, error) {
	switch {
	case cfg.Name == "":
		return nil, errors.New("router: name: required")
	case cfg.Policy == nil:
		return nil, errors.New("router: policy: required")
	case cfg.Index == nil:
		return nil, errors.New("router: index: required")
	case cfg.Hasher == nil:
		return nil, errors.New("router: index secret: required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 16 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	issuer, err := checkIssuer(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	cfg.Issuer = issuer
	if cfg.LocalRegion != "" {
		if _, ok := cfg.Regions[cfg.LocalRegion]; !ok {
			return nil, fmt.Errorf("router: local_region: %q is not one of the regions", cfg.LocalRegion)
		}
	}
	signer, err := routesig.NewSigner(cfg.RouteKey, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("router: route key: %w", err)
	}
	cfg.Health.defaults()
	var inst [6]byte
	_, _ = rand.Read(inst[:])
	rt := &Router{
		cfg:       cfg,
		log:       cfg.Logger.With("router", cfg.Name),
		metrics:   metrics.New("router", cfg.Name),
		pools:     make(map[string]*pool),
		signer:    signer,
		health:    cfg.Health,
		instance:  base64.RawURLEncoding.EncodeToString(inst[:]) + "-",
		name:      []byte(cfg.Name),
		keysEvery: keysRefresh,
		stop:      make(chan struct{}),
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domicile_router_resolutions_total",
			Help: "Forwarded requests by resolution source (session, index, email_domain, country, default, nearest, link, token, local, ...), region and route.",
		}, []string{"source", "region", "route"}),
		statuses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domicile_router_forward_responses_total",
			Help: "Responses to requests on the forwarding path, by status code (including the router's own refusals).",
		}, []string{"code"}),
	}
	if cfg.Sessions == nil {
		revoked := cfg.Revoked
		if r, ok := cfg.Index.(revocations); ok && revoked == nil {
			revoked = r.IsRevoked
		}
		var opts []session.VerifierOption
		if revoked != nil {
			opts = append(opts, session.WithRevoked(revoked))
		}
		rt.keys = session.NewVerifier(opts...)
		rt.cfg.Sessions = rt.keys
	}
	if issuer != "" {
		rt.oidc = newOIDCState(issuer)
	}
	if rt.limits, err = newLimiters(cfg.RateLimits); err != nil {
		return nil, err
	}
	rt.routes = map[string]route{}
	for _, p := range knownRoutes {
		rt.routes[p] = route{label: p, kind: oauthKindOf([]byte(p))}
	}
	for p := range rt.limits.paths {
		r := rt.routes[p]
		r.label, r.credential = p, true
		rt.routes[p] = r
	}
	upLatency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "domicile_router_upstream_duration_seconds",
		Help:    "Time from sending a request to a region node to its response header, by region.",
		Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"region"})
	nodeUp := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "domicile_router_node_healthy",
		Help: "1 if the region node is in service, 0 if ejected by health checks.",
	}, []string{"region", "node"})
	rt.metrics.Register(rt.resolutions, rt.statuses, upLatency, nodeUp)
	rt.metrics.Register(cfg.Collectors...)
	for name, urls := range cfg.Regions {
		if len(urls) == 0 {
			return nil, fmt.Errorf("router: regions.%s: no node URL", name)
		}
		pl := &pool{name: name}
		pl.counters.Store(&map[[2]string]prometheus.Counter{})
		latency := upLatency.WithLabelValues(name)
		for i, raw := range urls {
			n, err := newNode(name, raw, latency)
			if err != nil {
				return nil, fmt.Errorf("router: regions.%s[%d]: %w", name, i, err)
			}
			n.gauge = nodeUp.WithLabelValues(name, n.url)
			n.gauge.Set(1)
			pl.nodes = append(pl.nodes, n)
		}
		rt.pools[name] = pl
	}
	if err := rt.SetPolicy(cfg.Policy); err != nil {
		return nil, err
	}
	rt.metrics.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "domicile_router_policy_version", Help: "Version of the residency policy in force on this router.",
	}, func() float64 { return float64(rt.Policy().Version()) }))

	e := httpserver.NewEcho(rt.log, rt.metrics)
	e.GET("/readyz", rt.readyz)
	e.Match([]string{http.MethodGet, http.MethodHead}, pathDiscovery, rt.discovery)
	e.Match([]string{http.MethodGet, http.MethodHead}, pathJWKS, rt.jwks)
	e.Match([]string{http.MethodGet, http.MethodHead}, pathSessionKeys, rt.sessionKeys)
	if cfg.IndexAPI != nil {
		e.Any("/internal/index/*", echo.WrapHandler(cfg.IndexAPI))
	}
	if cfg.AdminToken != "" && cfg.Policies != nil {
		admin := e.Group("/admin/v1", rt.adminAuth)
		admin.GET("/policy", rt.getPolicy)
		admin.PUT("/policy", rt.putPolicy)
	}
	rt.echo = e
	rt.echoFast = fasthttpadaptor.NewFastHTTPHandler(e)
	rt.srv = &fasthttp.Server{
		Handler:               rt.serveFast,
		Name:                  "domicile",
		ReadTimeout:           clientTimeout, // bounds slow clients (slowloris)
		WriteTimeout:          clientTimeout,
		IdleTimeout:           clientTimeout,
		ReadBufferSize:        16 << 10, // the largest request head accepted
		MaxRequestBodySize:    64 << 20,
		StreamRequestBody:     true,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		Logger:                fastLogger{rt.log},
		ErrorHandler:          rt.serverError,
	}
	return rt, nil
}

// requests returns the counter of responses with the given status.
func (rt *Router) requests(status int) prometheus.Counter {
	if status < 100 || status >= len(rt.byStatus) {
		status = 599
	}
	if c := rt.byStatus[status].Load(); c != nil {
		return *c
	}
	c := rt.statuses.WithLabelValues(strconv.Itoa(status))
	rt.byStatus[status].Store(&c) // every writer stores the same counter
	return c
}

// route is what the router knows of a forwarded path, found with one map
// lookup per request.
type route struct {
	// label is the route label of the metrics: the path if it is one of
	// the flows the router knows (credential endpoints and the OIDC
	// endpoints), else "other", so that the label's cardinality stays
	// bounded.
	label      string
	credential bool      // a rate-limited credential endpoint
	kind       oauthKind // an OAuth endpoint the router treats apart
}

// routeOf returns what the router knows of path.
func (rt *Router) routeOf(path []byte) route {
	if r, ok := rt.routes[string(path)]; ok {
		return r
	}
	return route{label: "other"}
}

// knownRoutes are the forwarded paths counted under their own route label,
// besides the credential endpoints.
var knownRoutes = []string{"/authorize", pathAuthorize, pathToken, pathIntrospect, pathRevoke, pathUserinfo, pathLogout,
	"/logout", "/account", "/account/export", "/profile", "/verify-email", "/password/reset/confirm"}

// resolved returns the counter of a resolution source, route and region.
func (rt *Router) resolved(source, route string, pl *pool) prometheus.Counter {
	k := [2]string{source, route}
	if c, ok := (*pl.counters.Load())[k]; ok {
		return c
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	old := *pl.counters.Load()
	if c, ok := old[k]; ok {
		return c
	}
	c := rt.resolutions.WithLabelValues(source, pl.name, route)
	m := maps.Clone(old)
	m[k] = c
	pl.counters.Store(&m)
	return c
}

// Serve serves HTTP on ln until Shutdown. It also runs the health checks of
// the region nodes.
func (rt *Router) Serve(ln net.Listener) error {
	rt.startLoops()
	return rt.srv.Serve(coarseListener{Listener: ln, slack: deadlineSlack(clientTimeout)})
}

// startLoops starts the health checks and session-key refreshes (once).
func (rt *Router) startLoops() {
	rt.loops.Do(rt.runLoops)
}

func (rt *Router) runLoops() {
	for _, pl := range rt.pools {
		for _, n := range pl.nodes {
			rt.wg.Go(func() { n.healthLoop(&rt.health, rt.stop, rt.log) })
		}
		if rt.keys != nil {
			rt.wg.Go(func() { rt.keysLoop(pl, rt.keys) })
		}
		if rt.oidc != nil {
			rt.wg.Go(func() { rt.oidcKeysLoop(pl) })
		}
	}
}

// Shutdown stops accepting connections, waits for requests in flight (until
// ctx is done) and stops the health checks.
func (rt *Router) Shutdown(ctx context.Context) error {
	select {
	case <-rt.stop:
	default:
		close(rt.stop)
	}
	rt.wg.Wait()
	return rt.srv.ShutdownWithContext(ctx)
}

// serverError answers requests fasthttp could not parse (too large a head,
// a malformed request line, a body over the limit, a timeout).
func (rt *Router) serverError(ctx *fasthttp.RequestCtx, err error) {
	status := fasthttp.StatusBadRequest
	var se interface{ Timeout() bool }
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status = fasthttp.StatusRequestEntityTooLarge
	case errors.As(err, &small):
		status = fasthttp.StatusRequestHeaderFieldsTooLarge
	case errors.As(err, &se) && se.Timeout():
		status = fasthttp.StatusRequestTimeout
	}
	ctx.SetConnectionClose()
	rt.fail(ctx, problem.New(status, "the request could not be read"))
}

// fastLogger sends fasthttp's own messages to slog.
type fastLogger struct{ log *slog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	l.log.Warn("http server", "msg", fmt.Sprintf(format, args...))
}

// Policy returns the residency policy in force.
func (rt *Router) Policy() *residency.Policy { return rt.policy.Load() }

// SetPolicy puts p in force if it is newer than the current one. It is
// refused if the policy names a region this router has no URL for.
func (rt *Router) SetPolicy(p *residency.Policy) error {
	if err := rt.routable(p); err != nil {
		return err
	}
	for {
		cur := rt.policy.Load()
		if cur != nil && cur.Version() >= p.Version() {
			return nil
		}
		if rt.policy.CompareAndSwap(cur, p) {
			rt.log.Info("residency policy in force", "version", p.Version())
			return nil
		}
	}
}

func (rt *Router) routable(p *residency.Policy) error {
	for _, name := range p.Regions() {
		if _, ok := rt.pools[name]; !ok {
			return fmt.Errorf("router: regions: policy region %q has no URL", name)
		}
	}
	return nil
}

// FastHandler is the router's HTTP handler.
func (rt *Router) FastHandler() fasthttp.RequestHandler { return rt.serveFast }

func (rt *Router) readyz(c echo.Context) error {
	if !rt.cfg.Index.Ready() {
		p := problem.New(http.StatusServiceUnavailable, "home index has no leader")
		p.RetryAfter = 1
		return p
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// evaluate applies the residency policy to a new identifier (email may be
// empty) and the client's address.
func (rt *Router) evaluate(email string, client netip.Addr) (region, source, rule string) {
	var country string
	if client.IsValid() {
		country = rt.cfg.GeoIP.Country(client)
	}
	d := rt.Policy().Evaluate(residency.Facts{Email: email, Country: country})
	source = d.Rule
	if i := strings.IndexByte(source, ':'); i >= 0 {
		source = source[:i]
	}
	return d.Region, source, d.Rule
}
