package oidc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/domicile/domicile/region/store"
)

// Clients is the client registry the provider reads: *store.DB, or a
// registry replicated to every region. Client's error wraps
// store.ErrNotFound for an unknown id.
type Clients interface {
	Client(ctx context.Context, id string) (store.Client, error)
}

// Grant types a client may be given.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
)

// Scopes the provider knows.
const (
	ScopeOpenID        = "openid"
	ScopeProfile       = "profile"
	ScopeEmail         = "email"
	ScopeOfflineAccess = "offline_access"
)

// DefaultScopes are the scopes of a client registered without a list.
var DefaultScopes = []string{ScopeOpenID, ScopeProfile, ScopeEmail, ScopeOfflineAccess}

// Lifetime bounds and defaults.
const (
	// MaxTokenTTL bounds the lifetime of access and ID tokens, and so how
	// long a retired signing key stays published (KeyRing retention).
	MaxTokenTTL = 24 * time.Hour
	// MaxRefreshTTL bounds the lifetime of a refresh token family.
	MaxRefreshTTL      = 366 * 24 * time.Hour
	DefaultAccessTTL   = 10 * time.Minute
	DefaultIDTokenTTL  = time.Hour
	DefaultRefreshTTL  = 30 * 24 * time.Hour
	defaultClientCache = 5 * time.Second
)

// secretBytes of randomness in a generated client secret.
const secretBytes = 32

// NewSecret returns a new client secret (256 random bits, base64url) and
// the hash the registry keeps.
func NewSecret() (secret string, hash []byte, err error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	return secret, HashSecret(secret), nil
}

// HashSecret is the stored form of a client secret: its SHA-256. The
// secrets are generated with 256 bits of entropy, so a slow hash would add
// cost to every token request and no safety.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// checkSecret compares a presented secret with a client's hash in constant
// time.
func checkSecret(c store.Client, secret string) bool {
	if c.Public() || secret == "" {
		return false
	}
	h := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(h[:], c.SecretHash) == 1
}

// ValidateClient checks a client's metadata before it is registered: known
// grant types (client_credentials only for a confidential client), at
// least one redirect URI for the code grant, absolute redirect URIs
// without fragment on https, on http only for a loopback host, and on a
// private-use scheme (RFC 8252) only for a public client; scopes as RFC
// 6749 tokens; lifetimes within bounds.
func ValidateClient(c store.Client) error {
	if !store.ValidClientID(c.ID) {
		return fmt.Errorf("client_id: %q: want 1 to %d of [A-Za-z0-9._~-]", c.ID, store.MaxClientIDLen)
	}
	seen := map[string]bool{}
	for _, g := range c.GrantTypes {
		switch g {
		case GrantAuthorizationCode, GrantRefreshToken:
		case GrantClientCredentials:
			if c.Public() {
				return errors.New("grant_types: client_credentials needs a confidential client (one with a secret)")
			}
		default:
			return fmt.Errorf("grant_types: %q is not supported (authorization_code, refresh_token, client_credentials)", g)
		}
		if seen[g] {
			return fmt.Errorf("grant_types: %q twice", g)
		}
		seen[g] = true
	}
	if len(c.GrantTypes) == 0 {
		return errors.New("grant_types: at least one")
	}
	if seen[GrantRefreshToken] && !seen[GrantAuthorizationCode] {
		return errors.New("grant_types: refresh_token needs authorization_code")
	}
	if seen[GrantAuthorizationCode] && len(c.RedirectURIs) == 0 {
		return errors.New("redirect_uris: at least one for the authorization_code grant")
	}
	for _, u := range c.RedirectURIs {
		if err := checkRedirectURI(u, c.Public()); err != nil {
			return fmt.Errorf("redirect_uris: %w", err)
		}
	}
	for _, u := range c.PostLogoutRedirectURIs {
		if err := checkRedirectURI(u, c.Public()); err != nil {
			return fmt.Errorf("post_logout_redirect_uris: %w", err)
		}
	}
	if c.BackchannelLogoutURI != "" {
		if err := checkRedirectURI(c.BackchannelLogoutURI, false); err != nil {
			return fmt.Errorf("backchannel_logout_uri: %w", err)
		}
	}
	for _, s := range c.Scopes {
		if !validScopeToken(s) {
			return fmt.Errorf("scopes: %q is not a scope token", s)
		}
	}
	switch {
	case c.AccessTokenTTL != 0 && (c.AccessTokenTTL < time.Minute || c.AccessTokenTTL > MaxTokenTTL):
		return fmt.Errorf("access_token_ttl: want 1m to %s", MaxTokenTTL)
	case c.IDTokenTTL != 0 && (c.IDTokenTTL < time.Minute || c.IDTokenTTL > MaxTokenTTL):
		return fmt.Errorf("id_token_ttl: want 1m to %s", MaxTokenTTL)
	case c.RefreshTokenTTL != 0 && (c.RefreshTokenTTL < time.Minute || c.RefreshTokenTTL > MaxRefreshTTL):
		return fmt.Errorf("refresh_token_ttl: want 1m to %s", MaxRefreshTTL)
	}
	return nil
}

// checkRedirectURI applies the registration rules of a redirect URI.
func checkRedirectURI(raw string, public bool) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("%q: want an absolute URI without fragment", raw)
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return fmt.Errorf("%q: no host", raw)
		}
	case "http":
		if !loopback(u.Hostname()) {
			return fmt.Errorf("%q: http only for a loopback host (localhost, 127.0.0.1, [::1]); use https", raw)
		}
	default:
		if !public {
			return fmt.Errorf("%q: a private-use scheme is for public (native) clients only", raw)
		}
		if !strings.Contains(u.Scheme, ".") {
			return fmt.Errorf("%q: a private-use scheme must be a reverse domain name (RFC 8252), such as com.example.app", raw)
		}
	}
	if u.User != nil {
		return fmt.Errorf("%q: no user information allowed", raw)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validScopeToken: RFC 6749 section 3.3 scope-token.
func validScopeToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// StaticClients serves clients declared in configuration (a development
// demo client) before asking Next. The secrets of declared clients are
// given in clear in the configuration and hashed here.
type StaticClients struct {
	m    map[string]store.Client
	Next Clients
}

// NewStaticClients validates the declared clients.
func NewStaticClients(list []store.Client, next Clients) (*StaticClients, error) {
	m := make(map[string]store.Client, len(list))
	for _, c := range list {
		if err := ValidateClient(c); err != nil {
			return nil, fmt.Errorf("client %s: %w", c.ID, err)
		}
		if _, dup := m[c.ID]; dup {
			return nil, fmt.Errorf("client %s: declared twice", c.ID)
		}
		m[c.ID] = c
	}
	return &StaticClients{m: m, Next: next}, nil
}

// Client returns a declared client, or Next's.
func (s *StaticClients) Client(ctx context.Context, id string) (store.Client, error) {
	if c, ok := s.m[id]; ok {
		return c, nil
	}
	if s.Next == nil {
		return store.Client{}, fmt.Errorf("client %s: %w", id, store.ErrNotFound)
	}
	return s.Next.Client(ctx, id)
}

// clientCache keeps clients for a few seconds, so that the token endpoint
// does not read the registry on every request. Updates made through this
// node's admin API are seen at once (Forget); others within the TTL.
type clientCache struct {
	src Clients
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[string]cachedClient
}

type cachedClient struct {
	c       *client
	err     error // a not-found answer, cached too
	expires time.Time
}

const maxCachedClients = 10000

// negativeClientTTL bounds how long an unknown client id is remembered.
const negativeClientTTL = time.Second

func (cc *clientCache) get(ctx context.Context, id string, p *Provider) (*client, error) {
	if cc.ttl > 0 {
		now := cc.now()
		cc.mu.Lock()
		e, ok := cc.m[id]
		cc.mu.Unlock()
		if ok && now.Before(e.expires) {
			return e.c, e.err
		}
	}
	sc, err := cc.src.Client(ctx, id)
	var c *client
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = errUnknownClient
	case err != nil:
		return nil, err // not cached
	default:
		c = newClient(sc, p)
	}
	if cc.ttl > 0 && store.ValidClientID(id) {
		cc.mu.Lock()
		if len(cc.m) >= maxCachedClients {
			cc.m = make(map[string]cachedClient)
		}
		ttl := cc.ttl
		if err != nil {
			// An unknown id is cached briefly (it spares the registry a
			// flood of made-up ids), not for the whole TTL: a client just
			// registered elsewhere reaches this node's replica soon.
			ttl = min(ttl, negativeClientTTL)
		}
		cc.m[id] = cachedClient{c: c, err: err, expires: cc.now().Add(ttl)}
		cc.mu.Unlock()
	}
	return c, err
}

func (cc *clientCache) forget(id string) {
	cc.mu.Lock()
	delete(cc.m, id)
	cc.mu.Unlock()
}

var errUnknownClient = errors.New("unknown client")

// client is a registered client as the op package sees it (op.Client).
type client struct {
	store.Client
	accessTTL, idTTL, refreshTTL time.Duration
	grants                       []oidc.GrantType
}

func newClient(c store.Client, p *Provider) *client {
	cl := &client{Client: c, accessTTL: c.AccessTokenTTL, idTTL: c.IDTokenTTL, refreshTTL: c.RefreshTokenTTL}
	if cl.accessTTL <= 0 {
		cl.accessTTL = p.cfg.AccessTokenTTL
	}
	if cl.idTTL <= 0 {
		cl.idTTL = p.cfg.IDTokenTTL
	}
	if cl.refreshTTL <= 0 {
		cl.refreshTTL = p.cfg.RefreshTokenTTL
	}
	if len(cl.Scopes) == 0 {
		cl.Scopes = DefaultScopes
	}
	for _, g := range c.GrantTypes {
		cl.grants = append(cl.grants, oidc.GrantType(g))
	}
	return cl
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                    { return c.ID }
func (c *client) RedirectURIs() []string           { return c.Client.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return c.Client.PostLogoutRedirectURIs }

// ApplicationType: public clients are native apps or SPAs (op then allows
// their private-use schemes); confidential ones web servers.
func (c *client) ApplicationType() op.ApplicationType {
	if c.Public() {
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.Public() {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

// ResponseTypes: "code" only. Server.VerifyAuthRequest shows op any
// request as one for a code and Server.Authorize answers the others with
// unsupported_response_type (RFC 6749 section 4.1.2.1), not op's
// unauthorized_client.
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (c *client) GrantTypes() []oidc.GrantType         { return c.grants }
func (c *client) LoginURL(string) string               { return "" } // login is not op's: see Server.Authorize
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration       { return c.idTTL }
func (c *client) DevMode() bool                        { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) IsScopeAllowed(scope string) bool     { return slices.Contains(c.Scopes, scope) }

func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c *client) allows(grant string) bool { return slices.Contains(c.Client.GrantTypes, grant) }
