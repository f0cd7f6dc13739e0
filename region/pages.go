package region

// Hosted pages: server-rendered HTML for sign-up, login (identifier
// first, then password, then the second factor), email verification,
// password reset and the account page. They live under /ui/ and call the
// same building blocks as the JSON handlers (the same checks, counters and
// audit events); only the answers differ (HTML pages, redirects).
//
// Every form POST is protected against cross-site request forgery by a
// synchronizer token (see pages.csrfToken) and an Origin/Referer check.

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"image/png"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/oidc"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

//go:embed templates/*.html templates/style.css templates/passkey.js
var pageFS embed.FS

// CSRFCookie holds the per-browser secret of the hosted pages' CSRF
// tokens.
const CSRFCookie = "domicile_csrf"

// csrfField is the hidden form field that carries the CSRF token.
const csrfField = "csrf"

// pageCSP is the Content-Security-Policy of every hosted page: no inline
// script or style, no framing, forms only to this origin; images may be
// data: URLs (the TOTP QR code).
const pageCSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// pageTemplates are the pages, each parsed with the layout.
var pageTemplates = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"invalid":  func(d *pageData, field string) bool { return d.Error != nil && d.Error.Field == field },
		"describe": describe,
	}
	names, err := pageFS.ReadDir("templates")
	if err != nil {
		panic(err)
	}
	m := map[string]*template.Template{}
	for _, n := range names {
		name := n.Name()
		if !strings.HasSuffix(name, ".html") || name == "layout.html" {
			continue
		}
		m[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(pageFS, "templates/layout.html", "templates/"+name))
	}
	return m
}()

var pageCSS = func() []byte {
	b, err := pageFS.ReadFile("templates/style.css")
	if err != nil {
		panic(err)
	}
	return b
}()

// pageJS is the one script of the pages: the passkey ceremonies, which
// need navigator.credentials. It is served as a file, so the CSP allows no
// inline script.
var pageJS = func() []byte {
	b, err := pageFS.ReadFile("templates/passkey.js")
	if err != nil {
		panic(err)
	}
	return b
}()

// describe is the aria-describedby value of a form field: its hint (if
// any) and the error message when the error is about this field.
func describe(d *pageData, field, hint string) string {
	ids := []string{}
	if hint != "" {
		ids = append(ids, hint)
	}
	if d.Error != nil && d.Error.Field == field {
		ids = append(ids, "error")
	}
	return strings.Join(ids, " ")
}

// pages serves the hosted pages of a Server.
type pages struct {
	s *Server
	// key makes CSRF tokens. It is derived from the route key, which every
	// router and every region node of a deployment shares: a form rendered
	// by one node (or region: the identifier-first login renders step one
	// wherever the router sends a request without identifier) is posted to
	// another. The derivation is one-way and domain-separated, so the
	// tokens reveal nothing about the route key.
	key []byte
}

// registerPages adds the hosted pages' routes under /ui/.
func (s *Server) registerPages(e *echo.Echo) {
	mac := hmac.New(sha256.New, s.cfg.RouteKey)
	mac.Write([]byte("domicile/region/ui/csrf-key/v1"))
	p := &pages{s: s, key: mac.Sum(nil)}

	g := e.Group("/ui", p.headers)
	g.GET("/static/style.css", p.css)
	g.GET("/static/passkey.js", p.js)

	g.GET("/signup", p.page(p.signupForm))
	g.POST("/signup", p.page(p.guard(false, p.signup)))
	g.GET("/login", p.page(p.loginForm))
	g.POST("/login", p.page(p.guard(false, p.login)))
	g.POST("/login/mfa", p.page(p.guard(false, p.loginMFA)))
	g.GET("/login/stepup", p.page(p.stepUpForm))
	g.POST("/login/stepup", p.page(p.guard(true, p.stepUp)))
	g.POST("/account/devices/forget", p.page(p.guard(true, p.forgetDevice)))
	g.GET("/verify-email", p.page(p.verifyEmail))
	g.GET("/password/reset", p.page(p.resetForm))
	g.POST("/password/reset", p.page(p.guard(false, p.requestReset)))
	g.GET("/password/reset/confirm", p.page(p.resetConfirmForm))
	g.POST("/password/reset/confirm", p.page(p.guard(false, p.confirmReset)))

	g.GET("/account", p.page(p.account))
	g.POST("/account", p.page(p.guard(true, p.updateProfile)))
	g.POST("/account/consent", p.page(p.guard(true, p.consent)))
	g.POST("/account/mfa/totp", p.page(p.guard(true, p.enrolTOTP)))
	g.POST("/account/mfa/totp/confirm", p.page(p.guard(true, p.confirmTOTP)))
	g.POST("/account/mfa/totp/remove", p.page(p.guard(true, p.removeTOTP)))
	g.POST("/account/delete", p.page(p.guard(true, p.deleteAccount)))
	g.POST("/logout", p.page(p.guard(true, p.logout)))

	// Passkeys: the begin steps answer JSON to the page's script; the
	// finish steps are form posts answered with pages.
	g.GET("/account/passkeys", p.page(p.passkeys))
	g.POST("/account/passkeys/begin", p.page(p.guard(true, p.passkeyRegisterBegin)))
	g.POST("/account/passkeys/add", p.page(p.guard(true, p.passkeyRegisterFinish)))
	g.POST("/account/passkeys/remove", p.page(p.guard(true, p.passkeyRemove)))
	g.POST("/login/passkey/begin", p.page(p.guard(false, p.passkeyLoginBegin)))
	g.POST("/login/passkey", p.page(p.guard(false, p.passkeyLoginFinish)))
}

// headers sets the security headers of every hosted page. Pages are never
// stored by caches: most show personal data, and the verification and
// reset pages are reached with a token in the URL (which is also why no
// Referer is ever sent from them).
func (p *pages) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		return next(c)
	}
}

func (p *pages) css(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "public, max-age=3600")
	return c.Blob(http.StatusOK, "text/css; charset=utf-8", pageCSS)
}

func (p *pages) js(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "public, max-age=3600")
	return c.Blob(http.StatusOK, "text/javascript; charset=utf-8", pageJS)
}

// formError is an error shown on a page; Field names the input it is
// about (the input is marked invalid and described by the message).
type formError struct {
	Field   string
	Message string
}

type pageLink struct{ Href, Text string }

// pageData is what every template gets.
type pageData struct {
	Title  string
	Region string
	CSRF   string
	Error  *formError
	Notice string // a status message (role="status")

	Email    string
	Name     string
	Step     string // login: "identify" or "password"
	MFAToken string
	StepUp   bool   // login_mfa.html: a second factor for a signed-in user
	Token    string // password reset
	Message  string // message.html
	Links    []pageLink

	Account       *accountPage
	TOTP          *totpPage
	RecoveryCodes []string
	Passkeys      *passkeysPage
	// Script loads the passkey script (login and passkey pages).
	Script bool

	// sid binds the CSRF token of the page's forms to a session.
	sid string
}

type accountPage struct {
	Email         string
	EmailVerified bool
	Name          string
	Attributes    []attribute
	Consent       []consentState
	TOTPEnabled   bool
	TOTPPending   bool
	RecoveryLeft  int
	Passkeys      int
	Devices       []deviceView
}

type attribute struct{ Key, Value string }

type totpPage struct {
	Secret     string // base32, grouped for reading
	OTPAuthURL template.URL
	QR         template.URL // data:image/png;base64,...
}

// wantsJSON reports whether the client asked for JSON (an API client on a
// page URL): it then gets the problem document instead of an HTML page.
func wantsJSON(c echo.Context) bool {
	a := c.Request().Header.Get("Accept")
	return strings.Contains(a, "application/json") || strings.Contains(a, problem.ContentType)
}

// page turns the errors of a page handler into HTML pages (or problem
// documents for clients asking for JSON).
func (p *pages) page(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := h(c)
		if err == nil || c.Response().Committed || wantsJSON(c) {
			return err
		}
		var pr *problem.Problem
		var he *echo.HTTPError
		switch {
		case errors.As(err, &pr):
		case errors.As(err, &he):
			pr = problem.New(he.Code, "")
		default:
			p.s.log.Error("ui: internal error", "method", c.Request().Method, "path", c.Path(), "err", err)
			pr = problem.New(http.StatusInternalServerError, "something went wrong on our side; try again in a moment")
		}
		if pr.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(pr.RetryAfter))
		}
		msg := pr.Detail
		if msg == "" {
			msg = http.StatusText(pr.Status)
		}
		d := &pageData{Title: http.StatusText(pr.Status), Error: &formError{Message: sentence(msg)}, Links: []pageLink{{"/ui/login", "Sign in"}, {"/ui/signup", "Create an account"}}}
		if sid, ok := c.Get(uiSessionKey).(string); ok {
			d.sid = sid
			d.Links = []pageLink{{"/ui/account", "Your account"}}
		}
		return p.render(c, pr.Status, "message.html", d)
	}
}

// sentence makes a building block's message ("password: must be ...")
// fit to show: without the field prefix, capitalised, with a full stop.
func sentence(s string) string {
	if i := strings.Index(s, ": "); i > 0 && i < 24 && !strings.ContainsAny(s[:i], " \"") {
		s = s[i+2:]
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// render writes a page. It sets the CSRF cookie when the browser has none
// and puts the form token in d.
func (p *pages) render(c echo.Context, status int, name string, d *pageData) error {
	t := pageTemplates[name]
	if t == nil {
		return fmt.Errorf("ui: no template %q", name)
	}
	d.Region = p.s.cfg.Name
	d.CSRF = p.csrfToken(p.csrfSecret(c), d.sid)
	d.Script = d.Script || name == "login.html" || name == "passkeys.html"
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		return fmt.Errorf("ui: render %s: %w", name, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.HTMLBlob(status, buf.Bytes())
}

// redirect answers a form POST with 303 See Other (post/redirect/get).
func redirect(c echo.Context, to string) error {
	return c.Redirect(http.StatusSeeOther, to)
}

// secure reports whether the request reached the service over https.
func secure(c echo.Context) bool {
	return c.Scheme() == "https" || c.Request().Header.Get("X-Forwarded-Proto") == "https"
}

// --- CSRF -----------------------------------------------------------------
//
// A synchronizer token: the browser holds a random secret in the
// domicile_csrf cookie (HttpOnly, SameSite=Lax, Path=/ui/, Secure over
// https); every form carries HMAC(key, secret, session id) in the csrf
// field. Another site can neither read the cookie nor the token in a page,
// so it cannot make a form post that matches. Forms of the account pages
// are bound to the session, so that a secret planted in the browser (a
// cookie set from a sibling domain or over plain http) is of no use
// without the victim's session id; the forms used before there is a
// session (sign-up, login, reset) are bound to the empty session id.
// Besides, a POST whose Origin (or, without one, Referer) names another
// host is refused. An Origin of "null" carries no information (browsers
// send it for form posts from pages with Referrer-Policy: no-referrer, as
// these are) and is left to the token.

const csrfSecretLen = 32

// csrfSecret returns the browser's CSRF secret, making (and setting) a new
// one if the request has none.
func (p *pages) csrfSecret(c echo.Context) string {
	if v, ok := c.Get(uiCSRFKey).(string); ok {
		return v
	}
	if ck, err := c.Cookie(CSRFCookie); err == nil && validCSRFSecret(ck.Value) {
		c.Set(uiCSRFKey, ck.Value)
		return ck.Value
	}
	b := make([]byte, csrfSecretLen)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail
	}
	v := base64.RawURLEncoding.EncodeToString(b)
	c.SetCookie(&http.Cookie{Name: CSRFCookie, Value: v, Path: "/ui/", HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode})
	c.Set(uiCSRFKey, v)
	return v
}

func validCSRFSecret(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == csrfSecretLen
}

// csrfToken is the form token for a secret and a session id ("" for the
// forms used without a session).
func (p *pages) csrfToken(secret, sid string) string {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte("csrf\x00"))
	m.Write([]byte(secret))
	m.Write([]byte{0})
	m.Write([]byte(sid))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Echo context keys of the pages.
const (
	uiFormKey    = "domicile.ui.form"
	uiSessionKey = "domicile.ui.sid"
	uiSessKey    = "domicile.ui.session"
	uiCSRFKey    = "domicile.ui.csrf"
)

func errCSRF() error {
	return problem.New(http.StatusForbidden, "this form has expired or did not come from this site; go back, reload the page and try again")
}

// sameOrigin checks the Origin header, or without one the Referer, against
// the host the client asked for.
func sameOrigin(r *http.Request) bool {
	host := r.Header.Get("X-Forwarded-Host") // set by the router, which every request comes through
	if host == "" {
		host = r.Host
	}
	check := func(v string) bool {
		u, err := url.Parse(v)
		return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
	}
	if o := r.Header.Get("Origin"); o != "" {
		return o == "null" || check(o)
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		return check(ref)
	}
	return true
}

// guard reads a form POST and refuses it (403, nothing done) unless it
// comes from this site with a valid CSRF token. With bound, the route
// needs a session: a request without one is sent to the login page.
func (p *pages) guard(bound bool, h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !sameOrigin(c.Request()) {
			p.s.log.Warn("ui: cross-origin form post refused", "path", c.Path())
			return errCSRF()
		}
		f, err := readForm(c)
		if err != nil {
			return err
		}
		sid := ""
		if bound {
			sess, err := p.s.authenticated(c)
			if err != nil {
				clearSessionCookie(c)
				return redirect(c, "/ui/login?expired=1")
			}
			sid = sess.ID
			c.Set(uiSessKey, sess)
		}
		ck, err := c.Cookie(CSRFCookie)
		got := f.Get(csrfField)
		if err != nil || !validCSRFSecret(ck.Value) || got == "" ||
			!hmac.Equal([]byte(got), []byte(p.csrfToken(ck.Value, sid))) {
			p.s.log.Warn("ui: form post without a valid CSRF token refused", "path", c.Path())
			if bound {
				c.Set(uiSessionKey, sid)
			}
			return errCSRF()
		}
		if err := checkIdentifierFields(f); err != nil {
			return err
		}
		c.Set(uiFormKey, f)
		if bound {
			c.Set(uiSessionKey, sid)
		}
		return h(c)
	}
}

// readForm reads an application/x-www-form-urlencoded body strictly: at
// most maxBodyBytes of UTF-8 with valid percent-encoding (the router
// refuses invalid escapes too).
func readForm(c echo.Context) (url.Values, error) {
	req := c.Request()
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		// The pages' forms are always sent so; another encoding (text/plain
		// or multipart, which other sites can post too) carries no token
		// this reads.
		return nil, errCSRF()
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBodyBytes+1))
	if err != nil {
		return nil, problem.New(http.StatusBadRequest, "body: could not be read")
	}
	if len(body) > maxBodyBytes {
		return nil, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", maxBodyBytes))
	}
	if !utf8.Valid(body) {
		return nil, problem.New(http.StatusBadRequest, "body: not valid UTF-8")
	}
	f, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, problem.New(http.StatusBadRequest, "body: not a valid form")
	}
	return f, nil
}

// checkIdentifierFields refuses a form with an identifier field the router
// routes by other than "email", or with "email" more than once: router and
// region must read the same identifier.
func checkIdentifierFields(f url.Values) error {
	for k, vs := range f {
		for _, id := range []string{"email", "identifier", "username", "login_hint"} {
			if strings.EqualFold(k, id) && (k != "email" || len(vs) > 1) {
				return problem.New(http.StatusBadRequest, "body: more than one identifier field")
			}
		}
	}
	return nil
}

func form(c echo.Context) url.Values {
	f, _ := c.Get(uiFormKey).(url.Values)
	return f
}

// pageSession is the session of a guarded (bound) request.
func pageSession(c echo.Context) session.Session {
	s, _ := c.Get(uiSessKey).(session.Session)
	return s
}

func clearSessionCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode})
}

// --- sign-up ---------------------------------------------------------------

func (p *pages) signupForm(c echo.Context) error {
	return p.render(c, http.StatusOK, "signup.html", &pageData{Title: "Create an account"})
}

// signup is Server.signup for the form, with a verification link to the
// hosted confirmation page.
func (p *pages) signup(c echo.Context) error {
	s := p.s
	f := form(c)
	d := &pageData{Title: "Create an account", Email: f.Get("email"), Name: f.Get("name")}
	fail := func(status int, field, msg string) error {
		d.Error = &formError{Field: field, Message: sentence(msg)}
		return p.render(c, status, "signup.html", d)
	}
	email, err := homeindex.NormalizeEmail(f.Get("email"))
	if err != nil {
		s.signups.WithLabelValues("bad_request").Inc()
		return fail(http.StatusBadRequest, "email", "enter a valid email address")
	}
	key := s.cfg.Hasher.EmailKey(email)
	if err := s.routedBy(c, key); err != nil {
		s.signups.WithLabelValues("misrouted").Inc()
		return err
	}
	password := f.Get("password")
	if err := checkPasswordPolicy(password); err != nil {
		s.signups.WithLabelValues("bad_request").Inc()
		return fail(http.StatusBadRequest, "password", err.Error())
	}
	name := f.Get("name")
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		s.signups.WithLabelValues("bad_request").Inc()
		return fail(http.StatusBadRequest, "name", fmt.Sprintf("name: at most %d characters", MaxNameLen))
	}
	_, err = s.createAccount(c, email, name, password, key)
	switch {
	case errors.Is(err, errAccountExists):
		return fail(http.StatusConflict, "email", "an account with this email address already exists; sign in or reset your password")
	case errors.Is(err, errIndexUnavailable):
		c.Response().Header().Set("Retry-After", "1")
		return fail(http.StatusServiceUnavailable, "email", "the service is busy; try again in a moment")
	case err != nil:
		return err
	}
	return p.render(c, http.StatusOK, "message.html", &pageData{
		Title:   "Check your email",
		Message: "Your account has been created. We have sent a message to " + email + " with a link to confirm your address; it is valid for 24 hours.",
		Links:   []pageLink{{"/ui/login", "Sign in"}},
	})
}

// --- login -----------------------------------------------------------------

// loginForm shows the login page (step one). With return_to (an
// authorization request waiting for a login) it keeps the address for
// after the login, or goes back at once if the browser has a session and
// the request does not ask for a new login (prompt=login); login_hint
// prefills the email address.
func (p *pages) loginForm(c echo.Context) error {
	ret := returnPath(c.QueryParam("return_to"))
	if ret != "" {
		setReturn(c, ret)
	}
	if _, err := p.s.authenticated(c); err == nil && c.QueryParam("prompt") != "login" {
		if ret != "" {
			takeReturn(c)
			return redirect(c, ret)
		}
		return redirect(c, "/ui/account")
	}
	d := &pageData{Title: "Sign in", Step: "identify"}
	if hint, err := homeindex.NormalizeEmail(c.QueryParam("login_hint")); err == nil {
		d.Email = hint
	}
	switch {
	case c.QueryParam("signed_out") != "":
		d.Notice = "You have signed out."
	case c.QueryParam("expired") != "":
		d.Notice = "Your session has ended. Sign in again."
	}
	return p.render(c, http.StatusOK, "login.html", d)
}

// login is the identifier-first login: a form with only the email (step
// one, which shows the password step whether or not the address has an
// account) and the email with the password (step two: Server.login's
// steps, checks, counters and audit events).
func (p *pages) login(c echo.Context) error {
	s := p.s
	f := form(c)
	raw := f.Get("email")
	email, emailErr := homeindex.NormalizeEmail(raw)
	d := &pageData{Title: "Sign in", Step: "password", Email: raw}
	if _, ok := f["password"]; !ok {
		if emailErr != nil {
			d.Step = "identify"
			d.Error = &formError{Field: "email", Message: "Enter a valid email address."}
			return p.render(c, http.StatusBadRequest, "login.html", d)
		}
		if err := s.routedBy(c, s.cfg.Hasher.EmailKey(email)); err != nil {
			return err
		}
		d.Email = email
		return p.render(c, http.StatusOK, "login.html", d)
	}
	password := f.Get("password")
	bad := func() error {
		d.Error = &formError{Field: "password", Message: "Invalid email or password."}
		return p.render(c, http.StatusUnauthorized, "login.html", d)
	}
	if emailErr != nil || utf8.RuneCountInString(password) > MaxPasswordLen {
		s.logins.WithLabelValues("bad_request").Inc()
		return bad()
	}
	d.Email = email
	if err := s.routedBy(c, s.cfg.Hasher.EmailKey(email)); err != nil {
		s.logins.WithLabelValues("misrouted").Inc()
		return err
	}
	u, res, err := s.checkPassword(c, email, password)
	switch {
	case err != nil:
		return err
	case res == passwordLocked:
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(LockoutWindow.Seconds())))
		d.Error = &formError{Field: "password", Message: "Too many failed attempts. Try again later or reset your password."}
		return p.render(c, http.StatusTooManyRequests, "login.html", d)
	case res == passwordBad:
		return bad()
	}
	ctx := c.Request().Context()
	if need, err := s.mfaRequired(ctx, u.ID); err != nil {
		return fmt.Errorf("login: %w", err)
	} else if need {
		if s.rememberedDevice(c, u.ID) {
			return p.openSession(c, u, methodRememberedDevice)
		}
		// Server.startMFALogin, answered with the second-factor page.
		tok, err := s.newMFAToken(ctx, u)
		if err != nil {
			return err
		}
		return p.render(c, http.StatusOK, "login_mfa.html", &pageData{Title: "Two-step verification", MFAToken: tok})
	}
	return p.openSession(c, u, "password")
}

// loginMFA is Server.loginMFA for the form.
func (p *pages) loginMFA(c echo.Context) error {
	s := p.s
	f := form(c)
	ctx := c.Request().Context()
	id, err := s.consume(c, &tokenRequest{Token: f.Get("mfa_token")}, purposeMFALogin)
	if err != nil {
		var pr *problem.Problem
		if errors.As(err, &pr) && pr.Status == http.StatusBadRequest {
			return p.render(c, http.StatusBadRequest, "login.html", &pageData{Title: "Sign in", Step: "identify",
				Error: &formError{Field: "email", Message: "This sign-in attempt has expired. Sign in again."}})
		}
		return err
	}
	if !s.checkSecondFactor(c, id, f.Get("code"), f.Get("recovery_code")) {
		return p.render(c, http.StatusUnauthorized, "login.html", &pageData{Title: "Sign in", Step: "identify",
			Error: &formError{Field: "email", Message: "The code is not valid. Sign in again."}})
	}
	u, err := s.cfg.Accounts.UserByID(ctx, id)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if f.Get("remember") == "yes" {
		if err := s.rememberDevice(c, u.ID); err != nil {
			// The login goes on: only the next one asks again.
			s.log.Error("login: remember device", "user", u.ID, "err", err)
		}
	}
	return p.openSession(c, u, "mfa")
}

// openSession logs the user in (Server.openSession) and answers with a
// redirect to where the login was asked for (an authorization request
// waiting for it, see loginForm), or to the account page.
func (p *pages) openSession(c echo.Context, u store.User, method string) error {
	if _, _, err := p.s.openSession(c, u, method); err != nil {
		return err
	}
	if to := takeReturn(c); to != "" {
		return redirect(c, to)
	}
	return redirect(c, "/ui/account")
}

// --- return to an authorization request --------------------------------
//
// The OpenID Provider sends a browser without a session to the login page
// with return_to, the authorization request to come back to. The login
// takes several forms and may cross regions (the identifier-first step is
// served by the nearest region, the rest by the user's home), so the
// address is kept in a short-lived cookie of the pages (every region is
// the same site), read once the session is open. It holds no personal
// data: login_hint is left out of it.

// ReturnCookie holds the authorization request a login returns to.
const ReturnCookie = "domicile_return"

// returnTTL bounds how long a login may take to come back.
const returnTTL = 15 * time.Minute

// maxReturnLen bounds the address kept.
const maxReturnLen = 4096

// returnPath returns raw if it is an address a login may return to: the
// authorization endpoint of this service, with its query; "" otherwise.
func returnPath(raw string) string {
	if raw == "" || len(raw) > maxReturnLen || strings.ContainsAny(raw, "\\\r\n") {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Path != oidc.PathAuthorize || u.Fragment != "" || !strings.HasPrefix(raw, oidc.PathAuthorize+"?") {
		return ""
	}
	return raw
}

func setReturn(c echo.Context, to string) {
	c.SetCookie(&http.Cookie{Name: ReturnCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(to)), Path: "/ui/",
		MaxAge: int(returnTTL.Seconds()), HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode})
}

// takeReturn reads and clears the return address, if there is a valid one.
func takeReturn(c echo.Context) string {
	ck, err := c.Cookie(ReturnCookie)
	if err != nil {
		return ""
	}
	c.SetCookie(&http.Cookie{Name: ReturnCookie, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode})
	b, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return ""
	}
	return returnPath(string(b))
}

// logout ends the session: deleted from the store, the cookie cleared.
func (p *pages) logout(c echo.Context) error {
	sess := pageSession(c)
	if err := p.s.cfg.Sessions.Delete(c.Request().Context(), sess.ID); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if p.s.oidc != nil {
		// The tokens issued in the session, the global revocation and
		// the clients' back-channel logout.
		if err := p.s.oidc.EndSession(c.Request().Context(), sess.ID, sess.UserID); err != nil {
			p.s.log.Error("logout: end the session's tokens", "err", err)
		}
	} else {
		p.s.revokeSession(c.Request().Context(), sess.ID, sess.ExpiresAt)
	}
	p.s.audit(c, sess.UserID, "user.logout", sess.UserID, nil)
	clearSessionCookie(c)
	return redirect(c, "/ui/login?signed_out=1")
}

// --- email verification and password reset --------------------------------

// verifyEmail redeems the emailed verification link (Server.verifyEmail).
func (p *pages) verifyEmail(c echo.Context) error {
	id, err := p.s.consume(c, &tokenRequest{}, purposeVerify)
	if err != nil {
		var pr *problem.Problem
		if errors.As(err, &pr) && pr.Status == http.StatusBadRequest {
			return p.render(c, http.StatusBadRequest, "message.html", &pageData{Title: "Link not valid",
				Error: &formError{Message: "This link is not valid or has expired. Sign in to ask for a new one."},
				Links: []pageLink{{"/ui/login", "Sign in"}}})
		}
		return err
	}
	if err := p.s.cfg.Accounts.SetEmailVerified(c.Request().Context(), id, true); err != nil {
		return fmt.Errorf("verify email: %w", err)
	}
	p.s.audit(c, id, "user.email_verified", id, nil)
	return p.render(c, http.StatusOK, "message.html", &pageData{Title: "Email address confirmed",
		Message: "Thank you: your email address is confirmed.", Links: []pageLink{{"/ui/account", "Go to your account"}}})
}

func (p *pages) resetForm(c echo.Context) error {
	return p.render(c, http.StatusOK, "reset.html", &pageData{Title: "Reset your password"})
}

// requestReset is Server.requestReset for the form; the link points to the
// hosted confirmation page. The answer is the same for unknown addresses.
func (p *pages) requestReset(c echo.Context) error {
	s := p.s
	f := form(c)
	email, err := homeindex.NormalizeEmail(f.Get("email"))
	if err != nil {
		return p.render(c, http.StatusBadRequest, "reset.html", &pageData{Title: "Reset your password", Email: f.Get("email"),
			Error: &formError{Field: "email", Message: "Enter a valid email address."}})
	}
	if err := s.routedBy(c, s.cfg.Hasher.EmailKey(email)); err != nil {
		return err
	}
	sent := &pageData{Title: "Check your email",
		Message: "If " + email + " has an account, we have sent it a link to reset the password. The link is valid for 30 minutes.",
		Links:   []pageLink{{"/ui/login", "Back to sign in"}}}
	if err := s.mailResetLink(c, email); err != nil {
		return err
	}
	return p.render(c, http.StatusOK, "message.html", sent)
}

func (p *pages) resetConfirmForm(c echo.Context) error {
	tok := c.QueryParam("token")
	if tok == "" || len(tok) > 128 {
		return p.render(c, http.StatusBadRequest, "message.html", &pageData{Title: "Link not valid",
			Error: &formError{Message: "This link is not valid. Ask for a new one."}, Links: []pageLink{{"/ui/password/reset", "Reset your password"}}})
	}
	return p.render(c, http.StatusOK, "reset_confirm.html", &pageData{Title: "Choose a new password", Token: tok})
}

// confirmReset is Server.confirmReset for the form (the token comes in a
// hidden field, so that it is not repeated in another URL).
func (p *pages) confirmReset(c echo.Context) error {
	s := p.s
	f := form(c)
	d := &pageData{Title: "Choose a new password", Token: f.Get("token")}
	password := f.Get("password")
	if password != f.Get("password2") {
		d.Error = &formError{Field: "password2", Message: "The two passwords are not the same."}
		return p.render(c, http.StatusBadRequest, "reset_confirm.html", d)
	}
	if err := checkPasswordPolicy(password); err != nil {
		d.Error = &formError{Field: "password", Message: sentence(err.Error())}
		return p.render(c, http.StatusBadRequest, "reset_confirm.html", d)
	}
	id, err := s.consume(c, &tokenRequest{Token: f.Get("token")}, purposeReset)
	if err != nil {
		var pr *problem.Problem
		if errors.As(err, &pr) && pr.Status == http.StatusBadRequest {
			return p.render(c, http.StatusBadRequest, "message.html", &pageData{Title: "Link not valid",
				Error: &formError{Message: "This link is not valid or has expired. Ask for a new one."},
				Links: []pageLink{{"/ui/password/reset", "Reset your password"}}})
		}
		return err
	}
	if err := s.resetPassword(c, id, password); err != nil {
		return err
	}
	return p.render(c, http.StatusOK, "message.html", &pageData{Title: "Password changed",
		Message: "Your password has been changed. Sign in with the new one.", Links: []pageLink{{"/ui/login", "Sign in"}}})
}

// --- account ---------------------------------------------------------------

// account shows the account page (GET); without a session, the login page.
func (p *pages) account(c echo.Context) error {
	sess, err := p.s.authenticated(c)
	if err != nil {
		return redirect(c, "/ui/login")
	}
	notice := map[string]string{
		"profile": "Your profile has been saved.", "consent": "Your choice has been saved.",
		"totp_off": "Two-step verification is off.", "device": "The device has been forgotten.",
	}[c.QueryParam("saved")]
	return p.renderAccount(c, sess, http.StatusOK, nil, notice)
}

func (p *pages) renderAccount(c echo.Context, sess session.Session, status int, ferr *formError, notice string) error {
	ctx := c.Request().Context()
	u, err := p.s.cfg.Accounts.UserByID(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("account: %w", err)
	}
	h, err := p.s.cfg.Consent.ConsentHistory(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	a := &accountPage{Email: u.Email, EmailVerified: u.EmailVerified, Name: u.Name, Consent: p.s.consentStates(h)}
	for k, v := range u.Attributes {
		a.Attributes = append(a.Attributes, attribute{k, v})
	}
	sort.Slice(a.Attributes, func(i, j int) bool { return a.Attributes[i].Key < a.Attributes[j].Key })
	switch t, err := p.s.cfg.MFA.TOTP(ctx, sess.UserID); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("totp: %w", err)
	default:
		a.TOTPEnabled, a.TOTPPending = t.Confirmed, !t.Confirmed
	}
	if a.TOTPEnabled {
		if a.RecoveryLeft, err = p.s.cfg.MFA.RecoveryCodesLeft(ctx, sess.UserID); err != nil {
			return fmt.Errorf("totp: %w", err)
		}
	}
	pks, err := p.s.cfg.Passkeys.Passkeys(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	a.Passkeys = len(pks)
	if a.Devices, err = p.devicesOf(c, sess.UserID); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	return p.render(c, status, "account.html", &pageData{Title: "Your account", Account: a, Error: ferr, Notice: notice, sid: sess.ID})
}

// updateProfile is Server.patchAccount for the profile form: the name,
// the existing attributes (attr_<key>; empty removes) and one new one.
func (p *pages) updateProfile(c echo.Context) error {
	sess := pageSession(c)
	f := form(c)
	name := f.Get("name")
	in := profilePatch{Name: &name, Attributes: map[string]string{}}
	for k, vs := range f {
		if key, ok := strings.CutPrefix(k, "attr_"); ok && len(vs) > 0 {
			in.Attributes[key] = vs[0]
		}
	}
	if k := strings.TrimSpace(f.Get("new_key")); k != "" {
		in.Attributes[k] = f.Get("new_value")
	}
	if pr := checkProfile(&in); pr != nil {
		field := "new_key"
		if strings.HasPrefix(pr.Detail, "name") {
			field = "name"
		}
		return p.renderAccount(c, sess, pr.Status, &formError{Field: field, Message: sentence(pr.Detail)}, "")
	}
	err := p.s.cfg.Accounts.UpdateProfile(c.Request().Context(), sess.UserID, store.ProfileUpdate{Name: in.Name, Attributes: in.Attributes})
	if err != nil {
		return fmt.Errorf("account: %w", err)
	}
	keys := make([]string, 0, len(in.Attributes))
	for k := range in.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	p.s.audit(c, sess.UserID, "user.profile_updated", sess.UserID, map[string]string{"attributes": strings.Join(keys, ","), "name": "true"})
	return redirect(c, "/ui/account?saved=profile")
}

// consent is Server.postConsent for the grant and withdraw buttons.
func (p *pages) consent(c echo.Context) error {
	sess := pageSession(c)
	f := form(c)
	purpose := f.Get("purpose")
	version, verr := strconv.Atoi(f.Get("version"))
	granted := f.Get("granted")
	i := slices.IndexFunc(p.s.cfg.Purposes, func(q Purpose) bool { return q.Name == purpose })
	switch {
	case i < 0:
		return problem.New(http.StatusBadRequest, fmt.Sprintf("purpose: %q is not a purpose of this service", truncate(purpose, 64)))
	case granted != "true" && granted != "false":
		return problem.New(http.StatusBadRequest, "granted: required (true or false)")
	case verr != nil || version != p.s.cfg.Purposes[i].Version:
		return p.renderAccount(c, sess, http.StatusConflict, &formError{Message: "The text of this purpose has changed. Read it again and make your choice."}, "")
	}
	r, err := p.s.cfg.Consent.AppendConsent(c.Request().Context(), sess.UserID, store.ConsentRecord{Purpose: purpose, Version: version, Granted: granted == "true"})
	if err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	action := "user.consent_withdrawn"
	if r.Granted {
		action = "user.consent_granted"
	}
	p.s.audit(c, sess.UserID, action, sess.UserID, map[string]string{"purpose": r.Purpose, "version": fmt.Sprint(r.Version)})
	return redirect(c, "/ui/account?saved=consent")
}

// totpKey is the otpauth key of a secret, for the enrolment page.
func totpKey(email string, secret []byte) (*otp.Key, error) {
	return totp.Generate(totp.GenerateOpts{Issuer: "Domicile", AccountName: email, Period: totpPeriod, Secret: secret, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
}

func totpView(key *otp.Key) (*totpPage, error) {
	img, err := key.Image(240, 240)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	var grouped []string
	for s := key.Secret(); s != ""; {
		n := min(4, len(s))
		grouped, s = append(grouped, s[:n]), s[n:]
	}
	return &totpPage{
		Secret:     strings.Join(grouped, " "),
		OTPAuthURL: template.URL(key.URL()),
		QR:         template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())),
	}, nil
}

// enrolTOTP is Server.enrolTOTP: a new secret, shown on the page with the
// confirmation form. A second factor in force is not replaced here (turn
// it off first), so that a session alone cannot quietly swap it.
func (p *pages) enrolTOTP(c echo.Context) error {
	s := p.s
	sess := pageSession(c)
	ctx := c.Request().Context()
	if on, err := s.mfaRequired(ctx, sess.UserID); err != nil {
		return fmt.Errorf("totp: %w", err)
	} else if on {
		return p.renderAccount(c, sess, http.StatusConflict, &formError{Message: "Two-step verification is already on. Turn it off first to set it up again."}, "")
	}
	u, err := s.cfg.Accounts.UserByID(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	key, err := s.beginTOTP(c, u)
	if err != nil {
		return err
	}
	v, err := totpView(key)
	if err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	return p.render(c, http.StatusOK, "totp.html", &pageData{Title: "Set up two-step verification", TOTP: v, sid: sess.ID})
}

// confirmTOTP is Server.confirmTOTP: the enrolment is in force once a
// valid code is shown; the recovery codes are shown this once.
func (p *pages) confirmTOTP(c echo.Context) error {
	s := p.s
	sess := pageSession(c)
	ctx := c.Request().Context()
	t, err := s.cfg.MFA.TOTP(ctx, sess.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return p.renderAccount(c, sess, http.StatusConflict, &formError{Message: "No set-up of two-step verification has been started."}, "")
	}
	if err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	again := func(msg string) error {
		u, err := s.cfg.Accounts.UserByID(ctx, sess.UserID)
		if err != nil {
			return fmt.Errorf("totp: %w", err)
		}
		key, err := totpKey(u.Email, t.Secret)
		if err != nil {
			return fmt.Errorf("totp: %w", err)
		}
		v, err := totpView(key)
		if err != nil {
			return fmt.Errorf("totp: %w", err)
		}
		return p.render(c, http.StatusBadRequest, "totp.html", &pageData{Title: "Set up two-step verification", TOTP: v, sid: sess.ID,
			Error: &formError{Field: "code", Message: msg}})
	}
	if t.Confirmed {
		return p.renderAccount(c, sess, http.StatusConflict, &formError{Message: "Two-step verification is already on."}, "")
	}
	step, ok := checkTOTP(t.Secret, strings.TrimSpace(form(c).Get("code")), time.Now())
	if !ok {
		return again("The code is not valid. Enter the 6-digit code your app shows now.")
	}
	if err := s.cfg.MFA.UseTOTPStep(ctx, sess.UserID, step); err != nil {
		if errors.Is(err, store.ErrReplay) {
			return again("This code has been used already. Wait for the next one.")
		}
		return fmt.Errorf("totp: %w", err)
	}
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return err
	}
	if err := s.cfg.MFA.SetRecoveryCodes(ctx, sess.UserID, hashes); err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	s.audit(c, sess.UserID, "user.totp_enabled", sess.UserID, nil)
	return p.render(c, http.StatusOK, "recovery.html", &pageData{Title: "Two-step verification is on", RecoveryCodes: codes, sid: sess.ID})
}

// removeTOTP is Server.removeTOTP.
func (p *pages) removeTOTP(c echo.Context) error {
	sess := pageSession(c)
	if err := p.s.cfg.MFA.DeleteTOTP(c.Request().Context(), sess.UserID); err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	p.s.audit(c, sess.UserID, "user.totp_disabled", sess.UserID, nil)
	p.s.forgetDevices(c, sess.UserID, sess.UserID)
	return redirect(c, "/ui/account?saved=totp_off")
}

// deleteAccount is Server.deleteAccount, once the user has ticked the
// confirmation box.
func (p *pages) deleteAccount(c echo.Context) error {
	sess := pageSession(c)
	if form(c).Get("confirm") != "yes" {
		return p.renderAccount(c, sess, http.StatusBadRequest, &formError{Field: "confirm", Message: "Tick the box to confirm that you want to delete your account."}, "")
	}
	ctx := c.Request().Context()
	u, err := p.s.cfg.Accounts.UserByID(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := p.s.erase(c, u); err != nil {
		return err
	}
	_ = p.s.cfg.Sessions.Delete(ctx, sess.ID)
	p.s.revokeSession(ctx, sess.ID, sess.ExpiresAt)
	p.s.audit(c, u.ID, "user.deleted", u.ID, nil)
	clearSessionCookie(c)
	return p.render(c, http.StatusOK, "message.html", &pageData{Title: "Account deleted",
		Message: "Your account and the data we held about you have been deleted.", Links: []pageLink{{"/ui/signup", "Create a new account"}}})
}
