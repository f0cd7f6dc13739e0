package region

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/httpserver"
	"github.com/domicile/domicile/internal/metrics"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/oidc"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// Index is the part of the home index a region writes: claims at sign-up,
// releases when a write fails or a user is deleted.
type Index interface {
	// ClaimByRule claims keys; rule is the residency rule that picked this
	// region (from the router), kept as a count in the index.
	ClaimByRule(ctx context.Context, keys []homeindex.Key, region, owner, rule string) error
	Release(ctx context.Context, keys []homeindex.Key, owner string) error
}

// SessionRevoker is implemented by an Index that can revoke sessions
// globally (*homeindex.Client does): Revoke(sid, until) makes every router
// reject the session's tokens from its commit on.
type SessionRevoker interface {
	Revoke(ctx context.Context, sessionID string, until time.Time) error
}

// revokeSession revokes a session globally, if the index can, and waits
// for the commit: when a logout answers, the routers reject the session.
// A failure is logged (the session is already gone from this region's
// store, so the region refuses it in any case).
func (s *Server) revokeSession(ctx context.Context, sid string, until time.Time) {
	r, ok := s.cfg.Index.(SessionRevoker)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.Revoke(ctx, sid, until); err != nil {
		s.log.Error("global logout: revoke in the home index", "err", err)
	}
}

// Users is the part of the regional store the HTTP layer needs.
type Users interface {
	CreateUser(ctx context.Context, u store.User) error
	UserByEmail(ctx context.Context, email string) (store.User, error)
	Ping(ctx context.Context) error
}

// Config configures a regional node.
type Config struct {
	Name     string // region id, e.g. "eu-west"
	Users    Users
	Sessions session.Store
	// Devices keeps remembered devices (the browsers where a second
	// factor is not asked again for a while), in the home region's session
	// store; default: Sessions, if it is a DeviceStore (session.Redis and
	// session.Memory are). nil: devices are never remembered.
	Devices    session.DeviceStore
	Index      Index
	Hasher     *homeindex.Hasher
	SessionTTL time.Duration // default 12h
	Argon2     Argon2Params  // default DefaultArgon2
	Logger     *slog.Logger
	// RouteKey verifies the Domicile-Route header of every request (the
	// routers sign with it); at least 32 bytes.
	RouteKey []byte
	// SessionKey signs this region's session tokens.
	SessionKey *session.SigningKey
	// Accounts, MFA and Audit: the rest of the region's storage (*store.DB).
	Accounts Accounts
	MFA      MFA
	Consent  Consent
	Admin    AdminStore
	Audit    Audit
	// AdminToken guards /admin/v1 (Bearer); empty disables the admin API.
	AdminToken string
	// Purposes users may consent to (default DefaultPurposes).
	Purposes []Purpose
	// Mailer sends verification and reset links (an Outbox in dev).
	Mailer mail.Mailer
	// PublicURL is where users reach the service (a router, or the CDN in
	// front of the routers); emailed links point there.
	PublicURL string
	// Passkeys stores WebAuthn credentials (*store.DB).
	Passkeys Passkeys
	// RPID is the WebAuthn relying party id, the domain passkeys are bound
	// to; it must be the same in every region. Default: the host of
	// PublicURL ("localhost" for a loopback address).
	RPID string
	// RPOrigins are the origins (scheme://host[:port]) the hosted pages
	// are served from, on RPID or a subdomain of it. Default: PublicURL's.
	RPOrigins []string
	// OIDC configures the OpenID Provider (keys, state, clients, optional
	// hooks); nil turns the protocol endpoints off. The region fills in
	// the rest: its name, PublicURL as the issuer, Accounts as the users,
	// Sessions and its session verifier. OIDC.Clients defaults to
	// ClientAdmin.
	OIDC *oidc.Config
	// ClientAdmin is the client registry the admin API writes
	// (/admin/v1/clients; *store.DB); nil turns that API off.
	ClientAdmin ClientAdmin
}

// HeaderRegion names, on every response, the region that served it.
const HeaderRegion = "Domicile-Region"

// SessionCookie is the cookie that carries the session token (the router
// reads the same name).
const SessionCookie = "domicile_session"

// Password length limits (characters).
const (
	MinPasswordLen = 8
	MaxPasswordLen = 128
	maxBodyBytes   = 64 << 10
)

// Server is a regional node's HTTP server.
type Server struct {
	cfg       Config
	echo      *echo.Echo
	metrics   *metrics.Metrics
	log       *slog.Logger
	dummyHash string // verified against for unknown users, so timing matches
	signups   *prometheus.CounterVec
	logins    *prometheus.CounterVec
	refused   *prometheus.CounterVec
	route     *routesig.Verifier
	issuer    *session.Issuer
	sessions  *session.Verifier // this region's own session tokens
	jwks      []byte
	recent    recentFailures
	bg        sync.WaitGroup // writes done after answering
	// webauthn is the relying party of passkeys; ceremonies seals their
	// state between begin and finish.
	webauthn   *webauthn.WebAuthn
	ceremonies *ceremonies
	passkeyOps *prometheus.CounterVec
	// oidc is the OpenID Provider (nil when not configured).
	oidc *oidc.Provider
}

// New builds a regional server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Name == "":
		return nil, errors.New("region: name: required")
	case cfg.Users == nil:
		return nil, errors.New("region: store: required")
	case cfg.Sessions == nil:
		return nil, errors.New("region: sessions: required")
	case cfg.Index == nil:
		return nil, errors.New("region: index: required")
	case cfg.Hasher == nil:
		return nil, errors.New("region: index secret: required")
	case cfg.SessionKey == nil:
		return nil, errors.New("region: session key: required")
	case cfg.Accounts == nil || cfg.Audit == nil || cfg.MFA == nil || cfg.Admin == nil || cfg.Consent == nil || cfg.Passkeys == nil:
		return nil, errors.New("region: store: accounts, mfa, passkeys and audit required")
	case cfg.Mailer == nil:
		return nil, errors.New("region: mail: required")
	case cfg.PublicURL == "":
		return nil, errors.New("region: public_url: required (where emailed links point)")
	}
	route, err := routesig.NewVerifier(cfg.RouteKey, cfg.Name, 0)
	if err != nil {
		return nil, fmt.Errorf("region: route key: %w", err)
	}
	issuer, err := session.NewIssuer(cfg.Name, cfg.SessionKey)
	if err != nil {
		return nil, fmt.Errorf("region: session key: %w", err)
	}
	jwks, err := session.MarshalJWKS([]session.PublicKey{issuer.PublicKey()})
	if err != nil {
		return nil, fmt.Errorf("region: session key: %w", err)
	}
	rp, err := newRelyingParty(cfg)
	if err != nil {
		return nil, err
	}
	cers, err := newCeremonies(cfg.RouteKey)
	if err != nil {
		return nil, fmt.Errorf("region: route key: %w", err)
	}
	own := session.NewVerifier()
	if err := own.SetRegionKeys(cfg.Name, []session.PublicKey{issuer.PublicKey()}); err != nil {
		return nil, fmt.Errorf("region: session key: %w", err)
	}
	if cfg.Devices == nil {
		cfg.Devices, _ = cfg.Sessions.(session.DeviceStore)
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if len(cfg.Purposes) == 0 {
		cfg.Purposes = DefaultPurposes
	}
	if cfg.Argon2 == (Argon2Params{}) {
		cfg.Argon2 = DefaultArgon2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dummy, err := hashPassword(cfg.Argon2, "dummy password for unknown users")
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger.With("region", cfg.Name),
		metrics:    metrics.New("region", cfg.Name),
		dummyHash:  dummy,
		route:      route,
		issuer:     issuer,
		sessions:   own,
		jwks:       jwks,
		webauthn:   rp,
		ceremonies: cers,
		passkeyOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domicile_region_passkey_ceremonies_total", Help: "Passkey registrations and logins by step and outcome.",
		}, []string{"ceremony", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domicile_region_misrouted_total", Help: "Requests refused with 421 because their route header was missing, invalid, stale, replayed or for another region.",
		}, []string{"reason"}),
		signups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domicile_region_signups_total", Help: "Sign-up attempts by outcome.",
		}, []string{"outcome"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domicile_region_logins_total", Help: "Password logins by outcome.",
		}, []string{"outcome"}),
	}
	s.metrics.Register(s.signups, s.logins, s.refused, s.passkeyOps)
	if cfg.OIDC != nil {
		oc := *cfg.OIDC
		oc.Region, oc.Issuer = cfg.Name, cfg.PublicURL
		oc.Users, oc.Sessions, oc.OwnSessions = cfg.Accounts, cfg.Sessions, own
		oc.SessionCookie, oc.LoginPath, oc.StepUpPath = SessionCookie, "/ui/login", "/ui/login/stepup"
		oc.SecondFactor = s.hasSecondFactor
		if oc.Clients == nil && cfg.ClientAdmin != nil {
			oc.Clients = cfg.ClientAdmin
		}
		if oc.Logger == nil {
			oc.Logger = s.log
		}
		if oc.OnLogout == nil {
			// Global logout: every router rejects the session from the
			// commit of the revocation on. A session token lives no longer
			// than SessionTTL after the session began.
			oc.OnLogout = func(ctx context.Context, l oidc.Logout) {
				s.revokeSession(ctx, l.SessionID, l.At.Add(cfg.SessionTTL))
			}
		}
		if s.oidc, err = oidc.New(oc); err != nil {
			return nil, fmt.Errorf("region: %w", err)
		}
	}

	e := httpserver.NewEcho(s.log, s.metrics)
	e.Use(s.requireRoute)
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set(HeaderRegion, s.cfg.Name)
			return next(c)
		}
	})
	e.GET("/readyz", s.readyz)
	e.GET("/internal/session-keys", s.sessionKeys)
	e.POST("/signup", s.signup)
	e.POST("/login", s.login)
	e.POST("/verify-email", s.verifyEmail)
	e.GET("/verify-email", s.verifyEmail)
	e.POST("/password/reset", s.requestReset)
	e.POST("/password/reset/confirm", s.confirmReset)
	e.GET("/account", s.getAccount)
	e.PATCH("/account", s.patchAccount)
	e.DELETE("/account", s.deleteAccount)
	e.GET("/account/export", s.exportAccount)
	e.POST("/account/mfa/totp", s.enrolTOTP)
	e.POST("/account/mfa/totp/confirm", s.confirmTOTP)
	e.DELETE("/account/mfa/totp", s.removeTOTP)
	e.POST("/login/mfa", s.loginMFA)
	e.GET("/account/consent", s.getConsent)
	e.POST("/account/consent", s.postConsent)
	e.GET("/account/consent/history", s.consentHistory)
	e.POST("/passkeys/register/begin", s.registerPasskeyBegin)
	e.POST("/passkeys/register/finish", s.registerPasskeyFinish)
	e.POST("/passkeys/login/begin", s.loginPasskeyBegin)
	e.POST("/passkeys/login/finish", s.loginPasskeyFinish)
	e.GET("/passkeys", s.listPasskeys)
	e.PATCH("/passkeys/:id", s.renamePasskey)
	e.DELETE("/passkeys/:id", s.deletePasskey)
	s.registerPages(e)
	if s.oidc != nil {
		// The protocol endpoints (op's router), routed like the rest; the
		// signing keys are public, as the session keys are.
		h := echo.WrapHandler(s.oidc.Handler())
		e.Any("/oauth2/*", h)
		e.Any(oidc.PathUserinfo, h)
		e.GET(oidc.PathDiscovery, h)
		e.GET("/internal/oidc-keys", s.oidcKeys)
	}
	admin := e.Group("/admin/v1", s.adminAuth)
	admin.GET("/users", s.adminListUsers)
	admin.GET("/users/:id", s.adminGetUser)
	admin.POST("/users/:id/disable", s.adminDisable)
	admin.DELETE("/users/:id/mfa", s.adminResetMFA)
	admin.DELETE("/users/:id", s.adminDeleteUser)
	if cfg.ClientAdmin != nil {
		admin.POST("/clients", s.adminCreateClient)
		admin.GET("/clients", s.adminListClients)
		admin.GET("/clients/:id", s.adminGetClient)
		admin.PUT("/clients/:id", s.adminUpdateClient)
		admin.POST("/clients/:id/secret", s.adminRotateClientSecret)
		admin.DELETE("/clients/:id", s.adminDeleteClient)
	}
	if s.oidc != nil {
		admin.POST("/oidc/keys/rotate", s.adminRotateOIDCKey)
	}
	s.echo = e
	return s, nil
}

// sessionKeys serves the public keys of this region's session tokens
// (a JWKS), which routers fetch to verify tokens offline.
func (s *Server) sessionKeys(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "max-age=60")
	return c.Blob(http.StatusOK, "application/jwk-set+json", s.jwks)
}

// oidcKeys serves the public keys of this region's OpenID signing keys (a
// JWKS of every key not yet retired: the signer and those whose tokens may
// still be valid), which the routers merge into the union JWKS.
func (s *Server) oidcKeys(c echo.Context) error {
	if err := s.oidc.Keys().Reload(); err != nil {
		s.log.Warn("oidc: reload keys", "err", err)
	}
	b, err := s.oidc.Keys().JWKS(time.Now())
	if err != nil {
		return fmt.Errorf("oidc keys: %w", err)
	}
	c.Response().Header().Set("Cache-Control", "max-age=60")
	return c.Blob(http.StatusOK, "application/jwk-set+json", b)
}

// OIDC returns the OpenID Provider, nil if none is configured.
func (s *Server) OIDC() *oidc.Provider { return s.oidc }

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Users.Ping(ctx); err != nil {
		s.log.Warn("readiness: database unreachable", "err", err)
		p := problem.New(http.StatusServiceUnavailable, "database unreachable")
		p.RetryAfter = 1
		return p
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready", "region": s.cfg.Name})
}

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name,omitempty"` // sign-up only
}

// MaxNameLen bounds the optional display name (characters).
const MaxNameLen = 200

// decodeJSON reads a small JSON object strictly and maps every failure to
// a 400/413/415 problem that says what was wrong.
func decodeJSON(c echo.Context, v any) error {
	req := c.Request()
	// The router reads the identifier only from bodies it knows to be JSON
	// (or forms), so the region reads no other.
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return problem.New(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBodyBytes+1))
	if err != nil {
		return problem.New(http.StatusBadRequest, "body: could not be read")
	}
	if len(body) > maxBodyBytes {
		return problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", maxBodyBytes))
	}
	if !utf8.Valid(body) {
		return problem.New(http.StatusBadRequest, "body: not valid UTF-8")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return problem.New(http.StatusBadRequest, "body: invalid JSON: "+err.Error())
	}
	return nil
}

func (s *Server) signup(c echo.Context) error {
	var in credentials
	if err := decodeJSON(c, &in); err != nil {
		s.signups.WithLabelValues("bad_request").Inc()
		return err
	}
	email, err := homeindex.NormalizeEmail(in.Email)
	if err != nil {
		s.signups.WithLabelValues("bad_request").Inc()
		return problem.New(http.StatusBadRequest, "email: "+err.Error())
	}
	key := s.cfg.Hasher.EmailKey(email)
	if err := s.routedBy(c, key); err != nil {
		s.signups.WithLabelValues("misrouted").Inc()
		return err
	}
	if err := checkPasswordPolicy(in.Password); err != nil {
		s.signups.WithLabelValues("bad_request").Inc()
		return problem.New(http.StatusBadRequest, err.Error())
	}
	if n := utf8.RuneCountInString(in.Name); n > MaxNameLen {
		s.signups.WithLabelValues("bad_request").Inc()
		return problem.New(http.StatusBadRequest, fmt.Sprintf("name: at most %d characters", MaxNameLen))
	}
	u, err := s.createAccount(c, email, in.Name, in.Password, key)
	switch {
	case errors.Is(err, errAccountExists):
		return problem.New(http.StatusConflict, "an account with this email address already exists")
	case errors.Is(err, errIndexUnavailable):
		p := problem.New(http.StatusServiceUnavailable, "the home index is unavailable; try again")
		p.RetryAfter = 1
		return p
	case err != nil:
		return err
	}
	return c.JSON(http.StatusCreated, map[string]string{"id": u.ID, "home": s.cfg.Name})
}

// errBadLogin is the one answer for an unknown email and a wrong password.
func errBadLogin() error {
	return problem.New(http.StatusUnauthorized, "invalid email or password")
}

func (s *Server) login(c echo.Context) error {
	var in credentials
	if err := decodeJSON(c, &in); err != nil {
		s.logins.WithLabelValues("bad_request").Inc()
		return err
	}
	email, err := homeindex.NormalizeEmail(in.Email)
	if err != nil || utf8.RuneCountInString(in.Password) > MaxPasswordLen {
		s.logins.WithLabelValues("bad_request").Inc()
		return errBadLogin()
	}
	if err := s.routedBy(c, s.cfg.Hasher.EmailKey(email)); err != nil {
		s.logins.WithLabelValues("misrouted").Inc()
		return err
	}
	u, res, err := s.checkPassword(c, email, in.Password)
	switch {
	case err != nil:
		return err
	case res == passwordLocked:
		return errLocked()
	case res == passwordBad:
		return errBadLogin()
	}
	ctx := c.Request().Context()
	if need, err := s.mfaRequired(ctx, u.ID); err != nil {
		return fmt.Errorf("login: %w", err)
	} else if need {
		if s.rememberedDevice(c, u.ID) {
			return s.startSession(c, u, methodRememberedDevice)
		}
		return s.startMFALogin(c, u)
	}
	return s.startSession(c, u, "password")
}

// homeRule accepts the router's rule id only if it looks like one.
func homeRule(s string) string {
	if len(s) > homeindex.MaxRuleLen {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return ""
		}
	}
	return s
}

// newUserID returns an opaque user id prefixed with the home region, so
// any node can tell where a user lives without a lookup.
func newUserID(region string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return region + "." + hex.EncodeToString(b), nil
}
