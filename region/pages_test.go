package region

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/net/html"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

const uiHost = "id.example.com"

// uiAdminToken is the admin token of the test regions.
const uiAdminToken = "test-admin-token"

// uiBrowser is a region on a real SQLite store and a browser (cookie jar)
// that reaches it as a router would: every request carries a signed route
// header, resolved by the email of a form when it has one.
type uiBrowser struct {
	t        *testing.T
	srv      *Server
	db       *store.DB
	sessions session.Store
	outbox   *mail.Outbox
	hasher   *homeindex.Hasher
	signer   *routesig.Signer
	jar      *cookiejar.Jar
	header   http.Header // added to every request
}

func newUIBrowser(t *testing.T) *uiBrowser {
	t.Helper()
	ctx := context.Background()
	mk := make([]byte, 32)
	rand.Read(mk)
	db, err := store.Open(ctx, store.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "r.db"), MasterKey: mk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := session.GenerateSigningKey("eu-west", 1)
	if err != nil {
		t.Fatal(err)
	}
	routeKey := make([]byte, 32)
	rand.Read(routeKey)
	hasher, err := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	outbox := mail.NewOutbox(0, nil)
	sessions := session.NewMemory()
	srv, err := New(Config{
		Name: "eu-west", Users: db, Accounts: db, MFA: db, Consent: db, Admin: db, Audit: db, Passkeys: db, Sessions: sessions, Index: noIndex{}, Hasher: hasher,
		RouteKey: routeKey, SessionKey: key, Mailer: outbox, PublicURL: "http://" + uiHost, AdminToken: uiAdminToken,
		Argon2: Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Wait) // before the store closes
	signer, err := routesig.NewSigner(routeKey, "test-router")
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	return &uiBrowser{t: t, srv: srv, db: db, sessions: sessions, outbox: outbox, hasher: hasher, signer: signer, jar: jar, header: http.Header{}}
}

// do sends a routed request (a form POST if form is not nil) and keeps the
// cookies it sets.
func (b *uiBrowser) do(method, uri string, form url.Values, hdr ...string) *httptest.ResponseRecorder {
	b.t.Helper()
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(method, uri, body)
	req.Host = uiHost
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, vs := range b.header {
		req.Header[k] = vs
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	u := &url.URL{Scheme: "http", Host: uiHost, Path: req.URL.Path}
	for _, c := range b.jar.Cookies(u) {
		req.AddCookie(c)
	}
	// As a router: by the identifier of the body, if any.
	var ident *[routesig.IdentLen]byte
	if form != nil && form.Get("email") != "" {
		if e, err := homeindex.NormalizeEmail(form.Get("email")); err == nil {
			k := [routesig.IdentLen]byte(b.hasher.EmailKey(e))
			ident = &k
		}
	}
	req.Header.Set(routesig.Header, string(b.signer.AppendHeaderFor(nil, method, uri, "eu-west", ident, time.Now())))
	rec := httptest.NewRecorder()
	b.srv.Handler().ServeHTTP(rec, req)
	b.jar.SetCookies(u, rec.Result().Cookies())
	return rec
}

func (b *uiBrowser) get(uri string) *httptest.ResponseRecorder {
	b.t.Helper()
	return b.do(http.MethodGet, uri, nil)
}

// want fails the test unless rec has the status.
func want(t *testing.T, rec *httptest.ResponseRecorder, status int, what string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("%s: HTTP %d, want %d\n%s", what, rec.Code, status, rec.Body)
	}
}

// submit posts the form of page whose action is action, with its hidden
// fields (the CSRF token among them) and the given values.
func (b *uiBrowser) submit(page *httptest.ResponseRecorder, action string, values url.Values) *httptest.ResponseRecorder {
	b.t.Helper()
	f := formFields(b.t, page.Body.String(), action, values)
	return b.do(http.MethodPost, action, f)
}

// formFields finds the first form with the action (and, if match is not
// nil, whose hidden fields agree with it) and returns its hidden fields
// overlaid with values.
func formFields(t *testing.T, body, action string, values url.Values) url.Values {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for f := range nodes(doc, "form") {
		if attr(f, "action") != action {
			continue
		}
		out := url.Values{}
		for in := range nodes(f, "input") {
			if attr(in, "type") == "hidden" || attr(in, "readonly") != "" || hasAttr(in, "readonly") {
				out.Set(attr(in, "name"), attr(in, "value"))
			}
		}
		ok := true
		for k, vs := range values {
			if strings.HasPrefix(k, "match:") {
				ok = ok && out.Get(strings.TrimPrefix(k, "match:")) == vs[0]
				continue
			}
			out[k] = vs
		}
		if ok {
			return out
		}
	}
	t.Fatalf("no form with action %q (%v) in\n%s", action, values, body)
	return nil
}

// nodes yields the elements named tag under n.
func nodes(n *html.Node, tag string) func(func(*html.Node) bool) {
	return func(yield func(*html.Node) bool) {
		var walk func(*html.Node) bool
		walk = func(n *html.Node) bool {
			if n.Type == html.ElementNode && n.Data == tag && !yield(n) {
				return false
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				if !walk(c) {
					return false
				}
			}
			return true
		}
		walk(n)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasAttr(n *html.Node, key string) bool {
	for _, a := range n.Attr {
		if a.Key == key {
			return true
		}
	}
	return false
}

func text(n *html.Node) string {
	var sb strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			sb.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.TrimSpace(sb.String())
}

// checkPage checks what every hosted page must have: the security headers,
// a language and a title, a label for every input, references that
// resolve, a CSRF token in every POST form, and no tabindex that reorders.
func checkPage(t *testing.T, rec *httptest.ResponseRecorder, what string) *html.Node {
	t.Helper()
	h := rec.Header()
	for k, v := range map[string]string{
		"Content-Security-Policy": pageCSP, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
		"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
	} {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got, v)
		}
	}
	if !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("%s: CSP without frame-ancestors", what)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	doc, err := html.Parse(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for n := range nodes(doc, "html") {
		if attr(n, "lang") == "" {
			t.Errorf("%s: <html> without lang", what)
		}
	}
	titles := 0
	for n := range nodes(doc, "title") {
		titles++
		if text(n) == "" {
			t.Errorf("%s: empty <title>", what)
		}
	}
	if titles != 1 {
		t.Errorf("%s: %d <title> elements", what, titles)
	}
	ids := map[string]int{}
	labels := map[string]bool{}
	var all func(*html.Node)
	all = func(n *html.Node) {
		if n.Type == html.ElementNode {
			if id := attr(n, "id"); id != "" {
				ids[id]++
			}
			if n.Data == "label" && attr(n, "for") != "" {
				labels[attr(n, "for")] = true
			}
			if ti := attr(n, "tabindex"); ti != "" && ti != "0" && ti != "-1" {
				t.Errorf("%s: tabindex=%s reorders the tab sequence", what, ti)
			}
			// The one script allowed: the passkey file, from this origin,
			// with nothing inline.
			if n.Data == "script" && (attr(n, "src") != "/ui/static/passkey.js" || n.FirstChild != nil) {
				t.Errorf("%s: a script element other than the passkey file", what)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			all(c)
		}
	}
	all(doc)
	for id, n := range ids {
		if n > 1 {
			t.Errorf("%s: id %q used %d times", what, id, n)
		}
	}
	controls := 0
	for _, tag := range []string{"input", "select", "textarea"} {
		for n := range nodes(doc, tag) {
			if tag == "input" && (attr(n, "type") == "hidden" || attr(n, "type") == "submit") {
				continue
			}
			controls++
			if id := attr(n, "id"); id == "" || !labels[id] {
				t.Errorf("%s: <%s name=%q> without a <label for>", what, tag, attr(n, "name"))
			}
		}
	}
	var describedBy func(*html.Node)
	describedBy = func(n *html.Node) {
		if n.Type == html.ElementNode {
			for _, ref := range strings.Fields(attr(n, "aria-describedby")) {
				if ids[ref] == 0 {
					t.Errorf("%s: aria-describedby=%q: no element with that id", what, ref)
				}
			}
			if attr(n, "aria-invalid") == "true" && !strings.Contains(attr(n, "aria-describedby"), "error") {
				t.Errorf("%s: invalid <%s name=%q> not described by the error", what, n.Data, attr(n, "name"))
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			describedBy(c)
		}
	}
	describedBy(doc)
	for f := range nodes(doc, "form") {
		if !strings.EqualFold(attr(f, "method"), "post") {
			continue
		}
		ok := false
		for in := range nodes(f, "input") {
			ok = ok || attr(in, "type") == "hidden" && attr(in, "name") == "csrf" && attr(in, "value") != ""
		}
		if !ok {
			t.Errorf("%s: form %q without a CSRF token", what, attr(f, "action"))
		}
		for btn := range nodes(f, "button") {
			if text(btn) == "" {
				t.Errorf("%s: a button without text", what)
			}
		}
	}
	for n := range nodes(doc, "img") {
		if attr(n, "alt") == "" {
			t.Errorf("%s: <img> without alt", what)
		}
	}
	if strings.Contains(rec.Body.String(), `role="alert"`) && !strings.Contains(rec.Body.String(), `id="error"`) {
		t.Errorf("%s: alert without the id the fields refer to", what)
	}
	return doc
}

// mailLink waits for the newest message to addr and returns the path and
// query of the link in it.
func (b *uiBrowser) mailLink(addr, path string) string {
	b.t.Helper()
	re := regexp.MustCompile(`http://` + regexp.QuoteMeta(uiHost) + `(` + regexp.QuoteMeta(path) + `\?\S+)`)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m, ok := b.outbox.Last(addr); ok {
			if l := re.FindStringSubmatch(m.Text); l != nil {
				return l[1]
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.t.Fatalf("no mail to %s with a link to %s", addr, path)
	return ""
}

func (b *uiBrowser) cookie(name string) *http.Cookie {
	for _, c := range b.jar.Cookies(&url.URL{Scheme: "http", Host: uiHost, Path: "/ui/"}) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

const uiPassword = "correct horse battery"

// loginSteps goes through the identifier-first login and returns the
// answer to the password step.
func (b *uiBrowser) loginSteps(email, password string) *httptest.ResponseRecorder {
	b.t.Helper()
	page := b.get("/ui/login")
	want(b.t, page, http.StatusOK, "login page")
	step2 := b.submit(page, "/ui/login", url.Values{"email": {email}})
	want(b.t, step2, http.StatusOK, "login: identifier step")
	return b.submit(step2, "/ui/login", url.Values{"password": {password}})
}

func TestPagesRenderAndHeaders(t *testing.T) {
	b := newUIBrowser(t)
	for _, uri := range []string{"/ui/signup", "/ui/login", "/ui/login?signed_out=1", "/ui/password/reset", "/ui/password/reset/confirm?home=eu-west&token=abc"} {
		rec := b.get(uri)
		want(t, rec, http.StatusOK, uri)
		checkPage(t, rec, uri)
	}
	// The account page without a session: to the login page.
	if rec := b.get("/ui/account"); rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/login" {
		t.Fatalf("account without session: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	// Error pages carry the headers too, and an alert.
	for _, uri := range []string{"/ui/verify-email?home=eu-west&token=nope", "/ui/password/reset/confirm?home=eu-west"} {
		rec := b.get(uri)
		want(t, rec, http.StatusBadRequest, uri)
		checkPage(t, rec, uri)
		if !strings.Contains(rec.Body.String(), `role="alert"`) {
			t.Errorf("%s: no alert", uri)
		}
	}
	css := b.get("/ui/static/style.css")
	want(t, css, http.StatusOK, "css")
	if !strings.HasPrefix(css.Header().Get("Content-Type"), "text/css") || !strings.Contains(css.Body.String(), ":focus-visible") {
		t.Errorf("css: %q, focus styles missing", css.Header().Get("Content-Type"))
	}

	// The CSRF cookie: HttpOnly, SameSite=Lax, Path=/ui/, Secure over https.
	b2 := newUIBrowser(t)
	for _, https := range []bool{false, true} {
		b2.jar, _ = cookiejar.New(nil)
		var rec *httptest.ResponseRecorder
		if https {
			rec = b2.do(http.MethodGet, "/ui/login", nil, "X-Forwarded-Proto", "https")
		} else {
			rec = b2.get("/ui/login")
		}
		var ck *http.Cookie
		for _, c := range rec.Result().Cookies() {
			if c.Name == CSRFCookie {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/ui/" || ck.Secure != https || len(ck.Value) < 40 {
			t.Errorf("https=%v: CSRF cookie %+v", https, ck)
		}
	}
	// The cookie is kept: a second page has the same token.
	tok := func(rec *httptest.ResponseRecorder) string {
		return formFields(t, rec.Body.String(), "/ui/login", nil).Get("csrf")
	}
	if a, c := tok(b.get("/ui/login")), tok(b.get("/ui/login")); a == "" || a != c {
		t.Errorf("CSRF token changed between pages: %q %q", a, c)
	}
}

// TestPagesFullFlow: sign-up, the emailed verification link, identifier-
// first login, the account page, TOTP enrolment, logout, login with the
// second factor, consent, profile, deletion.
func TestPagesFullFlow(t *testing.T) {
	b := newUIBrowser(t)
	ctx := context.Background()
	const email = "ana@acme.de"
	const evil = `<script>alert("x")</script>`

	page := b.get("/ui/signup")
	want(t, page, http.StatusOK, "sign-up page")
	checkPage(t, page, "sign-up page")
	// A refused password: the form again, the error announced and tied to
	// the field, the user's input escaped.
	rec := b.submit(page, "/ui/signup", url.Values{"email": {"Ana@Acme.de"}, "name": {evil}, "password": {"short"}})
	want(t, rec, http.StatusBadRequest, "sign-up with a short password")
	doc := checkPage(t, rec, "sign-up error")
	for in := range nodes(doc, "input") {
		if attr(in, "name") == "password" && (attr(in, "aria-invalid") != "true" || !strings.Contains(attr(in, "aria-describedby"), "error")) {
			t.Errorf("password field not marked invalid: %v", in.Attr)
		}
	}
	if strings.Contains(rec.Body.String(), evil) || !strings.Contains(rec.Body.String(), "&lt;script&gt;") {
		t.Fatalf("user input not escaped:\n%s", rec.Body)
	}
	rec = b.submit(page, "/ui/signup", url.Values{"email": {"Ana@Acme.de"}, "name": {evil}, "password": {uiPassword}})
	want(t, rec, http.StatusOK, "sign-up")
	checkPage(t, rec, "sign-up done")
	if !strings.Contains(rec.Body.String(), "ana@acme.de") {
		t.Errorf("sign-up page does not name the address:\n%s", rec.Body)
	}
	u, err := b.db.UserByEmail(ctx, email)
	if err != nil || u.EmailVerified {
		t.Fatalf("user after sign-up: %+v %v", u, err)
	}
	// The same address again: a conflict.
	want(t, b.submit(page, "/ui/signup", url.Values{"email": {email}, "password": {uiPassword}}), http.StatusConflict, "sign-up twice")

	// The emailed link leads to the hosted confirmation page.
	link := b.mailLink(email, "/ui/verify-email")
	if !strings.Contains(link, "home=eu-west") {
		t.Errorf("verification link without home=: %s", link)
	}
	rec = b.get(link)
	want(t, rec, http.StatusOK, "verification link")
	checkPage(t, rec, "verified")
	if u, _ := b.db.UserByEmail(ctx, email); !u.EmailVerified {
		t.Fatal("email not verified")
	}
	want(t, b.get(link), http.StatusBadRequest, "verification link twice")

	// Identifier first: the email alone gives the password step, the same
	// for an unknown address.
	login := b.get("/ui/login")
	checkPage(t, login, "login step 1")
	step2 := b.submit(login, "/ui/login", url.Values{"email": {email}})
	want(t, step2, http.StatusOK, "login step 1")
	doc = checkPage(t, step2, "login step 2")
	hasPassword := false
	for in := range nodes(doc, "input") {
		hasPassword = hasPassword || attr(in, "name") == "password" && attr(in, "type") == "password"
	}
	if !hasPassword {
		t.Fatalf("no password field on step 2:\n%s", step2.Body)
	}
	other := b.submit(login, "/ui/login", url.Values{"email": {"nobody@acme.de"}})
	if other.Code != step2.Code || strings.ReplaceAll(other.Body.String(), "nobody@acme.de", email) != step2.Body.String() {
		t.Errorf("step 1 differs for an unknown address:\n%s\n---\n%s", other.Body, step2.Body)
	}
	// A wrong password and an unknown address: one answer.
	wrong := b.submit(step2, "/ui/login", url.Values{"password": {"wrong password!"}})
	want(t, wrong, http.StatusUnauthorized, "wrong password")
	checkPage(t, wrong, "wrong password")
	unknown := b.submit(other, "/ui/login", url.Values{"password": {"wrong password!"}})
	if unknown.Code != wrong.Code || strings.ReplaceAll(unknown.Body.String(), "nobody@acme.de", email) != wrong.Body.String() {
		t.Errorf("step 2 differs for an unknown address:\n%s\n---\n%s", unknown.Body, wrong.Body)
	}
	if b.cookie(SessionCookie) != nil {
		t.Fatal("a session cookie after failed logins")
	}
	rec = b.submit(step2, "/ui/login", url.Values{"password": {uiPassword}})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/account" {
		t.Fatalf("login: %d %q\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	sc := b.cookie(SessionCookie)
	if sc == nil {
		t.Fatal("no session cookie after login")
	}
	// Logged in, the login page leads to the account.
	if rec := b.get("/ui/login"); rec.Code != http.StatusSeeOther {
		t.Errorf("login page with a session: %d", rec.Code)
	}

	account := b.get("/ui/account")
	want(t, account, http.StatusOK, "account page")
	checkPage(t, account, "account page")
	body := account.Body.String()
	if !strings.Contains(body, email) || !strings.Contains(body, "confirmed") {
		t.Fatalf("account page without the email or its status:\n%s", body)
	}
	if strings.Contains(body, evil) || !strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Fatalf("name not escaped on the account page:\n%s", body)
	}

	// Profile: the name and a new attribute.
	rec = b.submit(account, "/ui/account", url.Values{"name": {"Ana Example"}, "new_key": {"company"}, "new_value": {"Acme <GmbH>"}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("profile: %d\n%s", rec.Code, rec.Body)
	}
	account = b.get("/ui/account")
	checkPage(t, account, "account after profile")
	if !strings.Contains(account.Body.String(), "Ana Example") || !strings.Contains(account.Body.String(), `value="Acme &lt;GmbH&gt;"`) {
		t.Fatalf("profile not shown:\n%s", account.Body)
	}
	rec = b.submit(account, "/ui/account", url.Values{"new_key": {"Bad Key"}, "new_value": {"x"}})
	want(t, rec, http.StatusBadRequest, "profile with a bad key")
	checkPage(t, rec, "profile error")

	// TOTP: enrol, a wrong code, the right one, the recovery codes.
	enrol := b.submit(account, "/ui/account/mfa/totp", nil)
	want(t, enrol, http.StatusOK, "enrol TOTP")
	doc = checkPage(t, enrol, "enrol TOTP")
	var secret string
	for n := range nodes(doc, "code") {
		if attr(n, "id") == "secret" {
			secret = strings.ReplaceAll(text(n), " ", "")
		}
	}
	if secret == "" || !strings.Contains(enrol.Body.String(), "otpauth://totp/") || !strings.Contains(enrol.Body.String(), `src="data:image/png;base64,`) {
		t.Fatalf("enrolment page without secret, otpauth URL or QR code:\n%s", enrol.Body)
	}
	gen := func(at time.Time) string {
		c, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()
	bad := b.submit(enrol, "/ui/account/mfa/totp/confirm", url.Values{"code": {"00000x"}})
	want(t, bad, http.StatusBadRequest, "confirm with a wrong code")
	checkPage(t, bad, "confirm error")
	rec = b.submit(bad, "/ui/account/mfa/totp/confirm", url.Values{"code": {gen(now)}})
	want(t, rec, http.StatusOK, "confirm TOTP")
	doc = checkPage(t, rec, "recovery codes")
	var codes []string
	for n := range nodes(doc, "ol") {
		if attr(n, "class") == "codes" {
			for li := range nodes(n, "li") {
				codes = append(codes, text(li))
			}
		}
	}
	if len(codes) != 10 {
		t.Fatalf("recovery codes: %v", codes)
	}
	if on, _ := b.srv.mfaRequired(ctx, u.ID); !on {
		t.Fatal("TOTP not in force")
	}

	// Logout: the session is gone from the store, the cookie cleared.
	account = b.get("/ui/account")
	rec = b.submit(account, "/ui/logout", nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/login?signed_out=1" {
		t.Fatalf("logout: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	if b.cookie(SessionCookie) != nil {
		t.Fatal("session cookie kept after logout")
	}
	claims, err := b.srv.sessions.Verify(sc.Value, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.sessions.Get(ctx, claims.SessionID); err == nil {
		t.Fatal("session still in the store after logout")
	}
	b.jar.SetCookies(&url.URL{Scheme: "http", Host: uiHost, Path: "/"}, []*http.Cookie{sc}) // the old cookie: no longer opens the account
	if rec := b.get("/ui/account"); rec.Code != http.StatusSeeOther {
		t.Fatalf("account with a logged-out session: %d", rec.Code)
	}
	b.jar.SetCookies(&url.URL{Scheme: "http", Host: uiHost, Path: "/"}, []*http.Cookie{{Name: SessionCookie, Path: "/", MaxAge: -1}})

	// Login again: the password is not enough.
	mfa := b.loginSteps(email, uiPassword)
	want(t, mfa, http.StatusOK, "login with TOTP on")
	checkPage(t, mfa, "mfa page")
	if b.cookie(SessionCookie) != nil {
		t.Fatal("a session before the second factor")
	}
	const mfaAction = "/ui/login/mfa?home=eu-west"
	rec = b.submit(mfa, mfaAction, url.Values{"code": {"000000"}})
	want(t, rec, http.StatusUnauthorized, "wrong code")
	checkPage(t, rec, "wrong code")
	// The token was single use: the right code with it is refused too.
	rec = b.submit(mfa, mfaAction, url.Values{"code": {gen(now.Add(30 * time.Second))}})
	want(t, rec, http.StatusBadRequest, "mfa token reused")
	mfa = b.loginSteps(email, uiPassword)
	rec = b.submit(mfa, mfaAction, url.Values{"code": {gen(now.Add(30 * time.Second))}})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/account" || b.cookie(SessionCookie) == nil {
		t.Fatalf("second factor: %d %q\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}

	// Consent: grant, then withdraw.
	account = b.get("/ui/account")
	rec = b.submit(account, "/ui/account/consent", url.Values{"match:purpose": {"marketing"}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("grant: %d\n%s", rec.Code, rec.Body)
	}
	account = b.get("/ui/account")
	checkPage(t, account, "account after consent")
	if !strings.Contains(account.Body.String(), "Withdraw consent to marketing") {
		t.Fatalf("no withdraw button after granting:\n%s", account.Body)
	}
	if f := formFields(t, account.Body.String(), "/ui/account/consent", url.Values{"match:purpose": {"marketing"}}); f.Get("granted") != "false" {
		t.Fatalf("withdraw form: %v", f)
	}
	rec = b.submit(account, "/ui/account/consent", url.Values{"match:purpose": {"marketing"}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("withdraw: %d\n%s", rec.Code, rec.Body)
	}
	h, err := b.db.ConsentHistory(ctx, u.ID)
	if err != nil || len(h) != 2 || !h[0].Granted || h[1].Granted || h[1].Purpose != "marketing" {
		t.Fatalf("consent history: %+v %v", h, err)
	}

	// Deletion needs the box ticked.
	account = b.get("/ui/account")
	rec = b.submit(account, "/ui/account/delete", nil)
	want(t, rec, http.StatusBadRequest, "delete without confirmation")
	checkPage(t, rec, "delete without confirmation")
	if _, err := b.db.UserByEmail(ctx, email); err != nil {
		t.Fatal("deleted without confirmation")
	}
	rec = b.submit(account, "/ui/account/delete", url.Values{"confirm": {"yes"}})
	want(t, rec, http.StatusOK, "delete")
	checkPage(t, rec, "deleted")
	if _, err := b.db.UserByEmail(ctx, email); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("user after deletion: %v", err)
	}
	if b.cookie(SessionCookie) != nil {
		t.Fatal("session cookie kept after deletion")
	}
}

// TestPagesPasswordReset: the reset request, the emailed link to the
// hosted page, the new password.
func TestPagesPasswordReset(t *testing.T) {
	b := newUIBrowser(t)
	signup := b.get("/ui/signup")
	want(t, b.submit(signup, "/ui/signup", url.Values{"email": {"bo@acme.de"}, "password": {uiPassword}}), http.StatusOK, "sign-up")

	page := b.get("/ui/password/reset")
	known := b.submit(page, "/ui/password/reset", url.Values{"email": {"bo@acme.de"}})
	want(t, known, http.StatusOK, "reset request")
	checkPage(t, known, "reset requested")
	unknown := b.submit(page, "/ui/password/reset", url.Values{"email": {"nobody@acme.de"}})
	if unknown.Code != known.Code || strings.ReplaceAll(unknown.Body.String(), "nobody@acme.de", "bo@acme.de") != known.Body.String() {
		t.Errorf("reset answer differs for an unknown address")
	}
	link := b.mailLink("bo@acme.de", "/ui/password/reset/confirm")
	form := b.get(link)
	want(t, form, http.StatusOK, "reset link")
	checkPage(t, form, "reset form")
	const action = "/ui/password/reset/confirm?home=eu-west"
	rec := b.submit(form, action, url.Values{"password": {"a new password 1"}, "password2": {"a new password 2"}})
	want(t, rec, http.StatusBadRequest, "passwords differ")
	checkPage(t, rec, "passwords differ")
	rec = b.submit(rec, action, url.Values{"password": {"a new password 1"}, "password2": {"a new password 1"}})
	want(t, rec, http.StatusOK, "reset")
	want(t, b.submit(form, action, url.Values{"password": {"a new password 1"}, "password2": {"a new password 1"}}), http.StatusBadRequest, "reset link twice")

	if rec := b.loginSteps("bo@acme.de", uiPassword); rec.Code != http.StatusUnauthorized {
		t.Fatalf("old password: %d", rec.Code)
	}
	if rec := b.loginSteps("bo@acme.de", "a new password 1"); rec.Code != http.StatusSeeOther {
		t.Fatalf("new password: %d\n%s", rec.Code, rec.Body)
	}
}

// TestPagesLockout: after LockoutFailures failed logins the login page
// says so, with 429 and Retry-After, for an unknown address too.
func TestPagesLockout(t *testing.T) {
	b := newUIBrowser(t)
	var rec *httptest.ResponseRecorder
	for range LockoutFailures + 1 {
		rec = b.loginSteps("nobody@acme.de", "not the password")
	}
	want(t, rec, http.StatusTooManyRequests, "locked out")
	checkPage(t, rec, "locked out")
	if rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "Too many failed attempts") {
		t.Fatalf("lockout page: %v\n%s", rec.Header(), rec.Body)
	}
}

// TestPagesCSRF: every form POST without the token, with a wrong one, with
// a token of another browser or of no session (for a session's forms), or
// from another origin, is refused with 403 and changes nothing.
func TestPagesCSRF(t *testing.T) {
	b := newUIBrowser(t)
	ctx := context.Background()
	const email = "cy@acme.de"

	type attempt struct {
		name   string
		mangle func(url.Values) url.Values
		hdr    []string
	}
	anonToken := func() string {
		return formFields(t, b.get("/ui/signup").Body.String(), "/ui/signup", nil).Get("csrf")
	}
	otherBrowser := newUIBrowser(t)
	otherToken := formFields(t, otherBrowser.get("/ui/signup").Body.String(), "/ui/signup", nil).Get("csrf")
	attempts := func(bound bool) []attempt {
		a := []attempt{
			{"no token", func(v url.Values) url.Values { v.Del("csrf"); return v }, nil},
			{"empty token", func(v url.Values) url.Values { v.Set("csrf", ""); return v }, nil},
			{"wrong token", func(v url.Values) url.Values { v.Set("csrf", strings.Repeat("A", 43)); return v }, nil},
			{"another browser's token", func(v url.Values) url.Values { v.Set("csrf", otherToken); return v }, nil},
			{"cross-origin", func(v url.Values) url.Values { return v }, []string{"Origin", "https://evil.example"}},
			{"cross-site referer", func(v url.Values) url.Values { return v }, []string{"Referer", "https://evil.example/x"}},
		}
		if bound {
			a = append(a, attempt{"token without the session", func(v url.Values) url.Values { v.Set("csrf", anonToken()); return v }, nil})
		}
		return a
	}
	try := func(page *httptest.ResponseRecorder, action string, values url.Values, bound bool, unchanged func(string)) {
		t.Helper()
		for _, a := range attempts(bound) {
			f := a.mangle(formFields(t, page.Body.String(), action, values))
			rec := b.do(http.MethodPost, action, f, a.hdr...)
			if rec.Code != http.StatusForbidden {
				t.Fatalf("%s, %s: HTTP %d, want 403\n%s", action, a.name, rec.Code, rec.Body)
			}
			checkPage(t, rec, action+" 403")
			if !strings.Contains(rec.Body.String(), `role="alert"`) {
				t.Errorf("%s, %s: 403 page without an alert", action, a.name)
			}
			unchanged(action + ", " + a.name)
		}
		// A client asking for JSON gets a problem document.
		f := formFields(t, page.Body.String(), action, values)
		f.Del("csrf")
		rec := b.do(http.MethodPost, action, f, "Accept", "application/json")
		if rec.Code != http.StatusForbidden || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/problem+json") {
			t.Fatalf("%s as JSON: %d %q", action, rec.Code, rec.Header().Get("Content-Type"))
		}
		var p map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p["status"] != float64(403) {
			t.Fatalf("%s as JSON: %s", action, rec.Body)
		}
		unchanged(action + ", JSON")
	}
	noUser := func(what string) {
		if _, err := b.db.UserByEmail(ctx, email); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: user created (%v)", what, err)
		}
	}
	signup := b.get("/ui/signup")
	try(signup, "/ui/signup", url.Values{"email": {email}, "password": {uiPassword}}, false, noUser)
	want(t, b.submit(signup, "/ui/signup", url.Values{"email": {email}, "password": {uiPassword}}), http.StatusOK, "sign-up with the token")
	u, err := b.db.UserByEmail(ctx, email)
	if err != nil {
		t.Fatal(err)
	}

	noMail := func(what string) {
		for _, m := range b.outbox.Messages() {
			if strings.Contains(m.Subject, "Reset") {
				t.Fatalf("%s: reset mail sent", what)
			}
		}
	}
	reset := b.get("/ui/password/reset")
	try(reset, "/ui/password/reset", url.Values{"email": {email}}, false, noMail)

	noSession := func(what string) {
		if b.cookie(SessionCookie) != nil {
			t.Fatalf("%s: logged in", what)
		}
	}
	login := b.get("/ui/login")
	step2 := b.submit(login, "/ui/login", url.Values{"email": {email}})
	try(step2, "/ui/login", url.Values{"password": {uiPassword}}, false, noSession)
	if rec := b.submit(step2, "/ui/login", url.Values{"password": {uiPassword}}); rec.Code != http.StatusSeeOther {
		t.Fatalf("login: %d", rec.Code)
	}

	account := b.get("/ui/account")
	want(t, account, http.StatusOK, "account")
	same := func(what string) {
		t.Helper()
		got, err := b.db.UserByID(ctx, u.ID)
		if err != nil {
			t.Fatalf("%s: user gone: %v", what, err)
		}
		if got.Name != "" || len(got.Attributes) != 0 {
			t.Fatalf("%s: profile changed: %+v", what, got)
		}
		if h, _ := b.db.ConsentHistory(ctx, u.ID); len(h) != 0 {
			t.Fatalf("%s: consent recorded: %+v", what, h)
		}
		if _, err := b.db.TOTP(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: TOTP enrolment started", what)
		}
		if b.cookie(SessionCookie) == nil {
			t.Fatalf("%s: session cookie cleared", what)
		}
		if rec := b.get("/ui/account"); rec.Code != http.StatusOK {
			t.Fatalf("%s: session ended", what)
		}
	}
	try(account, "/ui/account", url.Values{"name": {"Mallory"}, "new_key": {"x"}, "new_value": {"y"}}, true, same)
	try(account, "/ui/account/consent", url.Values{"match:purpose": {"marketing"}}, true, same)
	try(account, "/ui/account/mfa/totp", nil, true, same)
	try(account, "/ui/account/delete", url.Values{"confirm": {"yes"}}, true, same)
	try(account, "/ui/logout", nil, true, same)

	// The same-origin Origin header, and "null" (sent by browsers for
	// pages with Referrer-Policy: no-referrer), pass with the token.
	f := formFields(t, account.Body.String(), "/ui/account", url.Values{"name": {"Cy"}})
	if rec := b.do(http.MethodPost, "/ui/account", f, "Origin", "http://"+uiHost); rec.Code != http.StatusSeeOther {
		t.Fatalf("same-origin post: %d\n%s", rec.Code, rec.Body)
	}
	f = formFields(t, account.Body.String(), "/ui/account", url.Values{"name": {"Cy"}})
	if rec := b.do(http.MethodPost, "/ui/account", f, "Origin", "null"); rec.Code != http.StatusSeeOther {
		t.Fatalf("post with Origin null: %d\n%s", rec.Code, rec.Body)
	}
	// Behind a router, the host the client asked for is X-Forwarded-Host.
	f = formFields(t, account.Body.String(), "/ui/account", url.Values{"name": {"Cy"}})
	if rec := b.do(http.MethodPost, "/ui/account", f, "Origin", "https://login.acme.de", "X-Forwarded-Host", "login.acme.de"); rec.Code != http.StatusSeeOther {
		t.Fatalf("post via router host: %d\n%s", rec.Code, rec.Body)
	}

	// A session's form token dies with the session: after logout and a new
	// login, the old account page's forms are refused.
	old := b.get("/ui/account")
	want(t, b.submit(old, "/ui/logout", nil), http.StatusSeeOther, "logout")
	if rec := b.loginSteps(email, uiPassword); rec.Code != http.StatusSeeOther {
		t.Fatalf("login again: %d", rec.Code)
	}
	if rec := b.submit(old, "/ui/account", url.Values{"name": {"Mallory"}}); rec.Code != http.StatusForbidden {
		t.Fatalf("form of an ended session: %d", rec.Code)
	}
	// Without a session, a session's form leads to the login page.
	b.jar.SetCookies(&url.URL{Scheme: "http", Host: uiHost, Path: "/"}, []*http.Cookie{{Name: SessionCookie, Path: "/", MaxAge: -1}})
	if rec := b.submit(old, "/ui/account", url.Values{"name": {"Mallory"}}); rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/ui/login") {
		t.Fatalf("session form without a session: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	if got, _ := b.db.UserByID(ctx, u.ID); got.Name != "Cy" {
		t.Fatalf("name: %q", got.Name)
	}
}

// TestPagesFormStrictness: the region reads the identifier only from an
// "email" field given once, as the router does.
func TestPagesFormStrictness(t *testing.T) {
	b := newUIBrowser(t)
	page := b.get("/ui/login")
	for name, f := range map[string]url.Values{
		"two emails":       {"email": {"a@acme.de", "b@acme.de"}},
		"username as well": {"email": {"a@acme.de"}, "username": {"b@acme.de"}},
		"EMAIL":            {"EMAIL": {"a@acme.de"}},
	} {
		v := formFields(t, page.Body.String(), "/ui/login", nil)
		for k, vs := range f {
			v[k] = vs
		}
		if rec := b.do(http.MethodPost, "/ui/login", v); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", name, rec.Code)
		}
	}
	// Another encoding than a urlencoded form carries no token: 403.
	for _, ct := range []string{"text/plain", "multipart/form-data; boundary=x", ""} {
		v := formFields(t, page.Body.String(), "/ui/login", url.Values{"email": {"a@acme.de"}})
		if rec := b.do(http.MethodPost, "/ui/login", v, "Content-Type", ct); rec.Code != http.StatusForbidden {
			t.Errorf("Content-Type %q: HTTP %d, want 403", ct, rec.Code)
		}
	}
	// Routed by another identifier than the body's: refused.
	v := formFields(t, page.Body.String(), "/ui/login", url.Values{"email": {"a@acme.de"}})
	req := httptest.NewRequest(http.MethodPost, "/ui/login", strings.NewReader(v.Encode()))
	req.Host = uiHost
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range b.jar.Cookies(&url.URL{Scheme: "http", Host: uiHost, Path: "/ui/login"}) {
		req.AddCookie(c)
	}
	k := [routesig.IdentLen]byte(b.hasher.EmailKey("b@acme.de"))
	req.Header.Set(routesig.Header, string(b.signer.AppendHeaderFor(nil, http.MethodPost, "/ui/login", "eu-west", &k, time.Now())))
	rec := httptest.NewRecorder()
	b.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusMisdirectedRequest {
		t.Errorf("misrouted: %d", rec.Code)
	}
}
