package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// HealthConfig tunes the active health checks of region nodes.
type HealthConfig struct {
	// Interval between checks of one node (default 1s).
	Interval time.Duration
	// Timeout of one check (default 1s).
	Timeout time.Duration
	// Fall is the number of consecutive failed checks that eject a node
	// (default 2). A connection refused while forwarding ejects it at once.
	Fall int
	// Rise is the number of consecutive good checks that return an ejected
	// node to service (default 2).
	Rise int
}

func (h *HealthConfig) defaults() {
	if h.Interval <= 0 {
		h.Interval = time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = time.Second
	}
	if h.Fall <= 0 {
		h.Fall = 2
	}
	if h.Rise <= 0 {
		h.Rise = 2
	}
}

// node is one server of a region.
type node struct {
	region  string
	url     string // base URL, for logs and metrics
	client  *fasthttp.HostClient
	checks  *fasthttp.HostClient // health checks and key fetches: not starved by a busy client
	healthy atomic.Bool
	gauge   prometheus.Gauge

	// Written by the health loop and by passive ejection.
	mu         sync.Mutex
	fails, oks int
}

// pool is the nodes of one region.
type pool struct {
	name  string
	nodes []*node
	next  atomic.Uint32
	// counters caches the resolution counters of this region by source
	// and route: a map replaced (copied) on every addition, under mu, so
	// that the forwarding path reads it with one atomic load and no lock
	// (a read lock's counter would bounce between the cores).
	mu       sync.Mutex
	counters atomic.Pointer[map[[2]string]prometheus.Counter]
}

// regionTimeout bounds writing a request to a region node and waiting for
// (and reading) its response.
const regionTimeout = 60 * time.Second

func dialNode(addr string) (net.Conn, error) { return fasthttp.DialTimeout(addr, 2*time.Second) }

// newNode parses a region node URL and makes its connection pool.
// latency observes the time from sending a request to the node to its
// response head.
func newNode(region, raw string, latency prometheus.Observer) (*node, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%q: a region URL has no path", raw)
	}
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	n := &node{region: region, url: u.Scheme + "://" + u.Host}
	n.client = &fasthttp.HostClient{
		Addr:                      addr,
		Name:                      "domicile-router",
		NoDefaultUserAgentHeader:  true,
		IsTLS:                     u.Scheme == "https",
		MaxConns:                  1024,
		MaxIdleConnDuration:       10 * time.Second, // below usual upstream idle timeouts
		MaxConnDuration:           10 * time.Minute,
		ReadTimeout:               regionTimeout,
		WriteTimeout:              regionTimeout,
		MaxConnWaitTimeout:        2 * time.Second,
		MaxIdemponentCallAttempts: 1, // forward() decides about retries
		DisablePathNormalizing:    true,
		Transport:                 regionTransport{latency: latency}, // streams only the bodies it must
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialNode(addr)
			if err != nil {
				return nil, err
			}
			return newCoarseConn(c, deadlineSlack(regionTimeout)), nil
		},
	}
	n.checks = &fasthttp.HostClient{
		Addr: addr, Name: "domicile-router-health", NoDefaultUserAgentHeader: true, IsTLS: n.client.IsTLS,
		MaxConns: 2, MaxIdemponentCallAttempts: 1, Dial: dialNode,
	}
	n.healthy.Store(true)
	return n, nil
}

// pick returns a healthy node other than those in tried (round robin), or
// nil.
func (p *pool) pick(tried []*node) *node {
	n := len(p.nodes)
	start := 0
	if n > 1 {
		// One node needs no round robin (its shared counter would
		// bounce between the cores on every request).
		start = int(p.next.Add(1))
	}
next:
	for i := range n {
		c := p.nodes[(start+i)%n]
		if !c.healthy.Load() {
			continue
		}
		for _, t := range tried {
			if t == c {
				continue next
			}
		}
		return c
	}
	return nil
}

// healthyCount is the number of nodes in service.
func (p *pool) healthyCount() int {
	k := 0
	for _, n := range p.nodes {
		if n.healthy.Load() {
			k++
		}
	}
	return k
}

// observe records the result of a health check (or a forwarding failure,
// with eject set) and reports a change of state.
func (n *node) observe(ok, eject bool, hc *HealthConfig, log *slog.Logger) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ok {
		n.fails = 0
		n.oks++
		if !n.healthy.Load() && n.oks >= hc.Rise {
			n.healthy.Store(true)
			n.gauge.Set(1)
			log.Info("region node back in service", "region", n.region, "node", n.url)
		}
		return
	}
	n.oks = 0
	n.fails++
	if n.healthy.Load() && (eject || n.fails >= hc.Fall) {
		n.healthy.Store(false)
		n.gauge.Set(0)
		log.Warn("region node ejected", "region", n.region, "node", n.url, "failed_checks", n.fails)
	}
}

// check runs one health check: GET /healthz must answer 200 in time.
func (n *node) check(timeout time.Duration) bool {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(n.url + "/healthz")
	req.Header.SetMethod(fasthttp.MethodGet)
	resp.SkipBody = true
	if err := n.checks.DoTimeout(req, resp, timeout); err != nil {
		return false
	}
	ok := resp.StatusCode() == fasthttp.StatusOK
	if s := resp.BodyStream(); s != nil {
		_ = resp.CloseBodyStream()
	}
	return ok
}

// healthLoop checks n every interval until stop is closed.
func (n *node) healthLoop(hc *HealthConfig, stop <-chan struct{}, log *slog.Logger) {
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n.observe(n.check(hc.Timeout), false, hc, log)
	}
}

// notSent reports whether a forwarding error happened before any byte of
// the request reached the node, so that the request may go to another node
// whatever its method.
func notSent(err error) bool {
	return errors.Is(err, fasthttp.ErrNoFreeConns) || refused(err)
}

// refused reports whether the node could not be connected to, which ejects
// it at once (a node that is merely busy, with every connection in use, is
// not ejected).
func refused(err error) bool {
	if errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// idempotent reports whether a request may be sent twice (RFC 9110 9.2.2).
func idempotent(method []byte) bool {
	switch string(method) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions, fasthttp.MethodTrace,
		fasthttp.MethodPut, fasthttp.MethodDelete:
		return true
	}
	return false
}
