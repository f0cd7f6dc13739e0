package oidc

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/domicile/domicile/region/store"
)

// grantRequest is a user's grant as op sees it when it makes an ID token
// (op.IDTokenRequest), with what this package adds.
type grantRequest interface {
	op.IDTokenRequest
	sessionID() string
	foreign() bool
	// loadedUser is the user, if the caller read it already.
	loadedUser() *store.User
}

// codeRequest is a code's grant (also an op.AuthRequest, so that op puts
// its nonce in the ID token).
type codeRequest struct{ g Grant }

var _ op.AuthRequest = (*codeRequest)(nil)

func (r *codeRequest) GetID() string                      { return r.g.Family }
func (r *codeRequest) GetACR() string                     { return acrOf(r.g.AMR) }
func (r *codeRequest) GetAMR() []string                   { return r.g.AMR }
func (r *codeRequest) GetAudience() []string              { return []string{r.g.ClientID} }
func (r *codeRequest) GetAuthTime() time.Time             { return time.Unix(r.g.AuthTime, 0) }
func (r *codeRequest) GetClientID() string                { return r.g.ClientID }
func (r *codeRequest) GetNonce() string                   { return r.g.Nonce }
func (r *codeRequest) GetRedirectURI() string             { return r.g.RedirectURI }
func (r *codeRequest) GetResponseType() oidc.ResponseType { return oidc.ResponseTypeCode }
func (r *codeRequest) GetResponseMode() oidc.ResponseMode { return "" }
func (r *codeRequest) GetScopes() []string                { return r.g.Scopes }
func (r *codeRequest) GetState() string                   { return "" }
func (r *codeRequest) GetSubject() string                 { return r.g.Subject }
func (r *codeRequest) Done() bool                         { return true }
func (r *codeRequest) sessionID() string                  { return r.g.SessionID }
func (r *codeRequest) foreign() bool                      { return r.g.Foreign }
func (r *codeRequest) loadedUser() *store.User            { return nil }

func (r *codeRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if r.g.Challenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: r.g.Challenge, Method: oidc.CodeChallengeMethodS256}
}

// familyRequest is a refresh of a family, for the scopes asked.
type familyRequest struct {
	f      Family
	scopes []string
	user   *store.User
}

func (r *familyRequest) GetAMR() []string        { return r.f.AMR }
func (r *familyRequest) GetAudience() []string   { return []string{r.f.ClientID} }
func (r *familyRequest) GetAuthTime() time.Time  { return time.Unix(r.f.AuthTime, 0) }
func (r *familyRequest) GetClientID() string     { return r.f.ClientID }
func (r *familyRequest) GetScopes() []string     { return r.scopes }
func (r *familyRequest) GetSubject() string      { return r.f.Subject }
func (r *familyRequest) sessionID() string       { return r.f.SessionID }
func (r *familyRequest) foreign() bool           { return false }
func (r *familyRequest) loadedUser() *store.User { return r.user }

// storage is the op.Storage of a Provider. op calls only part of it: the
// server's methods replace the flows that would call the rest (codes,
// tokens, revocation, introspection, userinfo), which answer
// errNotUsed.
type storage struct{ p *Provider }

var (
	_ op.Storage                   = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest = (*storage)(nil)
)

var errNotUsed = errors.New("oidc: not used by this provider")

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, errNotUsed
}
func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errNotUsed
}
func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errNotUsed
}
func (s *storage) SaveAuthCode(context.Context, string, string) error { return errNotUsed }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return errNotUsed }
func (s *storage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return "", time.Time{}, errNotUsed
}
func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errNotUsed
}
func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errNotUsed
}
func (s *storage) TerminateSession(context.Context, string, string) error { return errNotUsed }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrServerError().WithParent(errNotUsed)
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *storage) SetUserinfoFromToken(context.Context, *oidc.UserInfo, string, string, string) error {
	return errNotUsed
}
func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errNotUsed
}
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errNotUsed
}
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errNotUsed
}
func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// SetUserinfoFromScopes is deprecated in op; SetUserinfoFromRequest does
// the work.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills the user claims of an ID token: sub and
// sid always; email and email_verified for the email scope, and only for a
// user of this region (a travelling user's token carries no personal
// data, and the user store is not read for them).
func (s *storage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	info.Subject = req.GetSubject()
	gr, ok := req.(grantRequest)
	if !ok {
		return nil
	}
	if sid := gr.sessionID(); sid != "" {
		info.AppendClaims("sid", sid)
	}
	if gr.foreign() || !slices.Contains(scopes, ScopeEmail) {
		return nil
	}
	u := gr.loadedUser()
	if u == nil {
		got, err := s.p.cfg.Users.UserByID(ctx, req.GetSubject())
		if err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
		u = &got
	}
	info.Email, info.EmailVerified = u.Email, oidc.Bool(u.EmailVerified)
	return nil
}

func (s *storage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.p.client(ctx, id)
	if errors.Is(err, errUnknownClient) {
		return nil, oidc.ErrInvalidRequest().WithDescription("unknown client_id")
	}
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	_, err := s.p.authenticate(ctx, &op.ClientCredentials{ClientID: id, ClientSecret: secret}, false)
	return err
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.p.cfg.Keys.signer()}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.EdDSA}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	var out []op.Key
	for _, k := range s.p.cfg.Keys.Public(s.p.now()) {
		out = append(out, publicKey{kid: k.KID, pub: k.Key})
	}
	return out, nil
}

func (s *storage) Health(context.Context) error { return nil }

// signingKey is a ring key as op signs ID tokens with it.
type signingKey struct{ k *ringKey }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.EdDSA }
func (k signingKey) Key() any                                    { return k.k.priv }
func (k signingKey) ID() string                                  { return k.k.kid }

// publicKey is a published key as op.Key.
type publicKey struct {
	kid string
	pub ed25519.PublicKey
}

func (k publicKey) ID() string                         { return k.kid }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.EdDSA }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.pub }
