package region

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/store"
)

// Purpose is something users may consent to. Its Version rises whenever
// its text changes: consent given to an older version no longer counts.
type Purpose struct {
	Name        string `json:"name" yaml:"name"`
	Version     int    `json:"version" yaml:"version"`
	Description string `json:"description" yaml:"description"`
}

// DefaultPurposes are the purposes of a region configured with none.
var DefaultPurposes = []Purpose{
	{Name: "marketing", Version: 1, Description: "Send me news and offers by email."},
	{Name: "analytics", Version: 1, Description: "Use my activity, pseudonymised, to improve the service."},
}

// Consent is the storage of consent records. *store.DB implements it.
type Consent interface {
	AppendConsent(ctx context.Context, userID string, r store.ConsentRecord) (store.ConsentRecord, error)
	ConsentHistory(ctx context.Context, userID string) ([]store.ConsentRecord, error)
}

// consentState is a purpose with the user's current decision.
type consentState struct {
	Purpose
	// Granted: the latest record for the purpose grants it at the current
	// version.
	Granted bool `json:"granted"`
	// GrantedVersion is the version of the latest grant, 0 if none; a
	// grant of an older version means the user must be asked again.
	GrantedVersion int `json:"granted_version,omitempty"`
}

// consentStates derives the current state of every purpose from the log.
func (s *Server) consentStates(history []store.ConsentRecord) []consentState {
	out := make([]consentState, 0, len(s.cfg.Purposes))
	for _, p := range s.cfg.Purposes {
		st := consentState{Purpose: p}
		for _, r := range history { // oldest first: the last one wins
			if r.Purpose != p.Name {
				continue
			}
			st.Granted = r.Granted && r.Version == p.Version
			st.GrantedVersion = 0
			if r.Granted {
				st.GrantedVersion = r.Version
			}
		}
		out = append(out, st)
	}
	return out
}

// getConsent shows the purposes and the user's current decisions.
func (s *Server) getConsent(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	h, err := s.cfg.Consent.ConsentHistory(c.Request().Context(), sess.UserID)
	if err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{"purposes": s.consentStates(h)})
}

// consentHistory exports the user's consent log.
func (s *Server) consentHistory(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	h, err := s.cfg.Consent.ConsentHistory(c.Request().Context(), sess.UserID)
	if err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{"history": h})
}

// postConsent grants or withdraws consent to a purpose, at the version the
// user was shown (which must be the current one).
func (s *Server) postConsent(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	var in struct {
		Purpose string `json:"purpose"`
		Version int    `json:"version"`
		Granted *bool  `json:"granted"`
	}
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	i := slices.IndexFunc(s.cfg.Purposes, func(p Purpose) bool { return p.Name == in.Purpose })
	switch {
	case i < 0:
		return problem.New(http.StatusBadRequest, fmt.Sprintf("purpose: %q is not a purpose of this service", truncate(in.Purpose, 64)))
	case in.Granted == nil:
		return problem.New(http.StatusBadRequest, "granted: required (true or false)")
	case in.Version != s.cfg.Purposes[i].Version:
		return problem.New(http.StatusConflict, fmt.Sprintf("version: the current text of %q is version %d", in.Purpose, s.cfg.Purposes[i].Version))
	}
	r, err := s.cfg.Consent.AppendConsent(c.Request().Context(), sess.UserID, store.ConsentRecord{Purpose: in.Purpose, Version: in.Version, Granted: *in.Granted})
	if err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	action := "user.consent_withdrawn"
	if r.Granted {
		action = "user.consent_granted"
	}
	s.audit(c, sess.UserID, action, sess.UserID, map[string]string{"purpose": r.Purpose, "version": fmt.Sprint(r.Version)})
	return c.JSON(http.StatusOK, r)
}
