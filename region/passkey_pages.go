package region

// The hosted pages of passkeys: the passkey page of the account (list,
// add, remove) and "Sign in with a passkey" on the login page. The script
// (templates/passkey.js) asks a begin route for the options, runs the
// browser's ceremony, puts the result in the form's hidden fields and
// posts the form; the finish routes are ordinary CSRF-protected form posts
// answered with pages. A form posted without a credential (no script, or
// a browser without WebAuthn) gets a page that says what is missing.

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// passkeysPage is what passkeys.html shows.
type passkeysPage struct {
	List []passkeyItem
	Max  int
	Full bool
}

type passkeyItem struct {
	Index    int
	ID       string // base64url
	Name     string
	Created  string
	LastUsed string
	Synced   bool
}

const pageDate = "2 January 2006"

// passkeys shows the passkey page (GET); without a session, the login page.
func (p *pages) passkeys(c echo.Context) error {
	sess, err := p.s.authenticated(c)
	if err != nil {
		return redirect(c, "/ui/login")
	}
	notice := map[string]string{
		"added": "Your passkey has been added. You can sign in with it now.", "removed": "The passkey has been removed.",
	}[c.QueryParam("saved")]
	return p.renderPasskeys(c, sess, http.StatusOK, nil, notice)
}

func (p *pages) renderPasskeys(c echo.Context, sess session.Session, status int, ferr *formError, notice string) error {
	ps, err := p.s.cfg.Passkeys.Passkeys(c.Request().Context(), sess.UserID)
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	v := &passkeysPage{Max: store.MaxPasskeys, Full: len(ps) >= store.MaxPasskeys}
	for i, pk := range ps {
		it := passkeyItem{Index: i + 1, ID: credentialID(pk.ID), Name: pk.Name, Created: pageDateOf(pk.CreatedAt), Synced: pk.BackupState}
		if !pk.LastUsedAt.IsZero() {
			it.LastUsed = pageDateOf(pk.LastUsedAt)
		}
		v.List = append(v.List, it)
	}
	return p.render(c, status, "passkeys.html", &pageData{Title: "Passkeys", Passkeys: v, Error: ferr, Notice: notice, sid: sess.ID})
}

// passkeyRegisterBegin is Server.registerPasskeyBegin for the page's
// script (CSRF-checked, bound to the session).
func (p *pages) passkeyRegisterBegin(c echo.Context) error {
	sess := pageSession(c)
	u, err := p.s.cfg.Accounts.UserByID(c.Request().Context(), sess.UserID)
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	opts, tok, err := p.s.beginRegistration(c, u)
	if err != nil {
		return err
	}
	return beginAnswer(c, opts, tok)
}

// passkeyRegisterFinish is Server.registerPasskeyFinish for the form.
func (p *pages) passkeyRegisterFinish(c echo.Context) error {
	sess := pageSession(c)
	f := form(c)
	if f.Get("credential") == "" {
		return p.renderPasskeys(c, sess, http.StatusBadRequest, &formError{Message: "Your browser sent no passkey. " +
			"Adding a passkey needs JavaScript and a browser that supports passkeys."}, "")
	}
	u, err := p.s.cfg.Accounts.UserByID(c.Request().Context(), sess.UserID)
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	if _, err := p.s.finishRegistration(c, u, f.Get("state"), f.Get("name"), []byte(f.Get("credential"))); err != nil {
		var pr *problem.Problem
		if errors.As(err, &pr) && pr.Status < 500 {
			field := ""
			if strings.HasPrefix(pr.Detail, "name:") {
				field = "name"
			}
			msg := sentence(pr.Detail)
			if strings.HasPrefix(pr.Detail, "state:") {
				msg = "This attempt has expired or was used already. Try again."
			}
			return p.renderPasskeys(c, sess, pr.Status, &formError{Field: field, Message: msg}, "")
		}
		return err
	}
	return redirect(c, "/ui/account/passkeys?saved=added")
}

// passkeyRemove is Server.deletePasskey for the remove buttons.
func (p *pages) passkeyRemove(c echo.Context) error {
	sess := pageSession(c)
	id, err := base64.RawURLEncoding.DecodeString(form(c).Get("id"))
	if err != nil || len(id) == 0 {
		return problem.New(http.StatusBadRequest, "id: not a credential id")
	}
	if err := p.s.removePasskey(c, sess.UserID, id); err != nil {
		var pr *problem.Problem
		if errors.As(err, &pr) && pr.Status == http.StatusNotFound {
			return p.renderPasskeys(c, sess, http.StatusNotFound, &formError{Message: "This passkey was removed already."}, "")
		}
		return err
	}
	return redirect(c, "/ui/account/passkeys?saved=removed")
}

// passkeyLoginBegin is Server.loginPasskeyBegin for the login page's
// script: without an email (passwordless, any region begins it) or with
// the email of the password step (routed by it).
func (p *pages) passkeyLoginBegin(c echo.Context) error {
	var ident *homeindex.Key
	if raw := form(c).Get("email"); raw != "" {
		email, err := homeindex.NormalizeEmail(raw)
		if err != nil {
			return problem.New(http.StatusBadRequest, "email: "+err.Error())
		}
		k := p.s.cfg.Hasher.EmailKey(email)
		if err := p.s.routedBy(c, k); err != nil {
			return err
		}
		ident = &k
	}
	opts, tok, err := p.s.beginLogin(ident)
	if err != nil {
		return err
	}
	return beginAnswer(c, opts, tok)
}

// passkeyLoginFinish is Server.loginPasskeyFinish for the form, which the
// script posts to the home region of the passkey (home=).
func (p *pages) passkeyLoginFinish(c echo.Context) error {
	s := p.s
	f := form(c)
	again := func(status int, msg string) error {
		return p.render(c, status, "login.html", &pageData{Title: "Sign in", Step: "identify", Error: &formError{Message: msg}})
	}
	if f.Get("credential") == "" {
		return again(http.StatusBadRequest, "Your browser sent no passkey. Signing in with a passkey needs JavaScript and a browser that supports passkeys; sign in with your password instead.")
	}
	u, uv, err := s.finishLogin(c, f.Get("state"), []byte(f.Get("credential")))
	if err != nil {
		var pr *problem.Problem
		if errors.As(err, &pr) {
			switch pr.Status {
			case http.StatusUnauthorized:
				return again(http.StatusUnauthorized, "This passkey could not be used to sign in. Try again, or sign in with your email address and password.")
			case http.StatusBadRequest:
				return again(http.StatusBadRequest, "This sign-in attempt has expired or was used already. Try again.")
			}
		}
		return err
	}
	ctx := c.Request().Context()
	if !uv {
		// Something the user has, without something they know or are:
		// the second factor, if they have one, as after a password.
		if need, err := s.mfaRequired(ctx, u.ID); err != nil {
			return fmt.Errorf("login: %w", err)
		} else if need {
			tok, err := s.newMFAToken(ctx, u)
			if err != nil {
				return err
			}
			return p.render(c, http.StatusOK, "login_mfa.html", &pageData{Title: "Two-step verification", MFAToken: tok})
		}
	}
	method := methodPasskey
	if uv {
		method = methodPasskeyUV
	}
	return p.openSession(c, u, method)
}

// pageDateOf formats a time for the pages (UTC).
func pageDateOf(t time.Time) string { return t.UTC().Format(pageDate) }
