package oidc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/rs/cors"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/domicile/domicile/internal/oidcmeta"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// Endpoint paths, the same on every region and router (the routers serve
// discovery and the union JWKS themselves and forward the rest).
const (
	PathAuthorize  = oidcmeta.PathAuthorize
	PathToken      = oidcmeta.PathToken
	PathIntrospect = oidcmeta.PathIntrospect
	PathRevoke     = oidcmeta.PathRevoke
	PathUserinfo   = oidcmeta.PathUserinfo
	PathLogout     = oidcmeta.PathLogout
	PathKeys       = oidcmeta.PathKeys // served by the routers: the union of the regions' keys
	PathDiscovery  = oidc.DiscoveryEndpoint
)

// Users reads the users of this region (*store.DB).
type Users interface {
	UserByID(ctx context.Context, id string) (store.User, error)
}

// SessionVerifier verifies the session tokens of other regions
// (*session.RemoteVerifier).
type SessionVerifier interface {
	Verify(ctx context.Context, token string, now time.Time) (session.Claims, error)
}

// Logout describes a session that ended (RP-initiated logout or the hosted
// logout page).
type Logout struct {
	SessionID string
	Subject   string
	// Clients that got tokens in the session (of this region).
	Clients []string
	At      time.Time
}

// Config configures a Provider.
type Config struct {
	// Region is this region's name; Issuer the deployment's public URL,
	// the same for every region.
	Region string
	Issuer string
	// Keys sign this region's tokens.
	Keys *KeyRing
	// State keeps codes, refresh token families and revocations.
	State State
	// Clients is the client registry; ClientCacheTTL how long a client is
	// remembered (default 5s; negative: not at all).
	Clients        Clients
	ClientCacheTTL time.Duration
	// Users are this region's users, Sessions its session store and
	// OwnSessions the verifier of its session tokens.
	Users       Users
	Sessions    session.Store
	OwnSessions *session.Verifier
	// ForeignSessions verifies other regions' session tokens, for the
	// prompt=none requests of travelling users; nil: they log in again.
	ForeignSessions SessionVerifier
	// ForeignKeys, if set, gives the other regions' OpenID signing keys
	// (the routers' union JWKS), so that an id_token_hint signed by
	// another region is accepted at logout.
	ForeignKeys session.KeySource
	// SessionCookie is the name of the session cookie.
	SessionCookie string
	// LoginPath is the hosted login page (default /ui/login); it is given
	// return_to, the authorization request to come back to.
	LoginPath string
	// StepUpPath is the hosted page that asks a signed-in user for a
	// second factor (default /ui/login/stepup); it is given return_to,
	// the authorization request to come back to.
	StepUpPath string
	// SecondFactor reports whether a user of this region has a second
	// factor (TOTP or a passkey) to step up with; nil: none has.
	SecondFactor func(ctx context.Context, userID string) (bool, error)
	// LogoutRedirect is where a logout without a (valid)
	// post_logout_redirect_uri ends (default Issuer + /ui/login?signed_out=1).
	LogoutRedirect string
	// Default token lifetimes (a client may set its own).
	AccessTokenTTL  time.Duration // default 10m
	IDTokenTTL      time.Duration // default 1h
	RefreshTokenTTL time.Duration // default 30 days
	CodeTTL         time.Duration // default 1m
	// OnLogout is called when a session ends here: the place to write the
	// session's revocation to the home index (global logout). It runs
	// before the back-channel notifications are sent.
	OnLogout func(ctx context.Context, l Logout)
	// Backchannel sends OpenID Back-Channel Logout tokens (default: a
	// client with a 5s timeout); NoBackchannel turns them off.
	Backchannel   *http.Client
	NoBackchannel bool
	Logger        *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Provider is a region's OpenID Provider.
type Provider struct {
	cfg      Config
	op       *op.Provider
	handler  http.Handler
	clients  *clientCache
	storage  *storage
	foreign  *remoteKeys
	log      *slog.Logger
	now      func() time.Time
	bg       sync.WaitGroup // back-channel logouts in flight
	closeCtx context.Context
	cancel   context.CancelFunc
}

// New builds a Provider.
func New(cfg Config) (*Provider, error) {
	switch {
	case cfg.Region == "":
		return nil, errors.New("oidc: region: required")
	case cfg.Keys == nil:
		return nil, errors.New("oidc: keys: required")
	case cfg.State == nil:
		return nil, errors.New("oidc: state: required")
	case cfg.Clients == nil:
		return nil, errors.New("oidc: clients: required")
	case cfg.Users == nil || cfg.Sessions == nil || cfg.OwnSessions == nil:
		return nil, errors.New("oidc: users, sessions and the session verifier: required")
	case cfg.Keys.region != cfg.Region:
		return nil, fmt.Errorf("oidc: keys of region %q, want %q", cfg.Keys.region, cfg.Region)
	}
	iss, err := url.Parse(cfg.Issuer)
	if err != nil || iss.Host == "" || (iss.Scheme != "https" && iss.Scheme != "http") || iss.RawQuery != "" || iss.Fragment != "" {
		return nil, fmt.Errorf("oidc: issuer %q: want an absolute http(s) URL without query or fragment", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimSuffix(cfg.Issuer, "/")
	if cfg.SessionCookie == "" {
		cfg.SessionCookie = "domicile_session"
	}
	if cfg.LoginPath == "" {
		cfg.LoginPath = "/ui/login"
	}
	if cfg.StepUpPath == "" {
		cfg.StepUpPath = "/ui/login/stepup"
	}
	if cfg.LogoutRedirect == "" {
		cfg.LogoutRedirect = cfg.Issuer + "/ui/login?signed_out=1"
	}
	defaults := []struct {
		d   *time.Duration
		def time.Duration
		max time.Duration
		who string
	}{
		{&cfg.AccessTokenTTL, DefaultAccessTTL, MaxTokenTTL, "access token"},
		{&cfg.IDTokenTTL, DefaultIDTokenTTL, MaxTokenTTL, "ID token"},
		{&cfg.RefreshTokenTTL, DefaultRefreshTTL, MaxRefreshTTL, "refresh token"},
		{&cfg.CodeTTL, time.Minute, 10 * time.Minute, "code"},
	}
	for _, d := range defaults {
		if *d.d <= 0 {
			*d.d = d.def
		}
		if *d.d > d.max {
			return nil, fmt.Errorf("oidc: %s lifetime %s: at most %s", d.who, *d.d, d.max)
		}
	}
	if cfg.ClientCacheTTL == 0 {
		cfg.ClientCacheTTL = defaultClientCache
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Backchannel == nil {
		cfg.Backchannel = &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	p := &Provider{cfg: cfg, log: cfg.Logger.With("component", "oidc"), now: cfg.Now}
	p.closeCtx, p.cancel = context.WithCancel(context.Background())
	p.clients = &clientCache{src: cfg.Clients, ttl: cfg.ClientCacheTTL, now: cfg.Now, m: map[string]cachedClient{}}
	p.storage = &storage{p: p}
	if cfg.ForeignKeys != nil {
		p.foreign = &remoteKeys{src: cfg.ForeignKeys, maxAge: 5 * time.Minute, minInterval: 10 * time.Second}
	}

	var cryptoKey [32]byte // op encrypts opaque access tokens with it; ours are JWTs
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, err
	}
	opts := []op.Option{
		op.WithIDTokenHintKeySet(&hintKeySet{p: p}),
		op.WithIDTokenHintVerifierOpts(op.WithSupportedIDTokenHintSigningAlgorithms(string(jose.EdDSA))),
	}
	if iss.Scheme == "http" {
		opts = append(opts, op.WithAllowInsecure()) // development on loopback
	}
	p.op, err = op.NewProvider(&op.Config{
		CryptoKey:                         cryptoKey,
		DefaultLogoutRedirectURI:          cfg.LogoutRedirect,
		CodeMethodS256:                    true,
		AuthMethodPost:                    true,
		GrantTypeRefreshToken:             true,
		SupportedScopes:                   []string{ScopeOpenID, ScopeProfile, ScopeEmail, ScopeOfflineAccess},
		SupportedClaims:                   supportedClaims,
		BackChannelLogoutSupported:        !cfg.NoBackchannel,
		BackChannelLogoutSessionSupported: !cfg.NoBackchannel,
	}, p.storage, op.StaticIssuer(cfg.Issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	srv := &server{LegacyServer: op.NewLegacyServer(p.op, endpoints), p: p}
	p.handler = op.RegisterLegacyServer(srv, unusedCallback,
		op.WithServerCORSOptions(&cors.Options{
			// Any origin may call the token, userinfo and introspection
			// endpoints (SPAs), without cookies: they take credentials
			// in the request, never the session.
			AllowOriginFunc:  func(string) bool { return true },
			AllowedMethods:   []string{http.MethodGet, http.MethodPost},
			AllowedHeaders:   []string{"Authorization", "Content-Type", "Accept"},
			AllowCredentials: false,
		}))
	return p, nil
}

var supportedClaims = oidcmeta.Claims

// endpoints are the routes op serves. Keys and discovery are not among
// them: the routers serve the union JWKS and discovery (this region's
// discovery is Server.Discovery, which names their URLs).
var endpoints = op.Endpoints{
	Authorization: op.NewEndpoint(PathAuthorize),
	Token:         op.NewEndpoint(PathToken),
	Introspection: op.NewEndpoint(PathIntrospect),
	Userinfo:      op.NewEndpoint(PathUserinfo),
	Revocation:    op.NewEndpoint(PathRevoke),
	EndSession:    op.NewEndpoint(PathLogout),
}

// unusedCallback answers op's login callback route: logins come back to
// the authorization endpoint itself (see Server.Authorize).
func unusedCallback(w http.ResponseWriter, r *http.Request) {
	op.WriteError(w, r, op.NewStatusError(oidc.ErrInvalidRequest().WithDescription("not used: return to "+PathAuthorize), http.StatusNotFound), nil)
}

// Close waits for the back-channel logout notifications in flight (at most
// their timeout).
func (p *Provider) Close() error {
	p.bg.Wait()
	p.cancel()
	return nil
}

// ForgetClient drops a client from the cache (after an admin change).
func (p *Provider) ForgetClient(id string) { p.clients.forget(id) }

// Keys returns the signing keys.
func (p *Provider) Keys() *KeyRing { return p.cfg.Keys }

// client returns a registered client; errUnknownClient if there is none.
func (p *Provider) client(ctx context.Context, id string) (*client, error) {
	return p.clients.get(ctx, id, p)
}

// maxRequestBytes bounds the body of a protocol request.
const maxRequestBytes = 64 << 10

// Handler serves the protocol endpoints (PathAuthorize and the other
// Path* but PathKeys). Around op it bounds request bodies, marks every
// answer no-store, adds the WWW-Authenticate header of 401 answers,
// refuses (421, problem+json) requests for another region, and turns a
// panic into a server_error.
func (p *Provider) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ow := &oauthWriter{ResponseWriter: w, path: r.URL.Path, issuer: p.cfg.Issuer}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				p.log.Error("oidc: panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				if !ow.wrote {
					op.WriteError(ow, r, oidc.ErrServerError(), nil)
				}
			}
		}()
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
		}
		if err := r.ParseForm(); err != nil {
			op.WriteError(ow, r, oidc.ErrInvalidRequest().WithDescription("the request could not be parsed"), nil)
			return
		}
		ctx := r.Context()
		switch r.URL.Path {
		case PathAuthorize, PathLogout:
			sess, err := p.sessionOf(r)
			if err != nil {
				p.log.Error("oidc: read session", "err", err)
				op.WriteError(ow, r, oidc.ErrServerError(), nil)
				return
			}
			if sess != nil && sess.Foreign && (r.URL.Path == PathLogout || r.Form.Get("prompt") != oidc.PromptNone) {
				problem.Write(w, problem.New(http.StatusMisdirectedRequest,
					"this request is for a user of region "+sess.Home+", not "+p.cfg.Region+" (only prompt=none is served for travelling users)"))
				return
			}
			ctx = context.WithValue(ctx, sessionKey{}, sess)
		case PathToken, PathIntrospect, PathRevoke:
			tok := r.Form.Get("token")
			if r.URL.Path == PathToken {
				tok = r.Form.Get("code")
				if tok == "" {
					tok = r.Form.Get("refresh_token")
				}
			}
			if region := tokenRegion(tok); region != "" && region != p.cfg.Region {
				problem.Write(w, problem.New(http.StatusMisdirectedRequest, "this token was issued by region "+region+", not "+p.cfg.Region))
				return
			}
		}
		p.handler.ServeHTTP(ow, r.WithContext(ctx))
	})
}

// tokenRegion is the region that issued a token: the prefix of a code or
// refresh token, the kid's region of a JWT; "" if it cannot tell.
func tokenRegion(tok string) string {
	if r, ok := opaqueRegion(tok); ok {
		return r
	}
	if strings.Count(tok, ".") == 2 {
		return tokenKIDRegion(tok)
	}
	return ""
}

// oauthWriter adds the WWW-Authenticate header of RFC 6749 (client
// authentication) and RFC 6750 (bearer tokens) to 401 and 403 answers.
type oauthWriter struct {
	http.ResponseWriter
	path, issuer string
	wrote        bool
}

func (w *oauthWriter) WriteHeader(status int) {
	if !w.wrote {
		w.wrote = true
		h := w.Header()
		switch {
		case w.path == PathUserinfo && status == http.StatusUnauthorized:
			h.Set("WWW-Authenticate", `Bearer realm="`+w.issuer+`", error="invalid_token"`)
		case w.path == PathUserinfo && status == http.StatusForbidden:
			h.Set("WWW-Authenticate", `Bearer realm="`+w.issuer+`", error="insufficient_scope"`)
		case status == http.StatusUnauthorized:
			h.Set("WWW-Authenticate", `Basic realm="`+w.issuer+`"`)
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *oauthWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *oauthWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sessionKey is the context key of the request's session (*reqSession,
// nil for none), resolved before op sees an authorization or logout
// request.
type sessionKey struct{}

// reqSession is the login session a request carries.
type reqSession struct {
	Subject   string
	SessionID string
	AuthTime  time.Time
	AMR       []string
	Expires   time.Time
	// Foreign: a session of another region (a travelling user), verified
	// with that region's key; Home names it.
	Foreign bool
	Home    string
}

func sessionFrom(ctx context.Context) *reqSession {
	s, _ := ctx.Value(sessionKey{}).(*reqSession)
	return s
}

// sessionOf resolves the session cookie: a live session of this region
// (checked in the session store), a valid session token of another region,
// or none (nil, also for an invalid or ended one). The error is a failure
// of the session store.
func (p *Provider) sessionOf(r *http.Request) (*reqSession, error) {
	ck, err := r.Cookie(p.cfg.SessionCookie)
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	now := p.now()
	claims, err := p.cfg.OwnSessions.Verify(ck.Value, now)
	if err == nil {
		sess, err := p.cfg.Sessions.Get(r.Context(), claims.SessionID)
		if errors.Is(err, session.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if sess.UserID != claims.Subject {
			return nil, nil
		}
		return &reqSession{Subject: sess.UserID, SessionID: sess.ID, AuthTime: sess.CreatedAt, AMR: claims.AMR, Expires: sess.ExpiresAt}, nil
	}
	if p.cfg.ForeignSessions == nil || !errors.Is(err, session.ErrUnknownKey) {
		return nil, nil
	}
	claims, err = p.cfg.ForeignSessions.Verify(r.Context(), ck.Value, now)
	if err != nil || claims.Home == p.cfg.Region {
		if err != nil {
			p.log.Debug("oidc: session of another region not accepted", "err", err)
		}
		return nil, nil
	}
	return &reqSession{Subject: claims.Subject, SessionID: claims.SessionID, AuthTime: claims.IssuedAt, AMR: claims.AMR,
		Expires: claims.Expiry, Foreign: true, Home: claims.Home}, nil
}
