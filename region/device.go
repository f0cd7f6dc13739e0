package region

// Remembered devices and second-factor step-up.
//
// After a second factor on the hosted pages, the user may ask not to be
// asked again in this browser for RememberTTL: the browser gets a random
// device id in the DeviceCookie, and the home region's session store
// (Config.Devices) maps it to the user until it expires. A later password
// login of the same user with that cookie (hosted pages or POST /login)
// skips the second factor; its session has amr "pwd" alone and is marked
// RememberedDevice, so it does not meet an OpenID request for
// multi-factor authentication (acr_values=mfa), which steps up here:
// /ui/login/stepup asks the signed-in user for the second factor and
// upgrades the session, then returns to the authorization request.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

const (
	// DeviceCookie holds the id of a remembered device.
	DeviceCookie = "domicile_device"
	// RememberTTL is how long a device is remembered.
	RememberTTL = 30 * 24 * time.Hour
	// methodRememberedDevice is a password login whose second factor was
	// skipped on a remembered device: amr "pwd".
	methodRememberedDevice = "password_remembered_device"
	// purposeMFAStepUp is the single-use token of a step-up form, bound to
	// the user (the store keeps it, so any node may take the form back).
	purposeMFAStepUp = "mfa_stepup"
)

// rememberedDevice reports whether the request comes from a live device
// remembered for userID.
func (s *Server) rememberedDevice(c echo.Context, userID string) bool {
	if s.cfg.Devices == nil {
		return false
	}
	ck, err := c.Cookie(DeviceCookie)
	if err != nil || ck.Value == "" || len(ck.Value) > 64 {
		return false
	}
	d, err := s.cfg.Devices.Device(c.Request().Context(), ck.Value)
	if err != nil {
		if !errors.Is(err, session.ErrNotFound) {
			s.log.Error("login: read remembered device", "err", err)
		}
		return false
	}
	return d.UserID == userID
}

// rememberDevice remembers the browser for userID: a new device id in the
// store and the cookie.
func (s *Server) rememberDevice(c echo.Context, userID string) error {
	if s.cfg.Devices == nil {
		return nil
	}
	id, err := session.NewID()
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	d := session.Device{ID: id, UserID: userID, CreatedAt: now, ExpiresAt: now.Add(RememberTTL)}
	if err := s.cfg.Devices.PutDevice(c.Request().Context(), d); err != nil {
		return fmt.Errorf("remember device: %w", err)
	}
	c.SetCookie(&http.Cookie{Name: DeviceCookie, Value: id, Path: "/", Expires: d.ExpiresAt, MaxAge: int(RememberTTL.Seconds()),
		HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode})
	s.audit(c, userID, "user.device_remembered", userID, map[string]string{"device": session.DeviceHandle(id)[:16]})
	return nil
}

// forgetDevices forgets every remembered device of a user (its second
// factors changed); actor is who did it.
func (s *Server) forgetDevices(c echo.Context, actor, userID string) {
	if s.cfg.Devices == nil {
		return
	}
	n, err := s.cfg.Devices.DeleteUserDevices(c.Request().Context(), userID)
	if err != nil {
		s.log.Error("forget remembered devices", "user", userID, "err", err)
		return
	}
	if n > 0 {
		s.audit(c, actor, "user.devices_forgotten", userID, map[string]string{"devices": fmt.Sprint(n)})
	}
}

// hasSecondFactor reports whether a user can step up: TOTP in force or a
// passkey.
func (s *Server) hasSecondFactor(ctx context.Context, userID string) (bool, error) {
	if on, err := s.mfaRequired(ctx, userID); err != nil || on {
		return on, err
	}
	pks, err := s.cfg.Passkeys.Passkeys(ctx, userID)
	return len(pks) > 0, err
}

// upgradeSession records a second factor given in a session: the session
// keeps its id (the relying parties' sid) and end, its authentication
// time becomes now, and a new session token with the new method's amr
// replaces the cookie. The old token keeps its old amr.
func (s *Server) upgradeSession(c echo.Context, sess session.Session, method string) error {
	now := time.Now().UTC()
	sess.CreatedAt, sess.RememberedDevice = now, false
	if err := s.cfg.Sessions.Put(c.Request().Context(), sess); err != nil {
		return fmt.Errorf("step-up: store session: %w", err)
	}
	token, err := s.issuer.Issue(session.Claims{Subject: sess.UserID, Home: s.cfg.Name, SessionID: sess.ID, IssuedAt: now, Expiry: sess.ExpiresAt, AMR: amrOf(method)})
	if err != nil {
		return fmt.Errorf("step-up: issue session token: %w", err)
	}
	s.audit(c, sess.UserID, "user.mfa_step_up", sess.UserID, nil)
	c.SetCookie(&http.Cookie{
		Name: SessionCookie, Value: token, Path: "/", Expires: sess.ExpiresAt,
		HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode,
	})
	return nil
}

// --- hosted pages -----------------------------------------------------------

// deviceView is a remembered device on the account page.
type deviceView struct {
	Handle    string
	CreatedAt string
	ExpiresAt string
	This      bool // the browser looking at the page
}

func (p *pages) devicesOf(c echo.Context, userID string) ([]deviceView, error) {
	if p.s.cfg.Devices == nil {
		return nil, nil
	}
	ds, err := p.s.cfg.Devices.UserDevices(c.Request().Context(), userID)
	if err != nil {
		return nil, err
	}
	this := ""
	if ck, err := c.Cookie(DeviceCookie); err == nil && ck.Value != "" {
		this = session.DeviceHandle(ck.Value)
	}
	out := make([]deviceView, 0, len(ds))
	for _, d := range ds {
		out = append(out, deviceView{Handle: d.Handle, CreatedAt: d.CreatedAt.UTC().Format("2 January 2006 15:04 UTC"),
			ExpiresAt: d.ExpiresAt.UTC().Format("2 January 2006"), This: d.Handle == this})
	}
	return out, nil
}

// forgetDevice forgets one remembered device of the session's user.
func (p *pages) forgetDevice(c echo.Context) error {
	sess := pageSession(c)
	h := form(c).Get("device")
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return problem.New(http.StatusBadRequest, "device: not valid")
	}
	if p.s.cfg.Devices != nil {
		if err := p.s.cfg.Devices.DeleteDevice(c.Request().Context(), sess.UserID, h); err != nil {
			return fmt.Errorf("forget device: %w", err)
		}
	}
	if ck, err := c.Cookie(DeviceCookie); err == nil && session.DeviceHandle(ck.Value) == h {
		c.SetCookie(&http.Cookie{Name: DeviceCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode})
	}
	p.s.audit(c, sess.UserID, "user.device_forgotten", sess.UserID, map[string]string{"device": h[:16]})
	return redirect(c, "/ui/account?saved=device")
}

// stepUpForm asks the signed-in user for a second factor before going
// back to an authorization request that requires one (return_to): the
// TOTP form, or the login page for a passkey. Without a session, the
// login page; without a second factor, straight back (the authorization
// endpoint answers the relying party).
func (p *pages) stepUpForm(c echo.Context) error {
	s := p.s
	ret := returnPath(c.QueryParam("return_to"))
	if ret == "" {
		return problem.New(http.StatusBadRequest, "return_to: not valid")
	}
	sess, err := s.authenticated(c)
	if err != nil {
		return redirect(c, "/ui/login?"+url.Values{"return_to": {ret}}.Encode())
	}
	ctx := c.Request().Context()
	totpOn, err := s.mfaRequired(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("step-up: %w", err)
	}
	pks, err := s.cfg.Passkeys.Passkeys(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("step-up: %w", err)
	}
	passkeyLogin := "/ui/login?" + url.Values{"return_to": {ret}, "prompt": {"login"}}.Encode()
	switch {
	case totpOn:
	case len(pks) > 0:
		return redirect(c, passkeyLogin)
	default:
		return redirect(c, ret)
	}
	setReturn(c, ret)
	tok, hash, err := newToken()
	if err != nil {
		return err
	}
	if err := s.cfg.Accounts.CreateToken(ctx, store.Token{Hash: hash, UserID: sess.UserID, Purpose: purposeMFAStepUp, ExpiresAt: time.Now().Add(mfaLoginTTL)}); err != nil {
		return fmt.Errorf("step-up: token: %w", err)
	}
	d := &pageData{Title: "Confirm it is you", MFAToken: tok, StepUp: true, sid: sess.ID}
	if len(pks) > 0 {
		d.Links = []pageLink{{passkeyLogin, "Use a passkey instead"}}
	}
	return p.render(c, http.StatusOK, "login_mfa.html", d)
}

// stepUp checks the second factor of the step-up form and upgrades the
// session, then goes back to the authorization request.
func (p *pages) stepUp(c echo.Context) error {
	s := p.s
	sess := pageSession(c)
	f := form(c)
	id, err := s.consume(c, &tokenRequest{Token: f.Get("mfa_token")}, purposeMFAStepUp)
	if err != nil {
		var pr *problem.Problem
		if errors.As(err, &pr) && pr.Status == http.StatusBadRequest {
			return p.render(c, http.StatusBadRequest, "message.html", &pageData{Title: "Confirm it is you", sid: sess.ID,
				Error: &formError{Message: "This attempt has expired. Go back to the application and try again."}})
		}
		return err
	}
	if id != sess.UserID {
		return problem.New(http.StatusForbidden, "this form is for another session")
	}
	if !s.checkSecondFactor(c, id, f.Get("code"), f.Get("recovery_code")) {
		return p.render(c, http.StatusUnauthorized, "message.html", &pageData{Title: "Confirm it is you", sid: sess.ID,
			Error: &formError{Message: "The code is not valid. Go back to the application and try again."}})
	}
	if err := s.upgradeSession(c, sess, "mfa"); err != nil {
		return err
	}
	if to := takeReturn(c); to != "" {
		return redirect(c, to)
	}
	return redirect(c, "/ui/account")
}
