package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// EndSession is RP-initiated logout (OpenID Connect RP-Initiated Logout
// 1.0). op checks the id_token_hint (signed by this region, or another with
// Config.ForeignKeys; expired ones are accepted) and that client_id agrees
// with it; this adds the exact match of post_logout_redirect_uri, then ends
// the session of the cookie (if the hint, when given, is of the same user)
// or, without a cookie, the session the hint names.
func (s *server) EndSession(ctx context.Context, r *op.Request[oidc.EndSessionRequest]) (*op.Redirect, error) {
	p := s.p
	req := r.Data
	if req.ClientID != "" {
		if _, err := p.client(ctx, req.ClientID); errors.Is(err, errUnknownClient) {
			return nil, oidc.ErrInvalidRequest().WithDescription("unknown client_id")
		} else if err != nil {
			return nil, errServer(err)
		}
	}
	if req.PostLogoutRedirectURI != "" && req.ClientID == "" && req.IdTokenHint == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("post_logout_redirect_uri needs client_id or id_token_hint")
	}
	end, err := op.ValidateEndSessionRequest(ctx, req, p.op)
	if err != nil {
		return nil, err
	}
	if req.PostLogoutRedirectURI != "" {
		c, err := p.client(ctx, end.ClientID)
		if errors.Is(err, errUnknownClient) {
			return nil, oidc.ErrInvalidRequest().WithDescription("unknown client")
		} else if err != nil {
			return nil, errServer(err)
		}
		if !slices.Contains(c.Client.PostLogoutRedirectURIs, req.PostLogoutRedirectURI) {
			return nil, oidc.ErrInvalidRequest().WithDescription("post_logout_redirect_uri is not registered for this client (it must match exactly)")
		}
	}
	var hintSub, hintSID string
	if end.IDTokenHintClaims != nil {
		hintSub = end.IDTokenHintClaims.Subject
		hintSID, _ = end.IDTokenHintClaims.Claims["sid"].(string)
	}
	sess := sessionFrom(ctx)
	red := op.NewRedirect(end.RedirectURI)
	switch {
	case sess != nil && (hintSub == "" || hintSub == sess.Subject):
		if err := p.EndSession(ctx, sess.SessionID, sess.Subject); err != nil {
			return nil, errServer(err)
		}
		red.Header.Add("Set-Cookie", p.clearCookie())
	case sess == nil && hintSID != "" && strings.HasPrefix(hintSub, p.cfg.Region+"."):
		// No cookie (it expired, or another browser): the hint names the
		// session, which ends if it is that user's.
		if stored, err := p.cfg.Sessions.Get(ctx, hintSID); err == nil && stored.UserID == hintSub {
			if err := p.EndSession(ctx, hintSID, hintSub); err != nil {
				return nil, errServer(err)
			}
		}
	}
	return red, nil
}

func (p *Provider) clearCookie() string {
	c := &http.Cookie{Name: p.cfg.SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: strings.HasPrefix(p.cfg.Issuer, "https:"), SameSite: http.SameSiteLaxMode}
	return c.String()
}

// EndSession ends a session of this region: deleted from the session
// store, the refresh token families issued in it revoked, OnLogout called
// (global revocation), and the clients that got tokens in it told with a
// Back-Channel Logout token. The hosted logout page calls it too.
func (p *Provider) EndSession(ctx context.Context, sid, subject string) error {
	if err := p.cfg.Sessions.Delete(ctx, sid); err != nil {
		return fmt.Errorf("oidc: end session: %w", err)
	}
	clients, err := p.cfg.State.EndSession(ctx, sid)
	if err != nil {
		return fmt.Errorf("oidc: end session: %w", err)
	}
	l := Logout{SessionID: sid, Subject: subject, Clients: clients, At: p.now()}
	if p.cfg.OnLogout != nil {
		p.cfg.OnLogout(ctx, l)
	}
	if !p.cfg.NoBackchannel {
		p.backchannel(ctx, l)
	}
	return nil
}

// backchannelEvent is the event of a logout token.
const backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// logoutTokenTTL: logout tokens are short-lived (recipients check exp).
const logoutTokenTTL = 2 * time.Minute

// backchannel sends a logout token (OpenID Connect Back-Channel Logout
// 1.0) to the back-channel logout URI of every client of the session that
// has one, in the background: once, without retry.
func (p *Provider) backchannel(ctx context.Context, l Logout) {
	for _, id := range l.Clients {
		c, err := p.client(ctx, id)
		if err != nil || c.BackchannelLogoutURI == "" {
			continue
		}
		tok, err := p.logoutToken(c.ID, l)
		if err != nil {
			p.log.Error("oidc: back-channel logout token", "client", c.ID, "err", err)
			continue
		}
		uri := c.BackchannelLogoutURI
		p.bg.Add(1)
		go func() {
			defer p.bg.Done()
			p.deliverLogout(id, uri, tok)
		}()
	}
}

// backchannelRetries are the pauses before the second and later attempts
// to deliver a logout token: a client that is briefly down or overloaded
// (a network error, 5xx or 429) still learns of the logout.
var backchannelRetries = []time.Duration{500 * time.Millisecond, 2 * time.Second, 8 * time.Second}

// deliverLogout POSTs a logout token to a client's back-channel logout URI
// (OpenID Back-Channel Logout 1.0), retrying as backchannelRetries says;
// a 4xx other than 429 is the client's final answer.
func (p *Provider) deliverLogout(client, uri, tok string) {
	for attempt := 0; ; attempt++ {
		status, err := p.postLogout(uri, tok)
		switch {
		case err == nil && (status == http.StatusOK || status == http.StatusNoContent):
			return
		case err == nil && status >= 400 && status < 500 && status != http.StatusTooManyRequests:
			p.log.Warn("oidc: back-channel logout refused", "client", client, "status", status)
			return
		}
		if attempt >= len(backchannelRetries) {
			p.log.Warn("oidc: back-channel logout not delivered", "client", client, "attempts", attempt+1, "status", status, "err", err)
			return
		}
		select {
		case <-p.closeCtx.Done():
			p.log.Warn("oidc: back-channel logout abandoned at shutdown", "client", client)
			return
		case <-time.After(backchannelRetries[attempt]):
		}
	}
}

// postLogout makes one delivery attempt.
func (p *Provider) postLogout(uri, tok string) (int, error) {
	ctx, cancel := context.WithTimeout(p.closeCtx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uri, strings.NewReader(url.Values{"logout_token": {tok}}.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.cfg.Backchannel.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// logoutToken is a Back-Channel Logout token for a client (typ logout+jwt,
// signed like ID tokens).
func (p *Provider) logoutToken(clientID string, l Logout) (string, error) {
	k := p.cfg.Keys.signer()
	jti, err := newID(16)
	if err != nil {
		return "", err
	}
	now := p.now()
	payload, err := json.Marshal(map[string]any{
		"iss": p.cfg.Issuer, "aud": clientID, "iat": now.Unix(), "exp": now.Add(logoutTokenTTL).Unix(), "jti": jti,
		"sub": l.Subject, "sid": l.SessionID, "events": map[string]any{backchannelEvent: map[string]any{}},
	})
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k.priv},
		(&jose.SignerOptions{}).WithType("logout+jwt").WithHeader(jose.HeaderKey("kid"), k.kid))
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}
