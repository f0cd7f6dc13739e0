package region

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/region/oidc"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// MFA step-up in the OpenID Provider and remembered devices, on the
// memory and Redis session stores.

func forEachSessionStore(t *testing.T, f func(t *testing.T, r *oidcRegion)) {
	for _, s := range []string{"memory", "redis"} {
		t.Run(s, func(t *testing.T) { f(t, newOIDCRegion(t, oidcOptions{state: s, sessions: s})) })
	}
}

// enableTOTP puts TOTP in force for a user (confirmed at an old time
// step, so that the codes of now are all unused) and returns a code maker.
func (r *oidcRegion) enableTOTP(uid string) func(at time.Time) string {
	r.t.Helper()
	secret := []byte("0123456789abcdefghij")
	ctx := context.Background()
	if err := r.db.SetTOTP(ctx, uid, secret); err != nil {
		r.t.Fatal(err)
	}
	if err := r.db.UseTOTPStep(ctx, uid, 1); err != nil {
		r.t.Fatal(err)
	}
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret)
	return func(at time.Time) string {
		c, err := totp.GenerateCodeCustom(b32, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			r.t.Fatal(err)
		}
		return c
	}
}

func (r *oidcRegion) postPage(b *http.Client, page, action string, values url.Values) (*http.Response, string) {
	r.t.Helper()
	resp, err := b.PostForm(r.issuer+action, formFields(r.t, page, action, values))
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, readAll(r.t, resp)
}

// passwordLogin signs in on the hosted login page and returns the page
// (or redirect target) the browser ends at.
func (r *oidcRegion) passwordLogin(b *http.Client, email string) (*http.Response, string) {
	r.t.Helper()
	resp, err := b.Get(r.issuer + "/ui/login")
	if err != nil {
		r.t.Fatal(err)
	}
	page := readAll(r.t, resp)
	_, page = r.postPage(b, page, "/ui/login", url.Values{"email": {email}})
	return r.postPage(b, page, "/ui/login", url.Values{"password": {oidcPassword}})
}

const mfaPageAction = "/ui/login/mfa?home=eu-west"

func isMFAPage(page string) bool {
	return strings.Contains(page, `action="`+mfaPageAction+`"`) || strings.Contains(page, `action="/ui/login/stepup?home=eu-west"`)
}

func (r *oidcRegion) sessionAMR(b *http.Client) ([]string, session.Session) {
	r.t.Helper()
	u, _ := url.Parse(r.issuer)
	for _, ck := range b.Jar.Cookies(u) {
		if ck.Name == SessionCookie {
			c, err := r.srv.sessions.Verify(ck.Value, time.Now())
			if err != nil {
				r.t.Fatal(err)
			}
			s, err := r.sessions.Get(context.Background(), c.SessionID)
			if err != nil {
				r.t.Fatal(err)
			}
			return c.AMR, s
		}
	}
	r.t.Fatal("no session cookie")
	return nil, session.Session{}
}

// TestOIDCStepUp: a single-factor session and acr_values=mfa: the second
// factor is asked, then the authorization request is answered with a
// code, and the ID token says acr "mfa"; a user without a second factor
// gets an error at the RP.
func TestOIDCStepUp(t *testing.T) {
	forEachSessionStore(t, func(t *testing.T, r *oidcRegion) {
		uid := r.newUser("ana@acme.de")
		r.newUser("bo@acme.de")
		p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID)
		ctx := context.Background()

		// A password-only session (TOTP comes on afterwards).
		b := r.browser()
		_, id, _ := r.codeFlow(b, p, "ana@acme.de")
		var c0 struct {
			ACR string   `json:"acr"`
			AMR []string `json:"amr"`
			Sid string   `json:"sid"`
		}
		id.Claims(&c0)
		if c0.ACR != "" || !slices.Equal(c0.AMR, []string{"pwd"}) {
			t.Fatalf("single-factor ID token: %+v", c0)
		}
		gen := r.enableTOTP(uid)

		for _, acr := range []string{"mfa", oidc.ACRPAPEMultiFactor} {
			t.Run(acr, func(t *testing.T) {
				// prompt=none cannot step up.
				a := p.authorize(oauth2.SetAuthURLParam("acr_values", acr), oauth2.SetAuthURLParam("prompt", "none"))
				resp, err := b.Get(a.url)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if q := r.callback(resp, a); q.Get("error") != "interaction_required" {
					t.Fatalf("prompt=none step-up: %v", q)
				}
			})
		}

		a := p.authorize(oauth2.SetAuthURLParam("acr_values", "mfa"))
		resp, err := b.Get(a.url)
		if err != nil {
			t.Fatal(err)
		}
		page := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/ui/login/stepup" || !isMFAPage(page) {
			t.Fatalf("acr_values=mfa with a password session: ended at %s HTTP %d\n%s", resp.Request.URL, resp.StatusCode, page)
		}
		if strings.Contains(page, `name="remember"`) {
			t.Fatal("step-up page offers to remember the device")
		}
		// A wrong code: no code for the RP.
		resp, body := r.postPage(b, page, "/ui/login/stepup?home=eu-west", url.Values{"code": {"000000"}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong step-up code: HTTP %d\n%s", resp.StatusCode, body)
		}
		resp, err = b.Get(a.url)
		if err != nil {
			t.Fatal(err)
		}
		page = readAll(t, resp)
		now := time.Now()
		resp, body = r.postPage(b, page, "/ui/login/stepup?home=eu-west", url.Values{"code": {gen(now)}})
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("step-up: HTTP %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
		}
		q := r.callback(resp, a)
		tok, err := p.conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(a.verifier))
		if err != nil {
			t.Fatalf("exchange after step-up: %v", err)
		}
		id, err = p.verifier.Verify(ctx, tok.Extra("id_token").(string))
		if err != nil {
			t.Fatal(err)
		}
		var c1 struct {
			ACR string   `json:"acr"`
			AMR []string `json:"amr"`
			Sid string   `json:"sid"`
		}
		id.Claims(&c1)
		if c1.ACR != "mfa" || !slices.Contains(c1.AMR, "otp") || !slices.Contains(c1.AMR, "pwd") || c1.Sid != c0.Sid {
			t.Fatalf("ID token after step-up: %+v (sid before %s)", c1, c0.Sid)
		}
		// Now the session meets the request at once.
		a = p.authorize(oauth2.SetAuthURLParam("acr_values", "mfa"))
		resp, err = b.Get(a.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if q := r.callback(resp, a); q.Get("code") == "" {
			t.Fatalf("acr_values=mfa with an MFA session: %v", q)
		}

		// A user without a second factor: an error to the RP, after the login.
		b2 := r.browser()
		a = p.authorize(oauth2.SetAuthURLParam("acr_values", "mfa"), oauth2.SetAuthURLParam("login_hint", "bo@acme.de"))
		q = r.callback(r.login(b2, a.url, "bo@acme.de"), a)
		if q.Get("error") != oidc.ErrUnmetAuthenticationRequirements || q.Get("code") != "" {
			t.Fatalf("acr_values=mfa for a user without a second factor: %v", q)
		}
		// Without acr_values, the same session is fine.
		a = p.authorize()
		resp, err = b2.Get(a.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if q := r.callback(resp, a); q.Get("code") == "" {
			t.Fatalf("no acr_values: %v", q)
		}
	})
}

// TestOIDCStepUpRememberedDevice: a login with acr_values=mfa on a
// remembered device skips TOTP, so the step-up asks for it before the
// code is issued (a remembered device is no second factor).
func TestOIDCStepUpRememberedDevice(t *testing.T) {
	forEachSessionStore(t, func(t *testing.T, r *oidcRegion) {
		uid := r.newUser("ana@acme.de")
		gen := r.enableTOTP(uid)
		p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID)
		b := r.browser()
		now := time.Now()
		_, page := r.passwordLogin(b, "ana@acme.de")
		if !isMFAPage(page) {
			t.Fatalf("login with TOTP: no second-factor page\n%s", page)
		}
		r.postPage(b, page, mfaPageAction, url.Values{"code": {gen(now.Add(-30 * time.Second))}, "remember": {"yes"}})
		b.Jar.SetCookies(mustURL(r.issuer), []*http.Cookie{{Name: SessionCookie, Path: "/", MaxAge: -1}})

		a := p.authorize(oauth2.SetAuthURLParam("acr_values", "mfa"))
		resp := r.login(b, a.url, "ana@acme.de") // TOTP skipped: the device is remembered
		page = readAll(t, resp)
		if resp.Request.URL.Path != "/ui/login/stepup" || !isMFAPage(page) {
			t.Fatalf("remembered device and acr_values=mfa: ended at %s HTTP %d, want the step-up page", resp.Request.URL, resp.StatusCode)
		}
		resp, _ = r.postPage(b, page, "/ui/login/stepup?home=eu-west", url.Values{"code": {gen(now)}})
		if q := r.callback(resp, a); q.Get("code") == "" {
			t.Fatalf("after step-up: %v", q)
		}
	})
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestRememberedDevice: ticked, the next login skips TOTP; unticked, it
// asks; a forgotten, expired or another user's device asks; removing TOTP
// forgets the devices. Hosted pages and the JSON /login.
func TestRememberedDevice(t *testing.T) {
	forEachSessionStore(t, func(t *testing.T, r *oidcRegion) {
		ctx := context.Background()
		uid := r.newUser("ana@acme.de")
		gen := r.enableTOTP(uid)
		uid2 := r.newUser("bo@acme.de")
		r.enableTOTP(uid2)
		now := time.Now()
		loggedOut := func(b *http.Client) {
			b.Jar.SetCookies(mustURL(r.issuer), []*http.Cookie{{Name: SessionCookie, Path: "/", MaxAge: -1}})
		}
		deviceCookie := func(b *http.Client) *http.Cookie {
			for _, ck := range b.Jar.Cookies(mustURL(r.issuer)) {
				if ck.Name == DeviceCookie {
					return ck
				}
			}
			return nil
		}

		// Unticked: no device, asked again.
		b0 := r.browser()
		_, page := r.passwordLogin(b0, "ana@acme.de")
		if !strings.Contains(page, `<label for="remember">Remember this device for 30 days</label>`) {
			t.Fatalf("no labelled remember checkbox:\n%s", page)
		}
		resp, _ := r.postPage(b0, page, mfaPageAction, url.Values{"code": {gen(now.Add(-30 * time.Second))}})
		if resp.Request.URL.Path != "/ui/account" || deviceCookie(b0) != nil {
			t.Fatalf("unticked: at %s, device cookie %v", resp.Request.URL, deviceCookie(b0))
		}
		loggedOut(b0)
		if _, page := r.passwordLogin(b0, "ana@acme.de"); !isMFAPage(page) {
			t.Fatal("unticked: the next login did not ask for the code")
		}

		// Ticked: the cookie, the record, the next login without TOTP.
		b := r.browser()
		_, page = r.passwordLogin(b, "ana@acme.de")
		resp, _ = r.postPage(b, page, mfaPageAction, url.Values{"code": {gen(now)}, "remember": {"yes"}})
		ck := deviceCookie(b)
		if resp.Request.URL.Path != "/ui/account" || ck == nil {
			t.Fatalf("ticked: at %s, no device cookie", resp.Request.URL)
		}
		if d, err := r.srv.cfg.Devices.Device(ctx, ck.Value); err != nil || d.UserID != uid {
			t.Fatalf("device record: %+v %v", d, err)
		}
		if amr, _ := r.sessionAMR(b); !slices.Contains(amr, "otp") {
			t.Fatalf("amr after TOTP: %v", amr)
		}
		loggedOut(b)
		resp, page = r.passwordLogin(b, "ana@acme.de")
		if isMFAPage(page) || resp.Request.URL.Path != "/ui/account" {
			t.Fatalf("remembered device: asked for the code again (at %s)", resp.Request.URL)
		}
		if amr, s := r.sessionAMR(b); !slices.Equal(amr, []string{"pwd"}) || !s.RememberedDevice {
			t.Fatalf("remembered login: amr %v, session %+v", amr, s)
		}
		// The JSON login too.
		if st, m := r.jsonLogin(ck, "ana@acme.de"); st != http.StatusOK || m["session_token"] == nil || m["mfa_required"] != nil {
			t.Fatalf("JSON login on a remembered device: %d %v", st, m)
		}
		if st, m := r.jsonLogin(nil, "ana@acme.de"); st != http.StatusOK || m["mfa_required"] != true {
			t.Fatalf("JSON login without the device: %d %v", st, m)
		}

		// Another user's device: asked (hosted and JSON).
		bo := r.browser()
		bo.Jar.SetCookies(mustURL(r.issuer), []*http.Cookie{{Name: DeviceCookie, Value: ck.Value, Path: "/"}})
		if _, page := r.passwordLogin(bo, "bo@acme.de"); !isMFAPage(page) {
			t.Fatal("another user's device cookie skipped the code")
		}
		if st, m := r.jsonLogin(ck, "bo@acme.de"); st != http.StatusOK || m["mfa_required"] != true {
			t.Fatalf("JSON login with another user's device: %d %v", st, m)
		}

		// The account page lists it; forget it (CSRF protected).
		resp, err := b.Get(r.issuer + "/ui/account")
		if err != nil {
			t.Fatal(err)
		}
		account := readAll(t, resp)
		handle := session.DeviceHandle(ck.Value)
		if !strings.Contains(account, `value="`+handle+`"`) || !strings.Contains(account, "(this device)") {
			t.Fatalf("account page does not list the device:\n%s", account)
		}
		f := formFields(t, account, "/ui/account/devices/forget", nil)
		bad := url.Values{"csrf": {"x"}, "device": f["device"]}
		if resp, _ := b.PostForm(r.issuer+"/ui/account/devices/forget", bad); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("forget without CSRF token: HTTP %d", resp.StatusCode)
		}
		if _, err := r.srv.cfg.Devices.Device(ctx, ck.Value); err != nil {
			t.Fatal("device forgotten without a valid CSRF token")
		}
		resp, _ = r.postPage(b, account, "/ui/account/devices/forget", nil)
		if resp.Request.URL.Path != "/ui/account" {
			t.Fatalf("forget: at %s", resp.Request.URL)
		}
		if _, err := r.srv.cfg.Devices.Device(ctx, ck.Value); err == nil {
			t.Fatal("device still remembered")
		}
		b.Jar.SetCookies(mustURL(r.issuer), []*http.Cookie{{Name: DeviceCookie, Value: ck.Value, Path: "/"}}) // even if the browser kept it
		loggedOut(b)
		if _, page := r.passwordLogin(b, "ana@acme.de"); !isMFAPage(page) {
			t.Fatal("forgotten device: the code was not asked")
		}
		if !r.audited(uid, "user.device_remembered") || !r.audited(uid, "user.device_forgotten") {
			t.Fatal("remember/forget not audited")
		}

		// Expired.
		exp, _ := session.NewID()
		if err := r.srv.cfg.Devices.PutDevice(ctx, session.Device{ID: exp, UserID: uid, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(300 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		be := r.browser()
		be.Jar.SetCookies(mustURL(r.issuer), []*http.Cookie{{Name: DeviceCookie, Value: exp, Path: "/"}})
		time.Sleep(400 * time.Millisecond)
		if _, page := r.passwordLogin(be, "ana@acme.de"); !isMFAPage(page) {
			t.Fatal("expired device: the code was not asked")
		}

		// Removing TOTP (and an admin MFA reset) forgets every device.
		live, _ := session.NewID()
		r.srv.cfg.Devices.PutDevice(ctx, session.Device{ID: live, UserID: uid, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
		bl := r.browser()
		bl.Jar.SetCookies(mustURL(r.issuer), []*http.Cookie{{Name: DeviceCookie, Value: live, Path: "/"}})
		if resp, _ := r.passwordLogin(bl, "ana@acme.de"); resp.Request.URL.Path != "/ui/account" {
			t.Fatalf("live device: at %s", resp.Request.URL)
		}
		resp, err = bl.Get(r.issuer + "/ui/account")
		if err != nil {
			t.Fatal(err)
		}
		account = readAll(t, resp)
		r.postPage(bl, account, "/ui/account/mfa/totp/remove", nil)
		if ds, _ := r.srv.cfg.Devices.UserDevices(ctx, uid); len(ds) != 0 {
			t.Fatalf("devices after TOTP removal: %+v", ds)
		}
		live2, _ := session.NewID()
		r.srv.cfg.Devices.PutDevice(ctx, session.Device{ID: live2, UserID: uid2, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
		if rec := r.admin(http.MethodDelete, "/admin/v1/users/"+uid2+"/mfa", ""); rec.Code != http.StatusNoContent {
			t.Fatalf("admin MFA reset: %d %s", rec.Code, rec.Body)
		}
		if _, err := r.srv.cfg.Devices.Device(ctx, live2); err == nil {
			t.Fatal("device kept after an admin MFA reset")
		}
		if !r.audited(uid, "user.devices_forgotten") || !r.audited(uid2, "user.devices_forgotten") {
			t.Fatal("forgetting all devices not audited")
		}
	})
}

func (r *oidcRegion) audited(uid, action string) bool {
	r.t.Helper()
	evs, err := r.db.AuditFor(context.Background(), uid)
	if err != nil {
		r.t.Fatal(err)
	}
	return slices.ContainsFunc(evs, func(e store.AuditEvent) bool { return e.Action == action })
}

// jsonLogin posts to /login (with a device cookie, if given), with the
// route header a router sets for the email.
func (r *oidcRegion) jsonLogin(device *http.Cookie, email string) (int, map[string]any) {
	r.t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(`{"email":"`+email+`","password":"`+oidcPassword+`"}`))
	req.Header.Set("Content-Type", "application/json")
	if device != nil {
		req.AddCookie(&http.Cookie{Name: DeviceCookie, Value: device.Value})
	}
	k := [routesig.IdentLen]byte(r.hasher.EmailKey(email))
	req.Header.Set(routesig.Header, string(r.signer.AppendHeaderFor(nil, req.Method, req.RequestURI, r.name, &k, time.Now())))
	rec := httptest.NewRecorder()
	r.srv.Handler().ServeHTTP(rec, req)
	var m map[string]any
	json.Unmarshal(rec.Body.Bytes(), &m)
	return rec.Code, m
}
