package router

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/residency"
)

const maxPolicyBytes = 1 << 20

func (rt *Router) adminAuth(next echo.HandlerFunc) echo.HandlerFunc {
	want := []byte("Bearer " + rt.cfg.AdminToken)
	return func(c echo.Context) error {
		got := []byte(c.Request().Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="domicile-admin"`)
			return problem.New(http.StatusUnauthorized, "admin token required")
		}
		return next(c)
	}
}

type policyReply struct {
	Version int    `json:"version"`
	Policy  string `json:"policy,omitempty"`
}

// getPolicy returns the version in force on this router and its YAML.
func (rt *Router) getPolicy(c echo.Context) error {
	v, data := rt.cfg.Policies.Policy()
	if v < rt.Policy().Version() { // the index has not applied one yet
		return c.JSON(http.StatusOK, policyReply{Version: rt.Policy().Version()})
	}
	return c.JSON(http.StatusOK, policyReply{Version: v, Policy: string(data)})
}

// putPolicy validates a policy (YAML body) and writes it through the home
// index, so every router puts it in force at the same commit. A policy
// with problems is refused with all of them at once and changes nothing.
func (rt *Router) putPolicy(c echo.Context) error {
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, maxPolicyBytes+1))
	if err != nil {
		return problem.New(http.StatusBadRequest, "body: could not be read")
	}
	if len(body) > maxPolicyBytes {
		return problem.New(http.StatusRequestEntityTooLarge, "policy larger than 1 MiB")
	}
	p, err := residency.Parse(body)
	if err != nil {
		pr := problem.New(http.StatusUnprocessableEntity, "the policy is invalid; nothing was changed")
		var ve *residency.ValidationError
		if errors.As(err, &ve) {
			pr.Errors = ve.Problems
		} else {
			pr.Detail = err.Error()
		}
		return pr
	}
	if err := rt.routable(p); err != nil {
		pr := problem.New(http.StatusUnprocessableEntity, "the policy is invalid; nothing was changed")
		pr.Errors = []residency.Problem{{Field: "regions", Message: err.Error()}}
		return pr
	}
	if cur := rt.Policy().Version(); p.Version() <= cur {
		return problem.New(http.StatusConflict, "policy version must be greater than the one in force")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 10*time.Second)
	defer cancel()
	if err := rt.cfg.Policies.SetPolicy(ctx, p.Version(), body); err != nil {
		switch {
		case errors.Is(err, homeindex.ErrStalePolicy):
			return problem.New(http.StatusConflict, "policy version must be greater than the one in force")
		case errors.Is(err, homeindex.ErrInvalid):
			return problem.New(http.StatusUnprocessableEntity, err.Error())
		}
		pr := problem.New(http.StatusServiceUnavailable, "the home index could not commit the policy; nothing was changed")
		pr.RetryAfter = 1
		return pr
	}
	// Read your write: wait until this router's replica has it in force.
	for rt.Policy().Version() < p.Version() {
		select {
		case <-ctx.Done():
			return problem.New(http.StatusAccepted, "committed; this router has not applied it yet")
		case <-time.After(5 * time.Millisecond):
		}
	}
	rt.log.Info("policy applied through the admin API", "version", p.Version())
	return c.JSON(http.StatusOK, policyReply{Version: p.Version()})
}
