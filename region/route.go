package region

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/internal/routesig"
)

// unrouted reports whether a path is served without a route header: the
// operational endpoints, which load balancers and the routers' health
// checks call directly, and the internal ones routers call.
func unrouted(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	// The admin API is called on the region's own address (with the
	// admin token), never through a router.
	return strings.HasPrefix(path, "/internal/") || strings.HasPrefix(path, "/admin/")
}

// requireRoute refuses, with 421 problem+json, every request that did not
// come through a router (no valid, fresh, unreplayed Domicile-Route
// header) or that a router sent for a user whose home is another region.
func (s *Server) requireRoute(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if unrouted(req.URL.Path) {
			return next(c)
		}
		route, err := s.route.VerifyRoute(req.Header.Get(routesig.Header), req.Method, req.RequestURI, time.Now())
		if err == nil {
			c.Set(routeKey, route)
			return next(c)
		}
		if errors.Is(err, routesig.ErrBusy) {
			p := problem.New(http.StatusServiceUnavailable, "too many routed requests to check for replays; try again")
			p.RetryAfter = 1
			return p
		}
		var detail string
		var wr *routesig.WrongRegionError
		switch {
		case errors.As(err, &wr):
			detail = "this request is for a user of region " + wr.Region + ", not " + s.cfg.Name
		case errors.Is(err, routesig.ErrMissing):
			detail = "requests reach a region only through a router"
		case errors.Is(err, routesig.ErrStale):
			detail = "the route header is outside its validity window"
		case errors.Is(err, routesig.ErrReplay):
			detail = "the route header was used before"
		default:
			detail = "the route header is not valid"
		}
		s.log.Warn("request refused: route header", "path", req.URL.Path, "err", err.Error())
		s.refused.WithLabelValues(routeReason(err)).Inc()
		return problem.New(http.StatusMisdirectedRequest, detail)
	}
}

// routeReason is the metrics label of a refusal.
func routeReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{routesig.ErrWrongRegion, "wrong_region"}, {routesig.ErrMissing, "missing"}, {routesig.ErrStale, "stale"},
		{routesig.ErrReplay, "replay"}, {routesig.ErrBadSignature, "bad_signature"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "malformed"
}

// routeKey is the echo context key of the verified route.
const routeKey = "domicile.route"

// routedBy refuses (421) a request whose router did not resolve it by the
// identifier key the region reads from it: the router and the region must
// agree on whose request it is, or a body that the two parse differently
// (duplicate fields, case variants) could place a user in a region that
// the residency policy does not give them.
func (s *Server) routedBy(c echo.Context, key homeindex.Key) error {
	r, _ := c.Get(routeKey).(routesig.Route)
	if r.HasIdent && r.Ident == key {
		return nil
	}
	s.refused.WithLabelValues("other_identifier").Inc()
	s.log.Warn("request refused: routed by another identifier", "key", key.String(), "route_has_identifier", r.HasIdent)
	return problem.New(http.StatusMisdirectedRequest, "the router resolved this request by another identifier")
}
