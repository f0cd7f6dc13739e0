package region

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/domicile/domicile/region/oidc"
)

// The negative suite: every refusal the issue lists, each answered with
// its RFC 6749 (or RFC 6750, RFC 7009, RFC 7636) error.

// regionKey returns the signing key of the region (read from its key
// file), to sign tokens that are genuine but wrong.
func (r *oidcRegion) regionKey() (string, ed25519.PrivateKey) {
	r.t.Helper()
	b, err := os.ReadFile(r.keyFile)
	if err != nil {
		r.t.Fatal(err)
	}
	var f struct {
		Keys []struct{ KID, Seed string } `json:"keys"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		r.t.Fatal(err)
	}
	seed, err := base64.RawURLEncoding.DecodeString(f.Keys[0].Seed)
	if err != nil {
		r.t.Fatal(err)
	}
	return f.Keys[0].KID, ed25519.NewKeyFromSeed(seed)
}

// jwt signs header and claims with sign.
func jwt(header, claims map[string]any, sign func([]byte) []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return in + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(in)))
}

// redirectParams are the parameters of an authorization response, in the
// query or the fragment.
func redirectParams(t *testing.T, resp *http.Response) url.Values {
	t.Helper()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("want a redirect to the client, got HTTP %d: %s", resp.StatusCode, readAll(t, resp))
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	if loc.Fragment != "" {
		q, _ = url.ParseQuery(loc.Fragment)
	}
	return q
}

func TestOIDCNegative(t *testing.T) {
	forEachState(t, func(t *testing.T, state string) {
		r := newOIDCRegion(t, oidcOptions{state: state})
		uid := r.newUser("neg@acme.de")
		p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID, "email", gooidc.ScopeOfflineAccess)
		b := r.browser()
		first, firstID, _ := r.codeFlow(b, p, "neg@acme.de") // leaves a session in b
		ctx := context.Background()

		// code returns a fresh code of the session, with its request.
		code := func(opts ...oauth2.AuthCodeOption) (string, authorization) {
			t.Helper()
			a := p.authorize(opts...)
			resp, err := b.Get(a.url)
			if err != nil {
				t.Fatal(err)
			}
			q := r.callback(resp, a)
			if q.Get("code") == "" {
				t.Fatalf("no code: %v", q)
			}
			return q.Get("code"), a
		}
		exchange := func(form url.Values) (int, map[string]any, http.Header) {
			form.Set("grant_type", "authorization_code")
			if form.Get("redirect_uri") == "" {
				form.Set("redirect_uri", rpRedirect)
			}
			return r.post(oidc.PathToken, form, r.confID, r.confSecret)
		}
		refresh := func(rt string) (int, map[string]any, http.Header) {
			return r.post(oidc.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, r.confID, r.confSecret)
		}
		authorizeError := func(a string) url.Values {
			t.Helper()
			resp, err := b.Get(a)
			if err != nil {
				t.Fatal(err)
			}
			q := redirectParams(t, resp)
			if q.Get("iss") != r.issuer {
				t.Errorf("error response without iss (RFC 9207): %v", q)
			}
			return q
		}
		modify := func(a authorization, set map[string]string) string {
			u, _ := url.Parse(a.url)
			q := u.Query()
			for k, v := range set {
				if v == "" {
					q.Del(k)
				} else {
					q.Set(k, v)
				}
			}
			u.RawQuery = q.Encode()
			return u.String()
		}

		t.Run("PKCE verifier missing", func(t *testing.T) {
			c, _ := code()
			st, m, _ := exchange(url.Values{"code": {c}})
			wantOAuthError(t, "exchange without code_verifier", st, m, http.StatusBadRequest, "invalid_request")
		})
		t.Run("PKCE verifier wrong", func(t *testing.T) {
			c, _ := code()
			st, m, _ := exchange(url.Values{"code": {c}, "code_verifier": {oauth2.GenerateVerifier()}})
			wantOAuthError(t, "exchange with another verifier", st, m, http.StatusBadRequest, "invalid_grant")
			c, _ = code()
			st, m, _ = exchange(url.Values{"code": {c}, "code_verifier": {"short"}})
			wantOAuthError(t, "exchange with a malformed verifier", st, m, http.StatusBadRequest, "invalid_grant")
		})
		t.Run("PKCE plain method refused", func(t *testing.T) {
			a := p.authorize()
			q := authorizeError(modify(a, map[string]string{"code_challenge": a.verifier, "code_challenge_method": "plain"}))
			if q.Get("error") != "invalid_request" {
				t.Fatalf("plain PKCE: %v, want invalid_request", q)
			}
		})
		t.Run("redirect URI not exact", func(t *testing.T) {
			a := p.authorize()
			for _, uri := range []string{rpRedirect + "/", rpRedirect + "?x=1", strings.Replace(rpRedirect, "rp.example.com", "RP.example.com", 1),
				strings.Replace(rpRedirect, "https", "http", 1), "https://rp.example.com/callback/../callback", "https://evil.example.com/callback"} {
				resp, err := b.Get(modify(a, map[string]string{"redirect_uri": uri}))
				if err != nil {
					t.Fatal(err)
				}
				var m map[string]any
				json.Unmarshal([]byte(readAll(t, resp)), &m)
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || m["error"] != "invalid_request" {
					t.Errorf("redirect_uri %s: HTTP %d %v (Location %q), want 400 invalid_request, not redirected", uri, resp.StatusCode, m, resp.Header.Get("Location"))
				}
			}
			c, a := code()
			st, m, _ := exchange(url.Values{"code": {c}, "code_verifier": {a.verifier}, "redirect_uri": {rpRedirect + "/"}})
			wantOAuthError(t, "exchange with another redirect_uri", st, m, http.StatusBadRequest, "invalid_grant")
		})
		t.Run("code reused: refused, and its tokens revoked", func(t *testing.T) {
			c, a := code(oauth2.SetAuthURLParam("scope", "openid offline_access"))
			st, tok, _ := exchange(url.Values{"code": {c}, "code_verifier": {a.verifier}})
			if st != http.StatusOK {
				t.Fatalf("first exchange: HTTP %d %v", st, tok)
			}
			at, rt := tok["access_token"].(string), tok["refresh_token"].(string)
			if !r.active(at) || !r.active(rt) {
				t.Fatal("the first exchange's tokens are not active")
			}
			st, m, _ := exchange(url.Values{"code": {c}, "code_verifier": {a.verifier}})
			wantOAuthError(t, "second exchange of a code", st, m, http.StatusBadRequest, "invalid_grant")
			if r.active(at) || r.active(rt) {
				t.Fatal("the tokens of a reused code are still active")
			}
			st, m, _ = refresh(rt)
			wantOAuthError(t, "refresh from a reused code", st, m, http.StatusBadRequest, "invalid_grant")
		})
		t.Run("code of another client", func(t *testing.T) {
			c, a := code()
			st, m, _ := r.post(oidc.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {c}, "code_verifier": {a.verifier},
				"redirect_uri": {rpRedirect}}, r.publicID, "")
			wantOAuthError(t, "another client's code", st, m, http.StatusBadRequest, "invalid_grant")
			// Not spent: its client can still redeem it.
			if st, m, _ := exchange(url.Values{"code": {c}, "code_verifier": {a.verifier}}); st != http.StatusOK {
				t.Fatalf("the client's own exchange after another's attempt: HTTP %d %v", st, m)
			}
		})
		t.Run("code expired", func(t *testing.T) {
			short := newOIDCRegion(t, oidcOptions{state: state, codeTTL: 200 * time.Millisecond})
			short.newUser("late@acme.de")
			sp := short.rp(short.confID, short.confSecret, rpRedirect, gooidc.ScopeOpenID)
			sb := short.browser()
			short.codeFlow(sb, sp, "late@acme.de")
			a := sp.authorize()
			resp, err := sb.Get(a.url)
			if err != nil {
				t.Fatal(err)
			}
			c := short.callback(resp, a).Get("code")
			waitUntil(t, 5*time.Second, func() bool {
				_, _, err := short.state.PeekCode(ctx, c)
				return err != nil
			})
			st, m, _ := short.post(oidc.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {c}, "code_verifier": {a.verifier},
				"redirect_uri": {rpRedirect}}, short.confID, short.confSecret)
			wantOAuthError(t, "expired code", st, m, http.StatusBadRequest, "invalid_grant")
		})
		t.Run("refresh token reused after rotation: the family is revoked", func(t *testing.T) {
			c, a := code(oauth2.SetAuthURLParam("scope", "openid offline_access"))
			_, tok, _ := exchange(url.Values{"code": {c}, "code_verifier": {a.verifier}})
			rt1 := tok["refresh_token"].(string)
			st, tok2, _ := refresh(rt1)
			if st != http.StatusOK {
				t.Fatalf("refresh: HTTP %d %v", st, tok2)
			}
			rt2, at2 := tok2["refresh_token"].(string), tok2["access_token"].(string)
			st, m, _ := refresh(rt1)
			wantOAuthError(t, "reuse of a rotated refresh token", st, m, http.StatusBadRequest, "invalid_grant")
			st, m, _ = refresh(rt2)
			wantOAuthError(t, "the newest token of a revoked family", st, m, http.StatusBadRequest, "invalid_grant")
			if r.active(at2) || r.active(rt2) {
				t.Fatal("the family's tokens are still active after the reuse")
			}
		})
		t.Run("refresh token of another client", func(t *testing.T) {
			st, m, _ := r.post(oidc.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first.RefreshToken}}, r.publicID, "")
			wantOAuthError(t, "another client's refresh token", st, m, http.StatusBadRequest, "invalid_grant")
			if !r.active(first.RefreshToken) {
				t.Fatal("another client's attempt spent the refresh token")
			}
		})
		t.Run("alg none and HS256 with the public key", func(t *testing.T) {
			kid, priv := r.regionKey()
			pub := priv.Public().(ed25519.PublicKey)
			now := time.Now()
			at := map[string]any{"iss": r.issuer, "sub": uid, "aud": []string{r.confID}, "client_id": r.confID, "scope": "openid email",
				"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "x.y", "sid": "s"}
			idc := map[string]any{"iss": r.issuer, "sub": uid, "aud": r.confID, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
			none := func([]byte) []byte { return nil }
			hs := func(b []byte) []byte { m := hmac.New(sha256.New, pub); m.Write(b); return m.Sum(nil) }
			for name, sign := range map[string]func([]byte) []byte{"none": none, "HS256": hs} {
				alg := map[string]string{"none": "none", "HS256": "HS256"}[name]
				forgedAT := jwt(map[string]any{"alg": alg, "kid": kid, "typ": "at+jwt"}, at, sign)
				if r.active(forgedAT) {
					t.Errorf("%s access token introspected active", name)
				}
				st, m, h := r.get(oidc.PathUserinfo, forgedAT)
				wantOAuthError(t, name+" access token at userinfo", st, m, http.StatusUnauthorized, "invalid_token")
				if !strings.Contains(h.Get("WWW-Authenticate"), `error="invalid_token"`) {
					t.Errorf("userinfo 401 WWW-Authenticate = %q", h.Get("WWW-Authenticate"))
				}
				forgedID := jwt(map[string]any{"alg": alg, "kid": kid, "typ": "JWT"}, idc, sign)
				if _, err := p.verifier.Verify(ctx, forgedID); err == nil {
					t.Errorf("%s ID token verified by the RP", name)
				}
				st, m, _ = r.get(oidc.PathLogout+"?"+url.Values{"id_token_hint": {forgedID}}.Encode(), "")
				wantOAuthError(t, name+" id_token_hint", st, m, http.StatusBadRequest, "invalid_request")
			}
		})
		t.Run("wrong iss or aud", func(t *testing.T) {
			kid, priv := r.regionKey()
			ed := func(b []byte) []byte { return ed25519.Sign(priv, b) }
			now := time.Now()
			wrongIss := jwt(map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}, map[string]any{"iss": "https://evil.example.com",
				"sub": uid, "aud": []string{r.confID}, "client_id": r.confID, "scope": "openid", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "a.b"}, ed)
			if r.active(wrongIss) {
				t.Error("an access token of another issuer introspected active")
			}
			st, m, _ := r.get(oidc.PathUserinfo, wrongIss)
			wantOAuthError(t, "access token of another issuer at userinfo", st, m, http.StatusUnauthorized, "invalid_token")
			idWrongIss := jwt(map[string]any{"alg": "EdDSA", "kid": kid, "typ": "JWT"}, map[string]any{"iss": "https://evil.example.com",
				"sub": uid, "aud": r.confID, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}, ed)
			if _, err := p.verifier.Verify(ctx, idWrongIss); err == nil {
				t.Error("an ID token of another issuer verified by the RP")
			}
			st, m, _ = r.get(oidc.PathLogout+"?"+url.Values{"id_token_hint": {idWrongIss}}.Encode(), "")
			wantOAuthError(t, "id_token_hint of another issuer", st, m, http.StatusBadRequest, "invalid_request")
			// A genuine ID token of this client, presented to another.
			other := p.provider.Verifier(&gooidc.Config{ClientID: r.publicID})
			if _, err := other.Verify(ctx, first.Extra("id_token").(string)); err == nil || !strings.Contains(err.Error(), "audience") {
				t.Errorf("an ID token verified for another audience: %v", err)
			}
		})
		t.Run("expired tokens", func(t *testing.T) {
			kid, priv := r.regionKey()
			now := time.Now()
			expired := jwt(map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}, map[string]any{"iss": r.issuer,
				"sub": uid, "aud": []string{r.confID}, "client_id": r.confID, "scope": "openid", "iat": now.Add(-time.Hour).Unix(),
				"exp": now.Add(-time.Second).Unix(), "jti": "a.b", "sid": "s"}, func(b []byte) []byte { return ed25519.Sign(priv, b) })
			if r.active(expired) {
				t.Error("an expired access token introspected active")
			}
			st, m, _ := r.get(oidc.PathUserinfo, expired)
			wantOAuthError(t, "expired access token at userinfo", st, m, http.StatusUnauthorized, "invalid_token")
			late := p.provider.Verifier(&gooidc.Config{ClientID: r.confID, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
			if _, err := late.Verify(ctx, first.Extra("id_token").(string)); err == nil || !strings.Contains(err.Error(), "expired") {
				t.Errorf("an expired ID token verified: %v", err)
			}
			// The provider's clock past the access token's lifetime.
			r.clock.advance(oidc.DefaultAccessTTL + time.Second)
			active := r.active(first.AccessToken)
			r.clock.advance(-oidc.DefaultAccessTTL - time.Second)
			if active {
				t.Error("an access token past its lifetime introspected active")
			}
		})
		t.Run("implicit and hybrid flows refused", func(t *testing.T) {
			for _, rt := range []string{"token", "id_token", "id_token token", "code id_token"} {
				a := p.authorize()
				q := authorizeError(modify(a, map[string]string{"response_type": rt}))
				if q.Get("error") != "unsupported_response_type" {
					t.Errorf("response_type=%s: %v, want unsupported_response_type", rt, q)
				}
			}
		})
		t.Run("password grant refused", func(t *testing.T) {
			st, m, _ := r.post(oidc.PathToken, url.Values{"grant_type": {"password"}, "username": {"neg@acme.de"}, "password": {oidcPassword}}, r.confID, r.confSecret)
			wantOAuthError(t, "password grant", st, m, http.StatusBadRequest, "unsupported_grant_type")
			st, m, _ = r.post(oidc.PathToken, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {firstID.Subject}}, r.confID, r.confSecret)
			wantOAuthError(t, "JWT bearer grant", st, m, http.StatusBadRequest, "unsupported_grant_type")
		})
		t.Run("client authentication", func(t *testing.T) {
			c, a := code()
			st, m, h := r.post(oidc.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {c}, "code_verifier": {a.verifier},
				"redirect_uri": {rpRedirect}}, r.confID, "wrong-secret")
			wantOAuthError(t, "wrong client secret", st, m, http.StatusUnauthorized, "invalid_client")
			if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("invalid_client without WWW-Authenticate: %v", h)
			}
			st, m, _ = r.post(oidc.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {c}, "code_verifier": {a.verifier},
				"redirect_uri": {rpRedirect}}, r.confID, "")
			wantOAuthError(t, "confidential client without secret", st, m, http.StatusUnauthorized, "invalid_client")
			resp, err := b.Get(modify(a, map[string]string{"client_id": "nobody"}))
			if err != nil {
				t.Fatal(err)
			}
			var e map[string]any
			json.Unmarshal([]byte(readAll(t, resp)), &e)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || e["error"] != "invalid_request" {
				t.Errorf("unknown client_id at authorize: HTTP %d %v, want 400 invalid_request, not redirected", resp.StatusCode, e)
			}
		})
		t.Run("scopes and request objects", func(t *testing.T) {
			a := p.authorize()
			if q := authorizeError(modify(a, map[string]string{"scope": "api.write"})); q.Get("error") != "invalid_scope" {
				t.Errorf("only unknown scopes: %v, want invalid_scope", q)
			}
			if q := authorizeError(modify(a, map[string]string{"request": "eyJhbGciOiJub25lIn0.e30."})); q.Get("error") != "request_not_supported" {
				t.Errorf("request object: %v, want request_not_supported", q)
			}
			if q := authorizeError(modify(a, map[string]string{"prompt": "none login"})); q.Get("error") != "invalid_request" {
				t.Errorf("prompt=none login: %v, want invalid_request", q)
			}
			if q := authorizeError(modify(a, map[string]string{"scope": ""})); q.Get("error") != "invalid_request" {
				t.Errorf("no scope: %v, want invalid_request", q)
			}
		})
		t.Run("logout to an unregistered address", func(t *testing.T) {
			st, m, _ := r.get(oidc.PathLogout+"?"+url.Values{"client_id": {r.confID}, "post_logout_redirect_uri": {"https://evil.example.com/"}}.Encode(), "")
			wantOAuthError(t, "unregistered post_logout_redirect_uri", st, m, http.StatusBadRequest, "invalid_request")
			st, m, _ = r.get(oidc.PathLogout+"?"+url.Values{"client_id": {r.confID}, "post_logout_redirect_uri": {rpPostLogout + "/"}}.Encode(), "")
			wantOAuthError(t, "post_logout_redirect_uri not exact", st, m, http.StatusBadRequest, "invalid_request")
		})
	})
}

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get sends a GET to the router, with a bearer token if not empty, and
// decodes a JSON answer.
func (r *oidcRegion) get(path, bearer string) (int, map[string]any, http.Header) {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.issuer+path, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal([]byte(readAll(r.t, resp)), &m)
	return resp.StatusCode, m, resp.Header
}
