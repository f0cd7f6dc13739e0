package region

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/oidc"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// The OpenID Provider, end to end: a region behind a test router (an
// httptest server that is the issuer, signs route headers as a router does
// and serves the union JWKS from the region's /internal/oidc-keys), a
// browser (cookie jar), and relying parties built with coreos/go-oidc and
// golang.org/x/oauth2.

const (
	rpRedirect   = "https://rp.example.com/callback"
	rpPostLogout = "https://rp.example.com/bye"
	oidcPassword = "correct horse battery"
)

// countingAccounts and countingUsers count the reads of users, so that a
// test can assert that none was made (a travelling user).
type countingAccounts struct {
	Accounts
	reads atomic.Int64
}

func (c *countingAccounts) UserByID(ctx context.Context, id string) (store.User, error) {
	c.reads.Add(1)
	return c.Accounts.UserByID(ctx, id)
}

type countingUsers struct {
	Users
	reads atomic.Int64
}

func (c *countingUsers) UserByEmail(ctx context.Context, email string) (store.User, error) {
	c.reads.Add(1)
	return c.Users.UserByEmail(ctx, email)
}

// testClock is a clock a test can move forward.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

type oidcRegion struct {
	t        *testing.T
	name     string
	srv      *Server
	db       *store.DB
	accounts *countingAccounts
	users    *countingUsers
	sessions session.Store
	state    oidc.State
	hasher   *homeindex.Hasher
	signer   *routesig.Signer
	ts       *httptest.Server
	issuer   string
	clock    *testClock
	keyFile  string // the OpenID keys, which tests read to sign forgeries

	// The registered clients.
	confID, confSecret string // confidential: code, refresh, client credentials
	publicID           string // public: code (PKCE), refresh
	bcl                chan string
}

type oidcOptions struct {
	state    string // "memory" (default) or "redis"
	sessions string // the session (and device) store: "memory" (default) or "redis"
	foreign  session.KeySource
	codeTTL  time.Duration
}

func newOIDCRegion(t *testing.T, o oidcOptions) *oidcRegion {
	t.Helper()
	ctx := context.Background()
	r := &oidcRegion{t: t, name: "eu-west", clock: &testClock{}, bcl: make(chan string, 8)}
	var handler http.Handler
	r.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { handler.ServeHTTP(w, req) }))
	t.Cleanup(r.ts.Close)
	r.issuer = r.ts.URL

	mk := make([]byte, 32)
	rand.Read(mk)
	db, err := store.Open(ctx, store.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "r.db"), MasterKey: mk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r.db = db
	r.accounts = &countingAccounts{Accounts: db}
	r.users = &countingUsers{Users: db}
	key, _ := session.GenerateSigningKey(r.name, 1)
	routeKey := make([]byte, 32)
	rand.Read(routeKey)
	r.hasher, _ = homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	r.signer, _ = routesig.NewSigner(routeKey, "test-router")
	mem := session.NewMemory()
	t.Cleanup(func() { mem.Close() })
	r.sessions = mem
	if o.sessions == "redis" {
		rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
		t.Cleanup(func() { rc.Close() })
		r.sessions = session.NewRedis(rc, testenv.RedisPrefix(t)+"sess:")
	}
	switch o.state {
	case "", "memory":
		m := oidc.NewMemoryState()
		t.Cleanup(func() { m.Close() })
		r.state = m
	case "redis":
		rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
		prefix := testenv.RedisPrefix(t)
		t.Cleanup(func() { rc.Close() })
		r.state = oidc.NewRedisState(rc, prefix)
	}
	r.keyFile = filepath.Join(t.TempDir(), "oidc-keys.json")
	keys, err := oidc.LoadOrCreateKeyRing(r.keyFile, r.name, 0)
	if err != nil {
		t.Fatal(err)
	}
	oc := &oidc.Config{Keys: keys, State: r.state, Now: r.clock.now, ClientCacheTTL: -1, CodeTTL: o.codeTTL}
	if o.foreign != nil {
		oc.ForeignSessions = session.NewRemoteVerifier(o.foreign, session.RemoteOptions{})
	}
	r.srv, err = New(Config{
		Name: r.name, Users: r.users, Accounts: r.accounts, MFA: db, Consent: db, Admin: db, Audit: db, Passkeys: db, Sessions: r.sessions,
		Index: noIndex{}, Hasher: r.hasher, RouteKey: routeKey, SessionKey: key, Mailer: mail.NewOutbox(0, nil),
		PublicURL: r.issuer, AdminToken: uiAdminToken, Argon2: Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1},
		Logger: slog.New(slog.DiscardHandler), OIDC: oc, ClientAdmin: db,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.srv.Wait)
	handler = http.HandlerFunc(r.route)

	// The app's back-channel endpoint is overloaded at the first try of
	// every logout token: the provider must try again.
	var seenMu sync.Mutex
	seen := map[string]bool{}
	bcl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.ParseForm()
		tok := req.PostForm.Get("logout_token")
		seenMu.Lock()
		first := !seen[tok]
		seen[tok] = true
		seenMu.Unlock()
		if first {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.bcl <- tok
	}))
	t.Cleanup(bcl.Close)
	conf := r.registerClient(`{"client_id":"rp-web","client_name":"Web RP","redirect_uris":["` + rpRedirect + `"],
		"post_logout_redirect_uris":["` + rpPostLogout + `"],"grant_types":["authorization_code","refresh_token","client_credentials"],
		"scopes":["openid","profile","email","offline_access","api.read"],"backchannel_logout_uri":"` + bcl.URL + `/bcl"}`)
	r.confID, r.confSecret = conf["client_id"].(string), conf["client_secret"].(string)
	pub := r.registerClient(`{"client_id":"rp-spa","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1:5555/cb"],
		"grant_types":["authorization_code","refresh_token"]}`)
	r.publicID = pub["client_id"].(string)
	return r
}

// route is the test router: the union JWKS from the region's keys, and
// every other request forwarded with a route header (resolved by the
// email of a form, as a router does).
func (r *oidcRegion) route(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == oidc.PathKeys {
		rec := httptest.NewRecorder()
		r.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/internal/oidc-keys", nil))
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(rec.Body.Bytes())
		return
	}
	var ident *[routesig.IdentLen]byte
	if req.Method == http.MethodPost && strings.HasPrefix(req.Header.Get("Content-Type"), "application/x-www-form-urlencoded") && strings.HasPrefix(req.URL.Path, "/ui/") {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		if f, err := url.ParseQuery(string(body)); err == nil && f.Get("email") != "" {
			if e, err := homeindex.NormalizeEmail(f.Get("email")); err == nil {
				k := [routesig.IdentLen]byte(r.hasher.EmailKey(e))
				ident = &k
			}
		}
	}
	req.Header.Set(routesig.Header, string(r.signer.AppendHeaderFor(nil, req.Method, req.RequestURI, r.name, ident, time.Now())))
	r.srv.Handler().ServeHTTP(w, req)
}

// admin sends an admin API request to the region's own address.
func (r *oidcRegion) admin(method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+uiAdminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	r.srv.Handler().ServeHTTP(rec, req)
	return rec
}

func (r *oidcRegion) registerClient(doc string) map[string]any {
	r.t.Helper()
	rec := r.admin(http.MethodPost, "/admin/v1/clients", doc)
	if rec.Code != http.StatusCreated {
		r.t.Fatalf("register client: HTTP %d %s", rec.Code, rec.Body)
	}
	var m map[string]any
	json.Unmarshal(rec.Body.Bytes(), &m)
	return m
}

// newUser creates a user of the region with oidcPassword.
func (r *oidcRegion) newUser(email string) string {
	r.t.Helper()
	id, _ := newUserID(r.name)
	hash, err := hashPassword(Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}, oidcPassword)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.db.CreateUser(ctx, store.User{ID: id, Email: email, Name: "Ana Test", PasswordHash: hash}); err != nil {
		r.t.Fatal(err)
	}
	if err := r.db.SetEmailVerified(ctx, id, true); err != nil {
		r.t.Fatal(err)
	}
	return id
}

// browser is a user agent with a cookie jar that stops at the relying
// party (any other host).
func (r *oidcRegion) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	host := strings.TrimPrefix(r.issuer, "http://")
	return &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host != host {
			return http.ErrUseLastResponse
		}
		return nil
	}}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// login signs in through the hosted pages from where an authorization
// request sent the browser, and returns the answer the browser ends with
// (the redirect to the relying party).
func (r *oidcRegion) login(b *http.Client, authURL, email string) *http.Response {
	t := r.t
	t.Helper()
	resp, err := b.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.Path, "/ui/login") {
		t.Fatalf("authorize without session: ended at %s with HTTP %d, want the login page", resp.Request.URL, resp.StatusCode)
	}
	if q := resp.Request.URL.Query(); strings.Contains(q.Get("return_to"), "login_hint") || !strings.HasPrefix(q.Get("return_to"), oidc.PathAuthorize+"?") {
		t.Fatalf("login page URL %s: want return_to to the authorization request, without login_hint", resp.Request.URL)
	}
	page := readAll(t, resp)
	resp, err = b.PostForm(r.issuer+"/ui/login", formFields(t, page, "/ui/login", url.Values{"email": {email}}))
	if err != nil {
		t.Fatal(err)
	}
	page = readAll(t, resp)
	resp, err = b.PostForm(r.issuer+"/ui/login", formFields(t, page, "/ui/login", url.Values{"password": {oidcPassword}}))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// rp is a relying party: coreos/go-oidc for discovery and ID tokens,
// x/oauth2 for the code flow.
type rp struct {
	provider *gooidc.Provider
	conf     oauth2.Config
	verifier *gooidc.IDTokenVerifier
}

func (r *oidcRegion) rp(clientID, secret, redirect string, scopes ...string) *rp {
	r.t.Helper()
	p, err := gooidc.NewProvider(context.Background(), r.issuer)
	if err != nil {
		r.t.Fatalf("discovery: %v", err)
	}
	ep := p.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	return &rp{provider: p, verifier: p.Verifier(&gooidc.Config{ClientID: clientID}),
		conf: oauth2.Config{ClientID: clientID, ClientSecret: secret, Endpoint: ep, RedirectURL: redirect, Scopes: scopes}}
}

// authorization is an authorization request of an RP (state, nonce, PKCE).
type authorization struct {
	url, state, nonce, verifier string
}

func (p *rp) authorize(extra ...oauth2.AuthCodeOption) authorization {
	a := authorization{state: oauth2.GenerateVerifier()[:16], nonce: oauth2.GenerateVerifier()[:16], verifier: oauth2.GenerateVerifier()}
	opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(a.verifier), gooidc.Nonce(a.nonce)}, extra...)
	a.url = p.conf.AuthCodeURL(a.state, opts...)
	return a
}

// callback checks an authorization response (a redirect to the RP) and
// returns its parameters.
func (r *oidcRegion) callback(resp *http.Response, a authorization) url.Values {
	r.t.Helper()
	if resp.StatusCode != http.StatusFound {
		r.t.Fatalf("want a redirect to the RP, got HTTP %d: %s", resp.StatusCode, readAll(r.t, resp))
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		r.t.Fatal(err)
	}
	q := loc.Query()
	if q.Get("iss") != r.issuer {
		r.t.Errorf("authorization response iss = %q, want %q (RFC 9207)", q.Get("iss"), r.issuer)
	}
	if q.Get("state") != a.state {
		r.t.Errorf("state = %q, want %q", q.Get("state"), a.state)
	}
	return q
}

// claims decodes a JWT's payload without checking it.
func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func header(t *testing.T, jwt string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// post sends a form to a protocol endpoint with client credentials
// (Basic when secret is not empty) and decodes the JSON answer.
func (r *oidcRegion) post(path string, form url.Values, clientID, secret string) (int, map[string]any, http.Header) {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.issuer+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	} else if clientID != "" {
		form.Set("client_id", clientID)
		req, _ = http.NewRequest(http.MethodPost, r.issuer+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	body := readAll(r.t, resp)
	var m map[string]any
	json.Unmarshal([]byte(body), &m)
	return resp.StatusCode, m, resp.Header
}

func (r *oidcRegion) introspect(token string) map[string]any {
	r.t.Helper()
	st, m, _ := r.post(oidc.PathIntrospect, url.Values{"token": {token}}, r.confID, r.confSecret)
	if st != http.StatusOK {
		r.t.Fatalf("introspect: HTTP %d %v", st, m)
	}
	return m
}

func (r *oidcRegion) active(token string) bool {
	r.t.Helper()
	a, _ := r.introspect(token)["active"].(bool)
	return a
}

// wantOAuthError fails unless an answer is the RFC 6749 error code.
func wantOAuthError(t *testing.T, what string, status int, m map[string]any, wantStatus int, code string) {
	t.Helper()
	if status != wantStatus || m["error"] != code {
		t.Fatalf("%s: HTTP %d %v, want HTTP %d error %q", what, status, m, wantStatus, code)
	}
}

// retrieveError is the RFC 6749 error code of an x/oauth2 failure.
func retrieveError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// codeFlow runs a complete login: authorization (through the login page),
// code exchange with PKCE, ID token verification.
func (r *oidcRegion) codeFlow(b *http.Client, p *rp, email string) (*oauth2.Token, *gooidc.IDToken, authorization) {
	r.t.Helper()
	a := p.authorize(oauth2.SetAuthURLParam("login_hint", email))
	q := r.callback(r.login(b, a.url, email), a)
	ctx := context.Background()
	tok, err := p.conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		r.t.Fatalf("code exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	id, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		r.t.Fatalf("ID token: %v", err)
	}
	if id.Nonce != a.nonce {
		r.t.Fatalf("nonce %q, want %q", id.Nonce, a.nonce)
	}
	return tok, id, a
}

func forEachState(t *testing.T, f func(t *testing.T, state string)) {
	for _, s := range []string{"memory", "redis"} {
		t.Run(s, func(t *testing.T) { f(t, s) })
	}
}

// TestOIDCRelyingPartyFlow: login, ID token against the union JWKS,
// userinfo, refresh with rotation, logout (with back-channel logout).
func TestOIDCRelyingPartyFlow(t *testing.T) {
	forEachState(t, func(t *testing.T, state string) {
		r := newOIDCRegion(t, oidcOptions{state: state})
		uid := r.newUser("ana@acme.de")
		p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID, "email", gooidc.ScopeOfflineAccess)
		b := r.browser()
		ctx := context.Background()

		tok, id, _ := r.codeFlow(b, p, "ana@acme.de")
		var c struct {
			Sub, Sid, Email string
			EmailVerified   bool     `json:"email_verified"`
			AuthTime        int64    `json:"auth_time"`
			AMR             []string `json:"amr"`
		}
		if err := id.Claims(&c); err != nil {
			t.Fatal(err)
		}
		if c.Sub != uid || c.Sid == "" || c.Email != "ana@acme.de" || !c.EmailVerified || c.AuthTime == 0 || !slices.Equal(c.AMR, []string{"pwd"}) {
			t.Fatalf("ID token claims %+v", c)
		}
		raw := tok.Extra("id_token").(string)
		if h := header(t, raw); h["alg"] != "EdDSA" || !strings.HasPrefix(h["kid"].(string), "eu-west-") {
			t.Fatalf("ID token header %v", h)
		}
		if h := header(t, tok.AccessToken); h["typ"] != "at+jwt" {
			t.Fatalf("access token header %v, want typ at+jwt (RFC 9068)", h)
		}
		at := claims(t, tok.AccessToken)
		if at["sub"] != uid || at["client_id"] != r.confID || at["sid"] != c.Sid || at["jti"] == "" || at["scope"] != "openid email offline_access" {
			t.Fatalf("access token claims %v", at)
		}
		if exp := int64(at["exp"].(float64)) - int64(at["iat"].(float64)); exp != int64(oidc.DefaultAccessTTL.Seconds()) {
			t.Errorf("access token lifetime %ds, want %s", exp, oidc.DefaultAccessTTL)
		}
		if !strings.HasPrefix(tok.RefreshToken, "eu-west.") || len(tok.RefreshToken) != len("eu-west.")+43 {
			t.Fatalf("refresh token %q: want eu-west.<43 base64url>", tok.RefreshToken)
		}

		// Userinfo, with the access token.
		info, err := p.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil || info.Subject != uid || info.Email != "ana@acme.de" || !info.EmailVerified {
			t.Fatalf("userinfo: %+v, %v", info, err)
		}

		// Refresh: a new pair each time; the old refresh token is spent.
		old := tok.RefreshToken
		tok2, err := p.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if tok2.RefreshToken == old || tok2.AccessToken == tok.AccessToken {
			t.Fatal("refresh did not rotate")
		}
		id2, err := p.verifier.Verify(ctx, tok2.Extra("id_token").(string))
		if err != nil || id2.Subject != uid {
			t.Fatalf("ID token of the refresh: %v", err)
		}
		if !r.active(tok2.AccessToken) || !r.active(tok2.RefreshToken) || r.active(old) {
			t.Fatal("introspection after refresh: want the new tokens active, the old refresh token not")
		}

		// RP-initiated logout: the session ends, its tokens die, and the
		// RP is told by back channel.
		q := url.Values{"id_token_hint": {raw}, "post_logout_redirect_uri": {rpPostLogout}, "state": {"bye-1"}}
		resp, err := b.Get(r.issuer + oidc.PathLogout + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != rpPostLogout+"?state=bye-1" {
			t.Fatalf("logout: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if _, err := r.sessions.Get(ctx, c.Sid); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("session after logout: %v, want gone", err)
		}
		if _, err := p.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok2.RefreshToken}).Token(); retrieveError(err) != "invalid_grant" {
			t.Fatalf("refresh after logout: %v, want invalid_grant", err)
		}
		if r.active(tok2.AccessToken) {
			t.Fatal("the access token of a logged-out session is still active")
		}
		select {
		case lt := <-r.bcl:
			lc, lh := claims(t, lt), header(t, lt)
			events, _ := lc["events"].(map[string]any)
			if lh["typ"] != "logout+jwt" || lc["sid"] != c.Sid || lc["sub"] != uid || lc["aud"] != r.confID || lc["iss"] != r.issuer || events["http://schemas.openid.net/event/backchannel-logout"] == nil || lc["nonce"] != nil {
				t.Fatalf("logout token %v %v", lh, lc)
			}
			if _, err := p.provider.Verifier(&gooidc.Config{ClientID: r.confID, SkipExpiryCheck: false}).Verify(ctx, lt); err != nil {
				t.Fatalf("logout token signature: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no back-channel logout token")
		}
		// Logged out: the next authorization goes to the login page.
		resp, err = b.Get(p.authorize().url)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if !strings.HasPrefix(resp.Request.URL.Path, "/ui/login") {
			t.Fatalf("authorize after logout ended at %s, want the login page", resp.Request.URL)
		}
	})
}

// TestOIDCSessionSSO: with a session, authorization completes at once;
// prompt=login and max_age ask for a new login; prompt=none without one is
// login_required.
func TestOIDCSessionSSO(t *testing.T) {
	r := newOIDCRegion(t, oidcOptions{})
	r.newUser("bo@acme.de")
	r.newUser("other@acme.de")
	p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID)
	b := r.browser()
	boTok, _, _ := r.codeFlow(b, p, "bo@acme.de")
	otherTok, _, _ := r.codeFlow(r.browser(), p, "other@acme.de")

	// id_token_hint: the session must be that user's.
	a0 := p.authorize(oauth2.SetAuthURLParam("prompt", "none"), oauth2.SetAuthURLParam("id_token_hint", otherTok.Extra("id_token").(string)))
	resp0, err := b.Get(a0.url)
	if err != nil {
		t.Fatal(err)
	}
	if q := r.callback(resp0, a0); q.Get("error") != "login_required" {
		t.Fatalf("prompt=none with another user's id_token_hint: %v, want login_required", q)
	}
	a0 = p.authorize(oauth2.SetAuthURLParam("prompt", "none"), oauth2.SetAuthURLParam("id_token_hint", boTok.Extra("id_token").(string)))
	if resp0, err = b.Get(a0.url); err != nil {
		t.Fatal(err)
	}
	if q := r.callback(resp0, a0); q.Get("code") == "" {
		t.Fatalf("prompt=none with the user's own id_token_hint: %v, want a code", q)
	}

	a := p.authorize()
	resp, err := b.Get(a.url)
	if err != nil {
		t.Fatal(err)
	}
	q := r.callback(resp, a)
	if q.Get("code") == "" {
		t.Fatal("SSO with a session: no code")
	}

	a = p.authorize(oauth2.SetAuthURLParam("prompt", "login"))
	resp, err = b.Get(a.url)
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if resp.Request.URL.Path != "/ui/login" || resp.Request.URL.Query().Get("prompt") != "login" || !strings.Contains(page, `action="/ui/login"`) {
		t.Fatalf("prompt=login: ended at %s, want the login form", resp.Request.URL)
	}
	// Logging in again returns to the request, which now completes.
	resp, err = b.PostForm(r.issuer+"/ui/login", formFields(t, page, "/ui/login", url.Values{"email": {"bo@acme.de"}}))
	if err != nil {
		t.Fatal(err)
	}
	page = readAll(t, resp)
	resp, err = b.PostForm(r.issuer+"/ui/login", formFields(t, page, "/ui/login", url.Values{"password": {oidcPassword}}))
	if err != nil {
		t.Fatal(err)
	}
	if r.callback(resp, a).Get("code") == "" {
		t.Fatal("after the forced login: no code")
	}

	// max_age already past: a new login.
	r.clock.advance(2 * time.Minute)
	resp, err = b.Get(p.authorize(oauth2.SetAuthURLParam("max_age", "60")).url)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.Request.URL.Path != "/ui/login" {
		t.Fatalf("max_age exceeded: ended at %s, want the login page", resp.Request.URL)
	}

	// prompt=none without a session.
	a = p.authorize(oauth2.SetAuthURLParam("prompt", "none"))
	resp, err = r.browser().Get(a.url)
	if err != nil {
		t.Fatal(err)
	}
	if q := r.callback(resp, a); q.Get("error") != "login_required" {
		t.Fatalf("prompt=none without a session: %v, want error=login_required", q)
	}
}

// TestOIDCPublicClient: a public client with PKCE gets tokens without a
// secret, and must use PKCE.
func TestOIDCPublicClient(t *testing.T) {
	r := newOIDCRegion(t, oidcOptions{})
	r.newUser("cy@acme.de")
	p := r.rp(r.publicID, "", "http://127.0.0.1:5555/cb", gooidc.ScopeOpenID, gooidc.ScopeOfflineAccess)
	p.conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	b := r.browser()
	tok, _, _ := r.codeFlow(b, p, "cy@acme.de")
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	if _, err := p.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
		t.Fatalf("public client refresh: %v", err)
	}
	// No PKCE: refused at the authorization endpoint.
	a := p.authorize()
	u, _ := url.Parse(a.url)
	q := u.Query()
	q.Del("code_challenge")
	q.Del("code_challenge_method")
	u.RawQuery = q.Encode()
	resp, err := b.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	if q := r.callback(resp, a); q.Get("error") != "invalid_request" {
		t.Fatalf("public client without PKCE: %v, want invalid_request", q)
	}
}

// TestOIDCClientCredentials: a client's own token, checked by
// introspection; scopes limited to the client's.
func TestOIDCClientCredentials(t *testing.T) {
	forEachState(t, func(t *testing.T, state string) {
		r := newOIDCRegion(t, oidcOptions{state: state})
		cc := clientcredentials.Config{ClientID: r.confID, ClientSecret: r.confSecret, TokenURL: r.issuer + oidc.PathToken, Scopes: []string{"api.read"}}
		tok, err := cc.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if tok.RefreshToken != "" || tok.Extra("id_token") != nil {
			t.Fatal("client credentials gave a refresh or ID token")
		}
		in := r.introspect(tok.AccessToken)
		if in["active"] != true || in["sub"] != r.confID || in["client_id"] != r.confID || in["scope"] != "api.read" || in["token_type"] != "Bearer" {
			t.Fatalf("introspection %v", in)
		}
		cc.Scopes = []string{"openid"}
		if _, err := cc.Token(context.Background()); retrieveError(err) != "invalid_scope" {
			t.Fatalf("user scope in client credentials: %v, want invalid_scope", err)
		}
		cc.Scopes = []string{"api.write"}
		if _, err := cc.Token(context.Background()); retrieveError(err) != "invalid_scope" {
			t.Fatalf("unregistered scope: %v, want invalid_scope", err)
		}
		cc.Scopes, cc.ClientSecret = nil, "wrong"
		if _, err := cc.Token(context.Background()); retrieveError(err) != "invalid_client" {
			t.Fatalf("wrong secret: %v, want invalid_client", err)
		}
		// A public client cannot.
		st, m, _ := r.post(oidc.PathToken, url.Values{"grant_type": {"client_credentials"}}, r.publicID, "")
		wantOAuthError(t, "public client_credentials", st, m, http.StatusBadRequest, "unauthorized_client")
	})
}

// TestOIDCIntrospectionAndRevocation: RFC 7662 and RFC 7009.
func TestOIDCIntrospectionAndRevocation(t *testing.T) {
	forEachState(t, func(t *testing.T, state string) {
		r := newOIDCRegion(t, oidcOptions{state: state})
		r.newUser("di@acme.de")
		p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID, gooidc.ScopeOfflineAccess)
		tok, _, _ := r.codeFlow(r.browser(), p, "di@acme.de")

		in := r.introspect(tok.AccessToken)
		for _, k := range []string{"sub", "client_id", "scope", "exp", "iat", "jti", "iss", "aud", "sid"} {
			if in[k] == nil {
				t.Errorf("introspection without %s: %v", k, in)
			}
		}
		rt := r.introspect(tok.RefreshToken)
		if rt["active"] != true || rt["token_type"] != "refresh_token" || rt["client_id"] != r.confID {
			t.Fatalf("refresh token introspection %v", rt)
		}
		// Introspection needs client authentication.
		st, m, h := r.post(oidc.PathIntrospect, url.Values{"token": {tok.AccessToken}}, r.confID, "wrong")
		wantOAuthError(t, "introspection with a wrong secret", st, m, http.StatusUnauthorized, "invalid_client")
		if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("401 without WWW-Authenticate: %v", h)
		}
		// Garbage is inactive, not an error.
		if r.active("not-a-token") || r.active("eu-west."+strings.Repeat("A", 43)) {
			t.Fatal("garbage introspected active")
		}

		// Revoke the access token: inactive at once.
		st, m, _ = r.post(oidc.PathRevoke, url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}}, r.confID, r.confSecret)
		if st != http.StatusOK {
			t.Fatalf("revoke access token: HTTP %d %v", st, m)
		}
		if r.active(tok.AccessToken) || !r.active(tok.RefreshToken) {
			t.Fatal("after revoking the access token: want it inactive, the refresh token active")
		}
		// Revoke the refresh token: the family ends.
		tok2, err := p.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil {
			t.Fatal(err)
		}
		st, _, _ = r.post(oidc.PathRevoke, url.Values{"token": {tok2.RefreshToken}}, r.confID, r.confSecret)
		if st != http.StatusOK || r.active(tok2.RefreshToken) || r.active(tok2.AccessToken) {
			t.Fatalf("after revoking the refresh token (HTTP %d): its family should be inactive", st)
		}
		if _, err := p.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok2.RefreshToken}).Token(); retrieveError(err) != "invalid_grant" {
			t.Fatalf("refresh with a revoked token: %v", err)
		}
		// Revoking an unknown token is no error; another client's is.
		if st, m, _ := r.post(oidc.PathRevoke, url.Values{"token": {"eu-west." + strings.Repeat("B", 43)}}, r.confID, r.confSecret); st != http.StatusOK {
			t.Fatalf("revoke an unknown token: HTTP %d %v", st, m)
		}
		tok3, _, _ := r.codeFlow(r.browser(), p, "di@acme.de")
		st, m, _ = r.post(oidc.PathRevoke, url.Values{"token": {tok3.RefreshToken}}, r.publicID, "")
		wantOAuthError(t, "revoke another client's token", st, m, http.StatusBadRequest, "unauthorized_client")
		if !r.active(tok3.RefreshToken) {
			t.Fatal("another client revoked a token")
		}
	})
}

// TestOIDCTravellingUser: a user of us-east with a live us-east session
// asks eu-west for SSO with prompt=none. eu-west verifies the session with
// us-east's key and answers with identity only, without reading its user
// store; any other request of that user is misdirected (421).
func TestOIDCTravellingUser(t *testing.T) {
	usKey, _ := session.GenerateSigningKey("us-east", 1)
	r := newOIDCRegion(t, oidcOptions{foreign: session.StaticKeys{usKey.Public()}})
	usIssuer, _ := session.NewIssuer("us-east", usKey)
	now := time.Now()
	tok, err := usIssuer.Issue(session.Claims{Subject: "us-east.00112233445566778899aabbccddeeff", Home: "us-east", SessionID: "us-sid-1",
		IssuedAt: now.Add(-time.Minute), Expiry: now.Add(time.Hour), AMR: []string{"hwk", "user", "mfa"}})
	if err != nil {
		t.Fatal(err)
	}
	b := r.browser()
	u, _ := url.Parse(r.issuer)
	b.Jar.SetCookies(u, []*http.Cookie{{Name: SessionCookie, Value: tok, Path: "/"}})
	p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID, "email", gooidc.ScopeOfflineAccess)

	readsBefore := r.accounts.reads.Load() + r.users.reads.Load()
	a := p.authorize(oauth2.SetAuthURLParam("prompt", "none"))
	resp, err := b.Get(a.url)
	if err != nil {
		t.Fatal(err)
	}
	q := r.callback(resp, a)
	if q.Get("code") == "" || !strings.HasPrefix(q.Get("code"), "eu-west.") {
		t.Fatalf("prompt=none for a travelling user: %v, want a code of eu-west", q)
	}
	otok, err := p.conf.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatal(err)
	}
	if n := r.accounts.reads.Load() + r.users.reads.Load() - readsBefore; n != 0 {
		t.Fatalf("the user store was read %d times for a user of another region", n)
	}
	id, err := p.verifier.Verify(context.Background(), otok.Extra("id_token").(string))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	id.Claims(&c)
	if c["sub"] != "us-east.00112233445566778899aabbccddeeff" || c["sid"] != "us-sid-1" || c["auth_time"] == nil || c["email"] != nil || c["amr"] == nil {
		t.Fatalf("ID token of a travelling user %v: want sub, sid, auth_time, amr and no email", c)
	}
	if otok.RefreshToken != "" || claims(t, otok.AccessToken)["scope"] != "openid" {
		t.Fatalf("travelling user: refresh %q scope %v, want identity only", otok.RefreshToken, claims(t, otok.AccessToken)["scope"])
	}
	if _, err := p.provider.UserInfo(context.Background(), oauth2.StaticTokenSource(otok)); err == nil {
		t.Fatal("userinfo answered for a travelling user's token")
	}
	// Anything else for that user is for us-east.
	resp, err = b.Get(p.authorize().url)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("authorize (no prompt=none) for a travelling user: HTTP %d %s, want 421 problem+json", resp.StatusCode, body)
	}
	// A session of another region whose key is not known: no session.
	otherKey, _ := session.GenerateSigningKey("ap-southeast", 1)
	otherIss, _ := session.NewIssuer("ap-southeast", otherKey)
	forged, _ := otherIss.Issue(session.Claims{Subject: "ap-southeast.x", Home: "ap-southeast", SessionID: "s", IssuedAt: now, Expiry: now.Add(time.Hour)})
	b2 := r.browser()
	b2.Jar.SetCookies(u, []*http.Cookie{{Name: SessionCookie, Value: forged, Path: "/"}})
	a = p.authorize(oauth2.SetAuthURLParam("prompt", "none"))
	resp, err = b2.Get(a.url)
	if err != nil {
		t.Fatal(err)
	}
	if q := r.callback(resp, a); q.Get("error") != "login_required" {
		t.Fatalf("session of an unknown key: %v, want login_required", q)
	}
}

// TestOIDCKeyRotation: after a rotation, new tokens carry the new kid and
// the old ones still verify (both keys are published).
func TestOIDCKeyRotation(t *testing.T) {
	r := newOIDCRegion(t, oidcOptions{})
	r.newUser("ed@acme.de")
	p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID)
	b := r.browser()
	tok1, _, _ := r.codeFlow(b, p, "ed@acme.de")
	rec := r.admin(http.MethodPost, "/admin/v1/oidc/keys/rotate", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"eu-west-2"`) {
		t.Fatalf("rotate: HTTP %d %s", rec.Code, rec.Body)
	}
	a := p.authorize()
	resp, err := b.Get(a.url)
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := p.conf.Exchange(context.Background(), r.callback(resp, a).Get("code"), oauth2.VerifierOption(a.verifier))
	if err != nil {
		t.Fatal(err)
	}
	if k1, k2 := header(t, tok1.AccessToken)["kid"], header(t, tok2.AccessToken)["kid"]; k1 != "eu-west-1" || k2 != "eu-west-2" {
		t.Fatalf("kids %v then %v", k1, k2)
	}
	// A fresh RP (empty key cache) verifies both ID tokens.
	fresh := r.rp(r.confID, r.confSecret, rpRedirect)
	for _, tok := range []*oauth2.Token{tok1, tok2} {
		if _, err := fresh.verifier.Verify(context.Background(), tok.Extra("id_token").(string)); err != nil {
			t.Fatalf("ID token of %v after rotation: %v", header(t, tok.AccessToken)["kid"], err)
		}
	}
	if !r.active(tok1.AccessToken) || !r.active(tok2.AccessToken) {
		t.Fatal("an access token signed before or after the rotation is not active")
	}
	rec = httptest.NewRecorder()
	r.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/internal/oidc-keys", nil))
	keys, err := session.ParseJWKS(rec.Body.Bytes())
	if err != nil || len(keys) != 2 {
		t.Fatalf("/internal/oidc-keys: %v %s", err, rec.Body)
	}
}

// TestOIDCDiscovery: the region's metadata names the routers' paths.
func TestOIDCDiscovery(t *testing.T) {
	r := newOIDCRegion(t, oidcOptions{})
	resp, err := http.Get(r.issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	json.Unmarshal([]byte(readAll(t, resp)), &d)
	want := map[string]any{
		"issuer": r.issuer, "authorization_endpoint": r.issuer + "/oauth2/authorize", "token_endpoint": r.issuer + "/oauth2/token",
		"introspection_endpoint": r.issuer + "/oauth2/introspect", "revocation_endpoint": r.issuer + "/oauth2/revoke",
		"userinfo_endpoint": r.issuer + "/userinfo", "end_session_endpoint": r.issuer + "/oauth2/logout", "jwks_uri": r.issuer + "/oauth2/keys",
		"authorization_response_iss_parameter_supported": true,
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("discovery %s = %v, want %v", k, d[k], v)
		}
	}
	for k, v := range map[string]string{"response_types_supported": "[code]", "code_challenge_methods_supported": "[S256]",
		"id_token_signing_alg_values_supported": "[EdDSA]", "grant_types_supported": "[authorization_code refresh_token client_credentials]"} {
		if got := strings.ReplaceAll(jsonString(d[k]), `"`, ""); got != v {
			t.Errorf("discovery %s = %s, want %s", k, got, v)
		}
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return strings.NewReplacer(",", " ").Replace(string(b))
}

// TestOIDCAdminClients: the client registry through the admin API.
func TestOIDCAdminClients(t *testing.T) {
	r := newOIDCRegion(t, oidcOptions{})
	rec := r.admin(http.MethodPost, "/admin/v1/clients", `{"redirect_uris":["https://x.example.com/cb"],"grant_types":["authorization_code"]}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create: HTTP %d %s", rec.Code, rec.Body)
	}
	var created map[string]any
	json.Unmarshal(rec.Body.Bytes(), &created)
	id, secret := created["client_id"].(string), created["client_secret"].(string)
	if id == "" || len(secret) < 43 || created["token_endpoint_auth_method"] != "client_secret_basic" {
		t.Fatalf("created %v", created)
	}
	rec = r.admin(http.MethodGet, "/admin/v1/clients/"+id, "")
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), secret) || strings.Contains(rec.Body.String(), "client_secret\"") {
		t.Fatalf("get: HTTP %d %s (the secret must not be shown again)", rec.Code, rec.Body)
	}
	stored, _ := r.db.Client(context.Background(), id)
	if h := sha256.Sum256([]byte(secret)); !bytes.Equal(stored.SecretHash, h[:]) {
		t.Fatal("the registry does not keep the secret's SHA-256")
	}
	for _, bad := range []string{
		`{"redirect_uris":["http://evil.example.com/cb"]}`,
		`{"redirect_uris":["https://x/cb#frag"]}`,
		`{"grant_types":["implicit"],"redirect_uris":["https://x/cb"]}`,
		`{"grant_types":["password"]}`,
		`{"token_endpoint_auth_method":"none","grant_types":["client_credentials"]}`,
		`{"client_id":"rp-web","redirect_uris":["https://x/cb"]}`,
	} {
		if rec := r.admin(http.MethodPost, "/admin/v1/clients", bad); rec.Code != http.StatusBadRequest && rec.Code != http.StatusConflict {
			t.Errorf("create %s: HTTP %d %s, want 400 or 409", bad, rec.Code, rec.Body)
		}
	}
	rec = r.admin(http.MethodPut, "/admin/v1/clients/"+id, `{"client_name":"Renamed","redirect_uris":["https://x.example.com/new"],"grant_types":["authorization_code"]}`)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "Renamed") {
		t.Fatalf("update: HTTP %d %s", rec.Code, rec.Body)
	}
	rec = r.admin(http.MethodPost, "/admin/v1/clients/"+id+"/secret", "")
	var rot map[string]any
	json.Unmarshal(rec.Body.Bytes(), &rot)
	if rec.Code != http.StatusOK || rot["client_secret"] == secret || rot["client_secret"] == "" {
		t.Fatalf("rotate secret: HTTP %d %s", rec.Code, rec.Body)
	}
	rec = r.admin(http.MethodGet, "/admin/v1/clients?limit=2", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"next"`) {
		t.Fatalf("list: HTTP %d %s", rec.Code, rec.Body)
	}
	if rec := r.admin(http.MethodDelete, "/admin/v1/clients/"+id, ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: HTTP %d", rec.Code)
	}
	if rec := r.admin(http.MethodGet, "/admin/v1/clients/"+id, ""); rec.Code != http.StatusNotFound {
		t.Fatalf("get after delete: HTTP %d", rec.Code)
	}
	// Without the admin token: nothing.
	req := httptest.NewRequest(http.MethodGet, "/admin/v1/clients", nil)
	rec = httptest.NewRecorder()
	r.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("no admin token: HTTP %d", rec.Code)
	}
}

// TestOIDCNeedsRouteHeader: the protocol endpoints are routed like the
// rest; the keys are public.
func TestOIDCNeedsRouteHeader(t *testing.T) {
	r := newOIDCRegion(t, oidcOptions{})
	for _, path := range []string{oidc.PathAuthorize, oidc.PathToken, oidc.PathIntrospect, oidc.PathUserinfo, oidc.PathLogout} {
		rec := httptest.NewRecorder()
		r.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusMisdirectedRequest {
			t.Errorf("%s without route header: HTTP %d, want 421", path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	r.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/internal/oidc-keys", nil))
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"d"`) {
		t.Fatalf("/internal/oidc-keys: HTTP %d %s", rec.Code, rec.Body)
	}
	// A code of another region is misdirected.
	st, _, h := r.post(oidc.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {"us-east." + strings.Repeat("A", 43)}, "redirect_uri": {rpRedirect}}, r.confID, r.confSecret)
	if st != http.StatusMisdirectedRequest || !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("code of us-east: HTTP %d %s", st, h.Get("Content-Type"))
	}
}

func TestReturnPath(t *testing.T) {
	for raw, ok := range map[string]bool{
		"/oauth2/authorize?client_id=a&redirect_uri=https%3A%2F%2Fx": true,
		"/oauth2/authorize":                          false, // no request
		"https://evil.example.com/oauth2/authorize?": false,
		"//evil.example.com/oauth2/authorize?x=1":    false,
		"/oauth2/authorize/../../ui/account?x=1":     false,
		"/ui/account?x=1":                            false,
		"/oauth2/authorize?x=1#frag":                 false,
		"/oauth2/authorize?x=1\r\nSet-Cookie: a=b":   false,
		"\\\\evil.example.com/oauth2/authorize?x":    false,
		"": false,
	} {
		if got := returnPath(raw) != ""; got != ok {
			t.Errorf("returnPath(%q) accepted %v, want %v", raw, got, ok)
		}
	}
}

// TestOIDCHostedLogout: signing out on the hosted pages ends the tokens of
// the session and tells the clients by back channel, as RP-initiated
// logout does.
func TestOIDCHostedLogout(t *testing.T) {
	r := newOIDCRegion(t, oidcOptions{})
	r.newUser("fa@acme.de")
	p := r.rp(r.confID, r.confSecret, rpRedirect, gooidc.ScopeOpenID, gooidc.ScopeOfflineAccess)
	b := r.browser()
	tok, _, _ := r.codeFlow(b, p, "fa@acme.de")
	resp, err := b.Get(r.issuer + "/ui/account")
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	resp, err = b.PostForm(r.issuer+"/ui/logout", formFields(t, page, "/ui/logout", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if _, err := p.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); retrieveError(err) != "invalid_grant" {
		t.Fatalf("refresh after signing out: %v, want invalid_grant", err)
	}
	select {
	case lt := <-r.bcl:
		if claims(t, lt)["aud"] != r.confID {
			t.Fatalf("logout token %v", claims(t, lt))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no back-channel logout token")
	}
}
