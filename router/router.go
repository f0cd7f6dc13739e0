package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/httpserver"
	"github.com/domicile/domicile/internal/metrics"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/residency"
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
	Policy  *residency.Policy
	GeoIP   *residency.GeoIP // optional: without it, country rules never match
	Regions map[string]string
	Index   IndexReader
	// IndexAPI, if set, is mounted at /internal/index/ (the replica's
	// internal API for regions and forwarded writes).
	IndexAPI       http.Handler
	Hasher         *homeindex.Hasher
	TrustedProxies []netip.Prefix
	// MaxBodyBytes bounds what the router reads of a body to find the
	// identifier (default 16 KiB).
	MaxBodyBytes int64
	Logger       *slog.Logger
	// Collectors are extra metrics to serve (e.g. the index replica's).
	Collectors []prometheus.Collector
	// AdminToken guards /admin/v1 (Bearer); empty disables the admin API.
	AdminToken string
	// Policies receives policies put through the admin API.
	Policies PolicyStore
}

// Router is the edge HTTP server.
type Router struct {
	cfg        Config
	echo       *echo.Echo
	log        *slog.Logger
	metrics    *metrics.Metrics
	proxies    map[string]*httputil.ReverseProxy
	resolution *prometheus.CounterVec
	policy     atomic.Pointer[residency.Policy]
}

// New validates cfg and builds a router.
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
	rt := &Router{
		cfg:     cfg,
		log:     cfg.Logger.With("router", cfg.Name),
		metrics: metrics.New("router", cfg.Name),
		proxies: make(map[string]*httputil.ReverseProxy),
		resolution: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domicile_router_resolutions_total",
			Help: "Home-region resolutions by source (index, email_domain, country, default) and region.",
		}, []string{"source", "region"}),
	}
	rt.metrics.Register(rt.resolution)
	rt.metrics.Register(cfg.Collectors...)
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	for name, raw := range cfg.Regions {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("router: regions.%s: %q is not an http(s) URL", name, raw)
		}
		rt.proxies[name] = rt.newProxy(name, u, transport)
	}
	if err := rt.SetPolicy(cfg.Policy); err != nil {
		return nil, err
	}
	rt.metrics.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "domicile_router_policy_version", Help: "Version of the residency policy in force on this router.",
	}, func() float64 { return float64(rt.Policy().Version()) }))

	e := httpserver.NewEcho(rt.log, rt.metrics)
	e.GET("/readyz", rt.readyz)
	if cfg.IndexAPI != nil {
		e.Any("/internal/index/*", echo.WrapHandler(cfg.IndexAPI))
	}
	if cfg.AdminToken != "" && cfg.Policies != nil {
		admin := e.Group("/admin/v1", rt.adminAuth)
		admin.GET("/policy", rt.getPolicy)
		admin.PUT("/policy", rt.putPolicy)
	}
	e.POST("/signup", rt.forwardByEmail)
	e.POST("/login", rt.forwardByEmail)
	rt.echo = e
	return rt, nil
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
		if _, ok := rt.proxies[name]; !ok {
			return fmt.Errorf("router: regions: policy region %q has no URL", name)
		}
	}
	return nil
}

// Handler is the router's HTTP handler.
func (rt *Router) Handler() http.Handler { return rt.echo }

func (rt *Router) readyz(c echo.Context) error {
	if !rt.cfg.Index.Ready() {
		p := problem.New(http.StatusServiceUnavailable, "home index has no leader")
		p.RetryAfter = 1
		return p
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (rt *Router) newProxy(region string, target *url.URL, tr http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			rt.log.Warn("upstream unreachable", "region", region, "err", err)
			p := problem.New(http.StatusServiceUnavailable, "region "+region+" is unavailable")
			p.RetryAfter = 1
			p.Instance = r.URL.Path
			problem.Write(w, p)
		},
	}
}

// resolve picks the home region for an identifier: the index for a known
// user, the residency policy for a new one.
func (rt *Router) resolve(key homeindex.Key, email string, client netip.Addr) (region, source, rule string) {
	if e, ok := rt.cfg.Index.Lookup(key); ok {
		return e.Region, "index", "index"
	}
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

// forwardByEmail serves flows that carry the identifier in a JSON body
// ({"email": ...}): it reads at most MaxBodyBytes, resolves the home and
// forwards the body unchanged.
func (rt *Router) forwardByEmail(c echo.Context) error {
	req := c.Request()
	body, err := io.ReadAll(io.LimitReader(req.Body, rt.cfg.MaxBodyBytes+1))
	if err != nil {
		return problem.New(http.StatusBadRequest, "body: could not be read")
	}
	if int64(len(body)) > rt.cfg.MaxBodyBytes {
		return problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", rt.cfg.MaxBodyBytes))
	}
	if !utf8.Valid(body) {
		return problem.New(http.StatusBadRequest, "body: not valid UTF-8")
	}
	var in struct {
		Email string `json:"email"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return problem.New(http.StatusBadRequest, "body: invalid JSON: "+err.Error())
	}
	email, err := homeindex.NormalizeEmail(in.Email)
	if err != nil {
		return problem.New(http.StatusBadRequest, "email: "+err.Error())
	}
	if !rt.cfg.Index.CaughtUp() {
		// A miss now could be a known user the replica has not re-read yet.
		p := problem.New(http.StatusServiceUnavailable, "the home index replica is still loading")
		p.RetryAfter = 1
		return p
	}
	key := rt.cfg.Hasher.EmailKey(email)
	client := clientIP(req.RemoteAddr, req.Header.Values("X-Forwarded-For"), rt.cfg.TrustedProxies)
	region, source, rule := rt.resolve(key, email, client)
	proxy, ok := rt.proxies[region]
	if !ok {
		// The index names a region this router does not know (a policy
		// that dropped it, or a newer router config elsewhere).
		rt.log.Error("resolved to unknown region", "key", key.String(), "region", region, "source", source)
		p := problem.New(http.StatusServiceUnavailable, "home region is not reachable from this router")
		p.RetryAfter = 5
		return p
	}
	rt.resolution.WithLabelValues(source, region).Inc()
	rid := c.Response().Header().Get(echo.HeaderXRequestID)
	c.Response().Header().Del(echo.HeaderXRequestID) // the region echoes it back
	// Only the keyed hash of the identifier is logged, never the identifier.
	rt.log.Info("route", "request_id", rid, "path", req.URL.Path, "key", key.String(), "region", region, "source", source)

	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.Header.Set(echo.HeaderXRequestID, rid)
	req.Header.Set("Domicile-Router", rt.cfg.Name)
	req.Header.Set(homeindex.HeaderHomeRule, rule)
	proxy.ServeHTTP(c.Response(), req)
	return nil
}
