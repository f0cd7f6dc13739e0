package router

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/internal/ratelimit"
)

// RateLimits configures the per-client limits on credential endpoints: a
// token bucket per client address and one per identifier (by its keyed
// hash), both of which a request must pass.
type RateLimits struct {
	// Paths are the credential endpoints (default: DefaultCredentialPaths).
	Paths []string
	// PerIP: requests per second and burst per client address (IPv6 per
	// /64). Default 20/s, burst 100. A negative rate disables it.
	PerIP Limit
	// PerIdentifier: per identifier. Default 1/s, burst 20. A negative
	// rate disables it.
	PerIdentifier Limit
}

// Limit is a token bucket: Rate tokens per second, up to Burst.
type Limit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// DefaultCredentialPaths are the credential endpoints rate limits apply to
// when RateLimits.Paths is empty.
var DefaultCredentialPaths = []string{"/login", "/login/mfa", "/signup", "/password/reset", "/password/reset/confirm", "/oauth2/token",
	"/ui/login", "/ui/login/mfa", "/ui/signup", "/ui/password/reset", "/ui/password/reset/confirm",
	// Passkey ceremonies: a passwordless login carries no identifier, so
	// only the per-address limit applies to it.
	"/passkeys/login/begin", "/passkeys/login/finish", "/passkeys/register/begin", "/passkeys/register/finish",
	"/ui/login/passkey/begin", "/ui/login/passkey", "/ui/account/passkeys/begin", "/ui/account/passkeys/add"}

type limiters struct {
	paths map[string]bool
	ip    *ratelimit.Limiter // nil: off
	id    *ratelimit.Limiter // nil: off
}

func newLimiters(c RateLimits) (limiters, error) {
	l := limiters{paths: map[string]bool{}}
	if len(c.Paths) == 0 {
		c.Paths = DefaultCredentialPaths
	}
	for _, p := range c.Paths {
		l.paths[p] = true
	}
	mk := func(field string, lim Limit, rate float64, burst int) (*ratelimit.Limiter, error) {
		if lim.Rate < 0 {
			return nil, nil
		}
		if lim.Rate == 0 {
			lim.Rate = rate
		}
		if lim.Burst == 0 {
			lim.Burst = burst
		}
		r, err := ratelimit.New(ratelimit.Config{Rate: lim.Rate, Burst: lim.Burst})
		if err != nil {
			return nil, fmt.Errorf("router: rate_limits.%s: %w", field, err)
		}
		return r, nil
	}
	var err error
	if l.ip, err = mk("per_ip", c.PerIP, 20, 100); err != nil {
		return l, err
	}
	if l.id, err = mk("per_identifier", c.PerIdentifier, 1, 20); err != nil {
		return l, err
	}
	return l, nil
}

// limit takes a token from the client's and the identifier's buckets.
func (rt *Router) limit(client netip.Addr, id *identity, now time.Time) *problem.Problem {
	var wait time.Duration
	if rt.limits.ip != nil && client.IsValid() {
		if ok, ra := rt.limits.ip.Allow(ratelimit.KeyIP(client), now); !ok {
			wait = ra
		}
	}
	if wait == 0 && rt.limits.id != nil && id.hasID {
		if ok, ra := rt.limits.id.Allow(id.key, now); !ok {
			wait = ra
		}
	}
	if wait == 0 {
		return nil
	}
	p := problem.New(fasthttp.StatusTooManyRequests, "too many attempts; try again later")
	p.RetryAfter = int(math.Ceil(wait.Seconds()))
	return p
}
