package oidc

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/domicile/domicile/region/store"
)

// The authorization endpoint. op parses the request and checks the
// client's redirect URI; then Authorize either issues a code at once (a
// live session of this region, or a travelling user's session with
// prompt=none) or sends the browser to the hosted login page with
// return_to, the same authorization request, to come back to once logged
// in. Nothing is stored until a code is issued.

// authClient is the client of an authorization request, with the failure
// of a check op would make before Authorize (and redirect without iss):
// VerifyAuthRequest makes those checks itself, so that Authorize answers
// them with iss (RFC 9207).
type authClient struct {
	*client
	pending error
	// responseType is the request's, which op must not see when it is
	// not "code" (it would refuse it as unauthorized_client).
	responseType oidc.ResponseType
}

// codeResponse and authErrorResponse are the parameters of an
// authorization response, iss included (RFC 9207).
type codeResponse struct {
	Code  string `schema:"code"`
	State string `schema:"state,omitempty"`
	Iss   string `schema:"iss"`
}

type authErrorResponse struct {
	Error       string `schema:"error"`
	Description string `schema:"error_description,omitempty"`
	State       string `schema:"state,omitempty"`
	Iss         string `schema:"iss"`
}

// loginAfterParam marks a return to the authorization endpoint that needs
// a login made at or after the Unix time it holds (prompt=login, max_age).
const loginAfterParam = "login_after"

// VerifyAuthRequest finds the client and matches the redirect URI exactly
// (op would let a native client's loopback URI differ in its port); an
// unknown client or URI is answered here, never redirected.
func (s *server) VerifyAuthRequest(ctx context.Context, r *op.Request[oidc.AuthRequest]) (*op.ClientRequest[oidc.AuthRequest], error) {
	req := r.Data
	if req.ClientID == "" {
		return nil, oidc.ErrInvalidRequestRedirectURI().WithDescription("client_id missing")
	}
	c, err := s.p.client(ctx, req.ClientID)
	if errors.Is(err, errUnknownClient) {
		return nil, oidc.ErrInvalidRequestRedirectURI().WithDescription("unknown client_id")
	}
	if err != nil {
		return nil, errServer(err)
	}
	if req.RedirectURI != "" && !slices.Contains(c.Client.RedirectURIs, req.RedirectURI) {
		return nil, oidc.ErrInvalidRequestRedirectURI().WithDescription("redirect_uri is not registered for this client (it must match exactly)")
	}
	ac := &authClient{client: c, responseType: req.ResponseType}
	if req.ResponseType == "" {
		ac.pending = oidc.ErrInvalidRequest().WithDescription("response_type missing")
	}
	req.ResponseType = oidc.ResponseTypeCode
	if _, err := op.ValidateAuthReqPrompt(req.Prompt, req.MaxAge); err != nil {
		ac.pending, req.Prompt = err, nil
	}
	if len(req.Scopes) == 0 {
		ac.pending = cmpError(ac.pending, oidc.ErrInvalidRequest().WithDescription("scope missing"))
		req.Scopes = oidc.SpaceDelimitedArray{ScopeOpenID}
	}
	if err := op.ValidateAuthReqCodeChallengeMethod(req.CodeChallenge, req.CodeChallengeMethod); err != nil {
		ac.pending, req.CodeChallengeMethod = cmpError(ac.pending, err), oidc.CodeChallengeMethodS256
	}
	return &op.ClientRequest[oidc.AuthRequest]{Request: r, Client: ac}, nil
}

func cmpError(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Authorize answers an authorization request whose client and redirect URI
// are known good: every error from here on goes to the redirect URI.
func (s *server) Authorize(ctx context.Context, r *op.ClientRequest[oidc.AuthRequest]) (*op.Redirect, error) {
	ac := r.Client.(*authClient)
	req := r.Data
	iss := op.IssuerFromContext(ctx)
	p := s.p
	req.ResponseType = ac.responseType
	fail := func(e *oidc.Error) (*op.Redirect, error) { return p.authError(req, e, iss) }

	switch {
	case ac.pending != nil:
		return fail(oidc.DefaultToServerError(ac.pending, ac.pending.Error()))
	case req.RequestParam != "" || r.Form.Get("request_uri") != "":
		return fail(oidc.ErrRequestNotSupported().WithDescription("request objects are not supported"))
	case req.ResponseType != oidc.ResponseTypeCode:
		return fail(&oidc.Error{ErrorType: "unsupported_response_type", Description: "only the authorization code flow (response_type=code) is offered"})
	case req.ResponseMode != "" && req.ResponseMode != oidc.ResponseModeQuery && req.ResponseMode != oidc.ResponseModeFragment:
		return fail(oidc.ErrInvalidRequest().WithDescription("response_mode: query or fragment"))
	case !ac.allows(GrantAuthorizationCode):
		return fail(oidc.ErrUnauthorizedClient().WithDescription("this client may not use the authorization code grant"))
	case req.CodeChallenge == "" && ac.Public():
		return fail(oidc.ErrInvalidRequest().WithDescription("code_challenge required: a public client must use PKCE with S256"))
	case req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256:
		return fail(oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256"))
	case req.CodeChallenge != "" && !validChallenge(req.CodeChallenge):
		return fail(oidc.ErrInvalidRequest().WithDescription("code_challenge: want the 43 characters of a base64url SHA-256"))
	}
	var scopes []string
	for _, sc := range req.Scopes {
		if ac.IsScopeAllowed(sc) && !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	if len(scopes) == 0 {
		return fail(oidc.ErrInvalidScope().WithDescription("none of the scopes asked for is allowed to this client"))
	}

	none := slices.Contains(req.Prompt, oidc.PromptNone)
	forced := slices.Contains(req.Prompt, oidc.PromptLogin) || slices.Contains(req.Prompt, oidc.PromptSelectAccount)
	loginAfter, _ := strconv.ParseInt(r.Form.Get(loginAfterParam), 10, 64)
	now := p.now()
	sess := sessionFrom(ctx)
	if sess != nil && !sess.Foreign {
		// The account must still be usable (travelling users' accounts are
		// not read: their home decides).
		u, err := p.cfg.Users.UserByID(ctx, sess.Subject)
		switch {
		case errors.Is(err, store.ErrNotFound) || err == nil && u.Disabled:
			sess = nil
		case err != nil:
			p.log.Error("oidc: read user", "user", sess.Subject, "err", err)
			return fail(oidc.ErrServerError())
		}
	}
	var err error
	if sess != nil && req.IDTokenHint != "" {
		// The client expects a given user: another one's session does not
		// answer for them (OpenID Connect Core 3.1.2.1).
		claims, err := op.VerifyIDTokenHint[*oidc.IDTokenClaims](ctx, req.IDTokenHint, p.op.IDTokenHintVerifier(ctx))
		if err != nil && !errors.As(err, &op.IDTokenHintExpiredError{}) {
			return fail(oidc.ErrInvalidRequest().WithDescription("id_token_hint is not valid"))
		}
		if claims.Subject != sess.Subject {
			forced = true
		}
	}
	// A session too old for the request (prompt=login, max_age, or a
	// return from a login that has not happened) needs a new login, with
	// the login form shown even to a signed-in browser.
	stale := sess != nil && (forced ||
		loginAfter > 0 && sess.AuthTime.Unix() < loginAfter ||
		req.MaxAge != nil && now.Sub(sess.AuthTime) > time.Duration(*req.MaxAge)*time.Second)
	if sess == nil || stale {
		if none {
			return fail(oidc.ErrLoginRequired().WithDescription("no session, or one that does not meet the request (max_age)"))
		}
		return p.loginRedirect(r.Form, stale || forced || req.MaxAge != nil, loginAfter, now)
	}

	// Step-up: a request for multi-factor authentication is not answered
	// with a session of one factor. A remembered device is no factor: its
	// logins have amr "pwd" alone.
	if wantsMFA(req.ACRValues) && !MultiFactor(sess.AMR) {
		if none || sess.Foreign {
			return fail(oidc.ErrInteractionRequired().WithDescription("a second factor is required (acr_values)"))
		}
		has := false
		if p.cfg.SecondFactor != nil {
			if has, err = p.cfg.SecondFactor(ctx, sess.Subject); err != nil {
				p.log.Error("oidc: read second factors", "user", sess.Subject, "err", err)
				return fail(oidc.ErrServerError())
			}
		}
		if !has {
			return fail(&oidc.Error{ErrorType: ErrUnmetAuthenticationRequirements,
				Description: "multi-factor authentication was requested (acr_values) and the user has no second factor"})
		}
		return p.stepUpRedirect(r.Form)
	}

	c := ac.client
	fid, err := newID(16)
	if err != nil {
		return fail(oidc.ErrServerError())
	}
	code, err := newOpaque(p.cfg.Region)
	if err != nil {
		return fail(oidc.ErrServerError())
	}
	g := Grant{ClientID: c.ID, RedirectURI: req.RedirectURI, Scopes: scopes, Nonce: req.Nonce, Challenge: req.CodeChallenge,
		Subject: sess.Subject, SessionID: sess.SessionID, AuthTime: sess.AuthTime.Unix(), AMR: sess.AMR,
		Family: fid, FamilyExpiry: now.Add(c.refreshTTL).Unix()}
	if sess.Foreign {
		// A travelling user: identity only (no personal data, no refresh
		// token, whose state belongs in the home region).
		g.Foreign = true
		g.Scopes = slices.DeleteFunc(g.Scopes, func(sc string) bool { return sc != ScopeOpenID })
		if len(g.Scopes) == 0 {
			return fail(oidc.ErrInvalidScope().WithDescription("a session of another region gives identity (openid) only"))
		}
	}
	if err := p.cfg.State.PutCode(ctx, code, g, p.cfg.CodeTTL); err != nil {
		p.log.Error("oidc: store code", "err", err)
		return fail(oidc.ErrServerError())
	}
	if err := p.cfg.State.BindSession(ctx, sess.SessionID, c.ID, fid, latest(sess.Expires, now.Add(time.Minute))); err != nil {
		p.log.Error("oidc: bind session", "err", err)
	}
	u, err := op.AuthResponseURL(req.RedirectURI, req.ResponseType, req.ResponseMode,
		&codeResponse{Code: code, State: req.State, Iss: iss}, p.op.Encoder())
	if err != nil {
		return nil, err
	}
	return op.NewRedirect(u), nil
}

// validChallenge: an S256 challenge is 43 characters of base64url.
func validChallenge(c string) bool {
	return len(c) == 43 && validVerifier(c)
}

// authError redirects an error to the client, with iss; an error that must
// not be redirected is returned, to be written.
func (p *Provider) authError(req *oidc.AuthRequest, e *oidc.Error, iss string) (*op.Redirect, error) {
	if e.IsRedirectDisabled() || req.RedirectURI == "" {
		return nil, e
	}
	u, err := op.AuthResponseURL(req.RedirectURI, req.ResponseType, req.ResponseMode,
		&authErrorResponse{Error: string(e.ErrorType), Description: e.Description, State: req.State, Iss: iss}, p.op.Encoder())
	if err != nil {
		return nil, err
	}
	return op.NewRedirect(u), nil
}

// loginRedirect sends the browser to the login page, which brings it back
// to this authorization request (return_to) once logged in. The request is
// repeated without login_hint (which is personal data and goes to the
// login page on its own, to prefill it), prompt and max_age: when a new
// login is required (fresh), login_after=<now> says so instead, so that the
// return is not sent to log in again.
func (p *Provider) loginRedirect(form url.Values, fresh bool, loginAfter int64, now time.Time) (*op.Redirect, error) {
	q := url.Values{}
	for k, v := range form {
		q[k] = v
	}
	hint := q.Get("login_hint")
	for _, k := range []string{"login_hint", "prompt", "max_age", loginAfterParam} {
		q.Del(k)
	}
	if fresh {
		loginAfter = now.Unix()
	}
	if loginAfter > 0 {
		q.Set(loginAfterParam, strconv.FormatInt(loginAfter, 10))
	}
	login := url.Values{"return_to": {PathAuthorize + "?" + q.Encode()}}
	if hint != "" && len(hint) <= 254 {
		login.Set("login_hint", hint)
	}
	if fresh {
		login.Set("prompt", oidc.PromptLogin)
	}
	red := op.NewRedirect(p.cfg.LoginPath + "?" + login.Encode())
	red.Header.Set("Cache-Control", "no-store")
	return red, nil
}

// Authentication context classes this provider asks for and asserts.
const (
	// ACRMFA is the acr of an ID token whose login used two factors, and
	// the acr_values an RP sends to require that.
	ACRMFA = "mfa"
	// ACRPAPEMultiFactor is the OpenID PAPE policy of multi-factor
	// authentication, accepted in acr_values as ACRMFA.
	ACRPAPEMultiFactor = "http://schemas.openid.net/pape/policies/2007/06/multi-factor"
	// ErrUnmetAuthenticationRequirements is the error of an authorization
	// request whose acr_values cannot be met (OpenID Connect Core 1.0
	// errata set 2, 3.1.2.6).
	ErrUnmetAuthenticationRequirements = "unmet_authentication_requirements"
)

// wantsMFA reports whether acr_values ask for multi-factor
// authentication.
func wantsMFA(acr []string) bool {
	return slices.Contains(acr, ACRMFA) || slices.Contains(acr, ACRPAPEMultiFactor)
}

// MultiFactor reports whether RFC 8176 method references show two
// factors: "mfa", or a password with a one-time code, or a key with user
// verification (a PIN or biometric).
func MultiFactor(amr []string) bool {
	has := func(vs ...string) bool {
		for _, v := range vs {
			if slices.Contains(amr, v) {
				return true
			}
		}
		return false
	}
	return has("mfa") ||
		has("pwd", "pin") && has("otp", "sms", "hwk", "swk") ||
		has("hwk", "swk") && has("user", "pin", "fpt", "face", "iris", "retina", "vbm")
}

// acrOf is the acr of a login's method references: ACRMFA for two
// factors, none otherwise.
func acrOf(amr []string) string {
	if MultiFactor(amr) {
		return ACRMFA
	}
	return ""
}

// stepUpRedirect sends the signed-in browser to the second-factor page,
// which brings it back to this authorization request (without
// login_hint) once the session has its second factor.
func (p *Provider) stepUpRedirect(form url.Values) (*op.Redirect, error) {
	q := url.Values{}
	for k, v := range form {
		q[k] = v
	}
	q.Del("login_hint")
	red := op.NewRedirect(p.cfg.StepUpPath + "?" + url.Values{"return_to": {PathAuthorize + "?" + q.Encode()}}.Encode())
	red.Header.Set("Cache-Control", "no-store")
	return red, nil
}
