// Package metrics wires Prometheus into a Domicile server: one registry per
// server (no global state), the Go and process collectors, and an echo
// middleware that counts requests by route, method and status.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the registry of one server plus its HTTP instruments.
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns a registry labelled with the server kind and name
// (e.g. "router", "router-1").
func New(kind, name string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	labels := prometheus.Labels{"server": kind, "node": name}
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "domicile_http_requests_total",
			Help:        "HTTP requests served, by route, method and status code.",
			ConstLabels: labels,
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "domicile_http_request_duration_seconds",
			Help:        "HTTP request latency by route.",
			ConstLabels: labels,
			Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// Register adds collectors owned by the server (resolution sources, Raft
// state, ...).
func (m *Metrics) Register(cs ...prometheus.Collector) { m.Registry.MustRegister(cs...) }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Middleware records every request. Routes are the registered echo path
// patterns, so label cardinality stays bounded.
func (m *Metrics) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err) // write the response now so the status is known
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			m.requests.WithLabelValues(route, methodLabel(c.Request().Method), strconv.Itoa(c.Response().Status)).Inc()
			m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}

// methodLabel returns the method as one of a fixed set of constant strings.
// Label values are kept by the registry, and a request's Method may alias a
// buffer that is reused for the next request (the router's fasthttp-to-echo
// bridge), which would change the label under the registry; the fixed set
// also bounds the label's cardinality.
func methodLabel(m string) string {
	if l, ok := methodLabels[m]; ok {
		return l
	}
	return "other"
}

// methodLabels maps each method to itself, as a constant string.
var methodLabels = func() map[string]string {
	l := map[string]string{}
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		l[m] = m
	}
	return l
}()
