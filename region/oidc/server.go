package oidc

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/domicile/domicile/internal/oidcmeta"
	"github.com/domicile/domicile/region/store"
)

// server is the op.Server of a Provider: op's LegacyServer (request
// parsing, routing, client authentication order, the checks of an
// authorization request, ID tokens), with the methods that differ from it
// replaced. Errors are *oidc.Error values (written by op in the RFC 6749
// format); op.StatusError sets the status where the RFC wants another
// than 400.
type server struct {
	*op.LegacyServer
	p *Provider
}

// Errors with the status RFC 6749 and 6750 give them.
func errInvalidClient(desc string) error {
	return op.NewStatusError(oidc.ErrInvalidClient().WithDescription("%s", desc), http.StatusUnauthorized)
}

func errServer(err error) error {
	return op.NewStatusError(oidc.ErrServerError().WithParent(err), http.StatusInternalServerError)
}

func errInvalidToken(desc string) error {
	return op.NewStatusError(&oidc.Error{ErrorType: "invalid_token", Description: desc}, http.StatusUnauthorized)
}

func errInvalidGrant(desc string) error {
	return oidc.ErrInvalidGrant().WithDescription("%s", desc)
}

// Discovery describes what this provider does, and nothing it does not (op's
// default lists the implicit and JWT-bearer grants).
func (s *server) Discovery(ctx context.Context, _ *op.Request[struct{}]) (*op.Response, error) {
	iss := op.IssuerFromContext(ctx)
	resp := op.NewResponse(s.p.Discovery(iss))
	resp.Header.Set("Cache-Control", "public, max-age=300")
	return resp, nil
}

// Discovery returns the metadata for issuer (the same document the routers
// serve for the deployment, with this provider's algorithm).
func (p *Provider) Discovery(iss string) any {
	d := oidcmeta.NewDiscovery(iss, []string{"EdDSA"}, !p.cfg.NoBackchannel)
	return &d
}

// JWTProfile: the JWT bearer grant is not offered (op would take it).
func (s *server) JWTProfile(context.Context, *op.Request[oidc.JWTProfileGrantRequest]) (*op.Response, error) {
	return nil, oidc.ErrUnsupportedGrantType().WithDescription("%s not supported", oidc.GrantTypeBearer)
}

// VerifyClient authenticates the client of a token, revocation or
// introspection request with one registry read and a constant-time
// comparison of the secret's hash. A public client is identified by its
// client_id alone (PKCE protects its codes); one that sends a secret, or a
// confidential one that sends none or the wrong one, is refused.
func (s *server) VerifyClient(ctx context.Context, r *op.Request[op.ClientCredentials]) (op.Client, error) {
	c, err := s.p.authenticate(ctx, r.Data, true)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (p *Provider) authenticate(ctx context.Context, cc *op.ClientCredentials, publicOK bool) (*client, error) {
	if cc.ClientAssertion != "" {
		return nil, errInvalidClient("client assertions (private_key_jwt) are not supported")
	}
	c, err := p.client(ctx, cc.ClientID)
	if errors.Is(err, errUnknownClient) {
		return nil, errInvalidClient("unknown client or wrong secret")
	}
	if err != nil {
		p.log.Error("oidc: read client", "client", cc.ClientID, "err", err)
		return nil, errServer(err)
	}
	if c.Public() {
		if cc.ClientSecret != "" || !publicOK {
			return nil, errInvalidClient("this client has no secret; it may not authenticate with one here")
		}
		return c, nil
	}
	if !checkSecret(c.Client, cc.ClientSecret) {
		return nil, errInvalidClient("unknown client or wrong secret")
	}
	return c, nil
}

// verifierChars: RFC 7636 section 4.1.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// CodeExchange redeems a code. Unlike op's, it checks the PKCE verifier
// whenever the authorization request had a challenge (op skips it for a
// confidential client that sends no verifier: a downgrade), and a code is
// good once: a second use is refused and revokes what the first one got
// (RFC 6749 section 4.1.2), even when the two race.
func (s *server) CodeExchange(ctx context.Context, r *op.ClientRequest[oidc.AccessTokenRequest]) (*op.Response, error) {
	c := r.Client.(*client)
	code := r.Data.Code
	g, used, err := s.p.cfg.State.PeekCode(ctx, code)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, errInvalidGrant("the code is invalid or has expired")
	case err != nil:
		return nil, errServer(err)
	case used:
		s.p.revokeGrant(ctx, g)
		return nil, errInvalidGrant("the code was used already; the tokens issued for it are revoked")
	case g.ClientID != c.ID:
		return nil, errInvalidGrant("the code was issued to another client")
	case r.Data.RedirectURI != g.RedirectURI:
		return nil, errInvalidGrant("redirect_uri is not the one of the authorization request")
	}
	var challenge *oidc.CodeChallenge
	if g.Challenge != "" {
		challenge = &oidc.CodeChallenge{Challenge: g.Challenge, Method: oidc.CodeChallengeMethodS256}
		if r.Data.CodeVerifier != "" && !validVerifier(r.Data.CodeVerifier) {
			return nil, errInvalidGrant("code_verifier: want 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636)")
		}
	} else if c.Public() {
		return nil, errInvalidGrant("a public client's code needs PKCE")
	}
	if err := op.AuthorizeCodeChallenge(r.Data.CodeVerifier, challenge); err != nil {
		return nil, err
	}
	if g, err = s.p.cfg.State.UseCode(ctx, code); err != nil {
		if errors.Is(err, ErrCodeUsed) {
			s.p.revokeGrant(ctx, g)
			return nil, errInvalidGrant("the code was used already; the tokens issued for it are revoked")
		}
		if errors.Is(err, ErrNotFound) {
			return nil, errInvalidGrant("the code is invalid or has expired")
		}
		return nil, errServer(err)
	}
	refresh := ""
	if slices.Contains(g.Scopes, ScopeOfflineAccess) && c.allows(GrantRefreshToken) && !g.Foreign {
		if refresh, err = newOpaque(s.p.cfg.Region); err != nil {
			return nil, errServer(err)
		}
		f := Family{ID: g.Family, ClientID: g.ClientID, Subject: g.Subject, SessionID: g.SessionID, Scopes: g.Scopes,
			AuthTime: g.AuthTime, AMR: g.AMR, Expiry: g.FamilyExpiry}
		if err := s.p.cfg.State.StartFamily(ctx, f, refresh); err != nil {
			return nil, errServer(err)
		}
	}
	resp, err := s.p.tokens(ctx, c, &codeRequest{g: g}, g.Family, refresh, code)
	if err != nil {
		return nil, err
	}
	return op.NewResponse(resp), nil
}

// revokeGrant revokes everything issued from a grant's code.
func (p *Provider) revokeGrant(ctx context.Context, g Grant) {
	until := latest(time.Unix(g.FamilyExpiry, 0), p.now()).Add(MaxTokenTTL)
	if err := p.cfg.State.RevokeFamily(ctx, g.Family, until); err != nil {
		p.log.Error("oidc: revoke the tokens of a reused code", "client", g.ClientID, "err", err)
	}
	p.log.Warn("oidc: code reused; its tokens are revoked", "client", g.ClientID, "subject", g.Subject)
}

// RefreshToken rotates a refresh token: the token given is replaced by a
// new one; giving an old one again revokes the whole family (and its
// access tokens). The user must still exist and be enabled.
func (s *server) RefreshToken(ctx context.Context, r *op.ClientRequest[oidc.RefreshTokenRequest]) (*op.Response, error) {
	c := r.Client.(*client)
	old := r.Data.RefreshToken
	f, err := s.p.cfg.State.Refresh(ctx, old)
	switch {
	case errors.Is(err, ErrReused):
		s.p.log.Warn("oidc: refresh token reused; its family is revoked", "client", f.ClientID, "subject", f.Subject)
		return nil, errInvalidGrant("the refresh token was used already; its family is revoked")
	case errors.Is(err, ErrRevoked):
		return nil, errInvalidGrant("the refresh token is revoked")
	case errors.Is(err, ErrNotFound):
		return nil, errInvalidGrant("the refresh token is invalid or has expired")
	case err != nil:
		return nil, errServer(err)
	case f.ClientID != c.ID:
		return nil, errInvalidGrant("the refresh token was issued to another client")
	}
	scopes := f.Scopes
	if len(r.Data.Scopes) > 0 {
		for _, sc := range r.Data.Scopes {
			if !slices.Contains(f.Scopes, sc) {
				return nil, oidc.ErrInvalidScope().WithDescription("scope %q was not granted", sc)
			}
		}
		scopes = r.Data.Scopes
	}
	u, err := s.p.cfg.Users.UserByID(ctx, f.Subject)
	if errors.Is(err, store.ErrNotFound) || err == nil && u.Disabled {
		_ = s.p.cfg.State.RevokeFamily(ctx, f.ID, time.Unix(f.Expiry, 0).Add(MaxTokenTTL))
		return nil, errInvalidGrant("the user no longer exists or is disabled")
	}
	if err != nil {
		return nil, errServer(err)
	}
	next, err := newOpaque(s.p.cfg.Region)
	if err != nil {
		return nil, errServer(err)
	}
	switch err := s.p.cfg.State.Rotate(ctx, f.ID, old, next); {
	case errors.Is(err, ErrReused):
		return nil, errInvalidGrant("the refresh token was used already; its family is revoked")
	case errors.Is(err, ErrRevoked), errors.Is(err, ErrNotFound):
		return nil, errInvalidGrant("the refresh token is revoked or has expired")
	case err != nil:
		return nil, errServer(err)
	}
	resp, err := s.p.tokens(ctx, c, &familyRequest{f: f, scopes: scopes, user: &u}, f.ID, next, "")
	if err != nil {
		return nil, err
	}
	return op.NewResponse(resp), nil
}

// userScopes are scopes about a user, which a client's own token cannot
// have.
var userScopes = []string{ScopeOpenID, ScopeProfile, ScopeEmail, ScopeOfflineAccess, "phone", "address"}

// ClientCredentialsExchange issues a confidential client a token of its
// own (sub = client_id), for scopes it is registered for.
func (s *server) ClientCredentialsExchange(ctx context.Context, r *op.ClientRequest[oidc.ClientCredentialsRequest]) (*op.Response, error) {
	c := r.Client.(*client)
	for _, sc := range r.Data.Scope {
		if slices.Contains(userScopes, sc) || !c.IsScopeAllowed(sc) {
			return nil, oidc.ErrInvalidScope().WithDescription("scope %q is not available to this client's own tokens", sc)
		}
	}
	now := s.p.now()
	jti, err := newJTI("")
	if err != nil {
		return nil, errServer(err)
	}
	at, err := signAccess(s.p.cfg.Keys, accessClaims{
		Issuer: op.IssuerFromContext(ctx), Subject: c.ID, Audience: []string{c.ID}, ClientID: c.ID,
		Scope: strings.Join(r.Data.Scope, " "), IssuedAt: now.Unix(), Expiry: now.Add(c.accessTTL).Unix(), JTI: jti,
	})
	if err != nil {
		return nil, errServer(err)
	}
	return op.NewResponse(&oidc.AccessTokenResponse{
		AccessToken: at, TokenType: oidc.BearerToken, ExpiresIn: uint64(c.accessTTL.Seconds()), Scope: r.Data.Scope,
	}), nil
}

// tokens issues the access token (and ID token, for openid) of a user's
// grant; refresh is the refresh token to hand out ("" for none).
func (p *Provider) tokens(ctx context.Context, c *client, req grantRequest, family, refresh, code string) (*oidc.AccessTokenResponse, error) {
	now := p.now()
	iss := op.IssuerFromContext(ctx)
	jti, err := newJTI(family)
	if err != nil {
		return nil, errServer(err)
	}
	scopes := req.GetScopes()
	at, err := signAccess(p.cfg.Keys, accessClaims{
		Issuer: iss, Subject: req.GetSubject(), Audience: []string{c.ID}, ClientID: c.ID, Scope: strings.Join(scopes, " "),
		IssuedAt: now.Unix(), Expiry: now.Add(c.accessTTL).Unix(), JTI: jti, SessionID: req.sessionID(), AuthTime: req.GetAuthTime().Unix(),
	})
	if err != nil {
		return nil, errServer(err)
	}
	resp := &oidc.AccessTokenResponse{AccessToken: at, TokenType: oidc.BearerToken, RefreshToken: refresh,
		ExpiresIn: uint64(c.accessTTL.Seconds()), Scope: scopes}
	if slices.Contains(scopes, ScopeOpenID) {
		if resp.IDToken, err = op.CreateIDToken(ctx, iss, req, c.idTTL, at, code, p.storage, c); err != nil {
			var oe *oidc.Error
			if errors.As(err, &oe) {
				return nil, err
			}
			return nil, errServer(err)
		}
	}
	return resp, nil
}

// introspection is an RFC 7662 answer.
type introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	TokenType string   `json:"token_type,omitempty"`
	Expiry    int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	JTI       string   `json:"jti,omitempty"`
	SessionID string   `json:"sid,omitempty"`
	AuthTime  int64    `json:"auth_time,omitempty"`
}

// Introspect answers for this region's access tokens (to any authenticated
// confidential client, resource servers included) and refresh tokens (to
// the client they were issued to). A revoked, expired, forged or foreign
// token is inactive.
func (s *server) Introspect(ctx context.Context, r *op.Request[op.IntrospectionRequest]) (*op.Response, error) {
	c, err := s.p.authenticate(ctx, r.Data.ClientCredentials, false)
	if err != nil {
		return nil, err
	}
	inactive := op.NewResponse(&introspection{})
	tok := r.Data.Token
	now := s.p.now()
	if _, ok := opaqueRegion(tok); ok {
		f, current, err := s.p.cfg.State.PeekRefresh(ctx, tok)
		switch {
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrRevoked):
			return inactive, nil
		case err != nil:
			return nil, errServer(err)
		case !current || f.ClientID != c.ID:
			return inactive, nil
		}
		return op.NewResponse(&introspection{Active: true, Scope: strings.Join(f.Scopes, " "), ClientID: f.ClientID, TokenType: "refresh_token",
			Expiry: f.Expiry, Subject: f.Subject, Issuer: op.IssuerFromContext(ctx), SessionID: f.SessionID, AuthTime: f.AuthTime}), nil
	}
	claims, err := verifyAccess(s.p.cfg.Keys, op.IssuerFromContext(ctx), tok, now)
	if err != nil {
		return inactive, nil
	}
	revoked, err := s.p.cfg.State.AccessTokenRevoked(ctx, claims.JTI, jtiFamily(claims.JTI))
	if err != nil {
		return nil, errServer(err)
	}
	if revoked {
		return inactive, nil
	}
	return op.NewResponse(&introspection{Active: true, Scope: claims.Scope, ClientID: claims.ClientID, TokenType: oidc.BearerToken,
		Expiry: claims.Expiry, IssuedAt: claims.IssuedAt, Subject: claims.Subject, Audience: claims.Audience, Issuer: claims.Issuer,
		JTI: claims.JTI, SessionID: claims.SessionID, AuthTime: claims.AuthTime}), nil
}

// Revocation revokes a refresh token (its whole family, access tokens
// included, RFC 7009 section 2.1) or an access token, of the requesting
// client. An invalid or expired token is no error (section 2.2).
func (s *server) Revocation(ctx context.Context, r *op.ClientRequest[oidc.RevocationRequest]) (*op.Response, error) {
	c := r.Client.(*client)
	tok := r.Data.Token
	now := s.p.now()
	if _, ok := opaqueRegion(tok); ok {
		f, _, err := s.p.cfg.State.PeekRefresh(ctx, tok)
		switch {
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrRevoked):
			return op.NewResponse(nil), nil
		case err != nil:
			return nil, errServer(err)
		case f.ClientID != c.ID:
			return nil, oidc.ErrUnauthorizedClient().WithDescription("the token was issued to another client")
		}
		if err := s.p.cfg.State.RevokeFamily(ctx, f.ID, time.Unix(f.Expiry, 0).Add(MaxTokenTTL)); err != nil {
			return nil, errServer(err)
		}
		return op.NewResponse(nil), nil
	}
	claims, err := verifyAccess(s.p.cfg.Keys, op.IssuerFromContext(ctx), tok, now)
	if err != nil {
		return op.NewResponse(nil), nil
	}
	if claims.ClientID != c.ID {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("the token was issued to another client")
	}
	if err := s.p.cfg.State.RevokeAccessToken(ctx, claims.JTI, time.Unix(claims.Expiry, 0)); err != nil {
		return nil, errServer(err)
	}
	return op.NewResponse(nil), nil
}

// UserInfo answers with the claims of the user of an access token of this
// region, for its scopes. A token of another region (a travelling user's,
// identity only) has no userinfo.
func (s *server) UserInfo(ctx context.Context, r *op.Request[oidc.UserInfoRequest]) (*op.Response, error) {
	claims, err := verifyAccess(s.p.cfg.Keys, op.IssuerFromContext(ctx), r.Data.AccessToken, s.p.now())
	switch {
	case errors.Is(err, errForeignToken):
		return nil, errInvalidToken("the access token was issued by another region, for identity only: no userinfo")
	case errors.Is(err, errTokenExpired):
		return nil, errInvalidToken("the access token has expired")
	case err != nil:
		return nil, errInvalidToken("the access token is not valid")
	}
	revoked, err := s.p.cfg.State.AccessTokenRevoked(ctx, claims.JTI, jtiFamily(claims.JTI))
	if err != nil {
		return nil, errServer(err)
	}
	if revoked {
		return nil, errInvalidToken("the access token is revoked")
	}
	scopes := claims.scopes()
	if !slices.Contains(scopes, ScopeOpenID) {
		return nil, op.NewStatusError(&oidc.Error{ErrorType: "insufficient_scope", Description: "the token was not granted the openid scope"}, http.StatusForbidden)
	}
	if !strings.HasPrefix(claims.Subject, s.p.cfg.Region+".") || claims.SessionID == "" {
		return nil, errInvalidToken("the token is not a user's of this region")
	}
	u, err := s.p.cfg.Users.UserByID(ctx, claims.Subject)
	if errors.Is(err, store.ErrNotFound) || err == nil && u.Disabled {
		return nil, errInvalidToken("the user no longer exists or is disabled")
	}
	if err != nil {
		return nil, errServer(err)
	}
	info := &oidc.UserInfo{Subject: u.ID}
	if slices.Contains(scopes, ScopeEmail) {
		info.Email, info.EmailVerified = u.Email, oidc.Bool(u.EmailVerified)
	}
	if slices.Contains(scopes, ScopeProfile) && u.Name != "" {
		info.Name = u.Name
	}
	return op.NewResponse(info), nil
}
