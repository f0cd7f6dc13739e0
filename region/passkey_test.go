package region

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"golang.org/x/net/html"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/region/passkeytest"
	"github.com/domicile/domicile/region/store"
)

// uiOrigin is the origin of the test region's pages (PublicURL).
const uiOrigin = "http://" + uiHost

// api sends a routed JSON request as a router would: signed for region,
// resolved by email when it is not "". The cookies of the jar go with it
// and come back into it.
func (b *uiBrowser) api(method, uri, body, email, region string, hdr ...string) (*httptest.ResponseRecorder, map[string]any) {
	b.t.Helper()
	req := httptest.NewRequest(method, uri, strings.NewReader(body))
	req.Host = uiHost
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	u := &url.URL{Scheme: "http", Host: uiHost, Path: req.URL.Path}
	for _, c := range b.jar.Cookies(u) {
		req.AddCookie(c)
	}
	var ident *[routesig.IdentLen]byte
	if email != "" {
		e, err := homeindex.NormalizeEmail(email)
		if err != nil {
			b.t.Fatal(err)
		}
		k := [routesig.IdentLen]byte(b.hasher.EmailKey(e))
		ident = &k
	}
	req.Header.Set(routesig.Header, string(b.signer.AppendHeaderFor(nil, method, uri, region, ident, time.Now())))
	rec := httptest.NewRecorder()
	b.srv.Handler().ServeHTTP(rec, req)
	b.jar.SetCookies(u, rec.Result().Cookies())
	var m map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	return rec, m
}

// wantAPI fails unless rec has the status.
func wantAPI(t *testing.T, rec *httptest.ResponseRecorder, status int, what string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("%s: HTTP %d, want %d: %s", what, rec.Code, status, rec.Body)
	}
	if status >= 400 && !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/problem+json") {
		t.Errorf("%s: error answered with %q, want problem+json", what, rec.Header().Get("Content-Type"))
	}
}

// options is the publicKey object of a begin answer, as JSON, and its state.
func options(t *testing.T, m map[string]any) ([]byte, string) {
	t.Helper()
	js, err := json.Marshal(m["publicKey"])
	state, _ := m["state"].(string)
	if err != nil || state == "" || m["publicKey"] == nil {
		t.Fatalf("begin answer without options or state: %v", m)
	}
	return js, state
}

func finishBody(t *testing.T, state, name string, credential []byte) string {
	t.Helper()
	js, err := json.Marshal(map[string]any{"state": state, "name": name, "credential": json.RawMessage(credential)})
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

// signUpAndLogin makes an account through the JSON API and leaves its
// session in the browser's jar; it returns the user id.
func (b *uiBrowser) signUpAndLogin(email string) string {
	b.t.Helper()
	creds := `{"email":"` + email + `","password":"` + uiPassword + `"}`
	rec, m := b.api(http.MethodPost, "/signup", creds, email, "eu-west")
	wantAPI(b.t, rec, http.StatusCreated, "sign-up")
	rec, _ = b.api(http.MethodPost, "/login", creds, email, "eu-west")
	wantAPI(b.t, rec, http.StatusOK, "login")
	return m["id"].(string)
}

// registerPasskey adds a passkey of a through the JSON API, for the user
// of the jar's session.
func (b *uiBrowser) registerPasskey(a *passkeytest.Authenticator, name string) map[string]any {
	b.t.Helper()
	rec, m := b.api(http.MethodPost, "/passkeys/register/begin", "", "", "eu-west")
	wantAPI(b.t, rec, http.StatusOK, "register begin")
	opts, state := options(b.t, m)
	cred, err := a.Create(uiOrigin, opts)
	if err != nil {
		b.t.Fatal(err)
	}
	rec, m = b.api(http.MethodPost, "/passkeys/register/finish", finishBody(b.t, state, name, cred), "", "eu-west")
	wantAPI(b.t, rec, http.StatusCreated, "register finish")
	return m
}

// passkeyAssertion begins a passwordless login (with email, an
// identifier-bound one) and answers it with a; it returns the finish body.
func (b *uiBrowser) passkeyAssertion(a *passkeytest.Authenticator, email string) string {
	b.t.Helper()
	body := ""
	if email != "" {
		body = `{"email":"` + email + `"}`
	}
	rec, m := b.api(http.MethodPost, "/passkeys/login/begin", body, email, "eu-west")
	wantAPI(b.t, rec, http.StatusOK, "login begin")
	opts, state := options(b.t, m)
	cred, err := a.Get(uiOrigin, opts)
	if err != nil {
		b.t.Fatal(err)
	}
	return finishBody(b.t, state, "", cred)
}

func auditActions(t *testing.T, db *store.DB, userID string) []string {
	t.Helper()
	x, err := db.ExportUser(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range x.Audit {
		out = append(out, e.Action)
	}
	return out
}

func TestPasskeyUserHandle(t *testing.T) {
	id, err := newUserID("ap-southeast")
	if err != nil {
		t.Fatal(err)
	}
	h, err := userHandle(id)
	if err != nil || len(h) > 64 || !bytes.HasPrefix(h, []byte("ap-southeast.")) || bytes.Contains(h, []byte(id[len("ap-southeast."):])) {
		t.Fatalf("userHandle(%s) = %q, %v", id, h, err)
	}
	region, back, ok := parseUserHandle(h)
	if !ok || region != "ap-southeast" || back != id {
		t.Fatalf("parseUserHandle = %q %q %v, want %q", region, back, ok, id)
	}
	// The longest region name still fits WebAuthn's 64 bytes.
	long := strings.Repeat("a", 32) + ".00112233445566778899aabbccddeeff"
	if h, err := userHandle(long); err != nil || len(h) > 64 {
		t.Fatalf("userHandle(32-character region) = %d bytes, %v", len(h), err)
	}
	for _, bad := range []string{"", "eu-west", "eu-west.xyz", "EU.00112233445566778899aabbccddeeff", "eu-west.0011"} {
		if _, err := userHandle(bad); err == nil {
			t.Errorf("userHandle(%q) accepted", bad)
		}
	}
	for _, bad := range [][]byte{nil, []byte("."), []byte("eu-west"), append([]byte("eu-west."), make([]byte, 15)...),
		append([]byte("EU-WEST."), make([]byte, 16)...), append([]byte(strings.Repeat("a", 33)+"."), make([]byte, 16)...)} {
		if _, _, ok := parseUserHandle(bad); ok {
			t.Errorf("parseUserHandle(%q) accepted", bad)
		}
	}
}

func TestCeremonySealing(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	cs, err := newCeremonies(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := ceremony{Purpose: ceremonyRegister, UserID: "eu-west.u1", Expires: now.Add(ceremonyTTL).UnixMilli(), Session: webauthn.SessionData{Challenge: "abc", UserID: []byte("h")}}
	tok, err := cs.seal(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(tok, "eu-west") {
		t.Error("the token shows the user id")
	}
	got, err := cs.open(tok, ceremonyRegister, "eu-west.u1", now)
	if err != nil || got.Session.Challenge != "abc" || got.UserID != "eu-west.u1" {
		t.Fatalf("open = %+v, %v", got, err)
	}
	other := make([]byte, 32)
	rand.Read(other)
	otherCS, _ := newCeremonies(other)
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	raw[len(raw)-1] ^= 1
	for name, try := range map[string]func() error{
		"other purpose": func() error { _, err := cs.open(tok, ceremonyLogin, "eu-west.u1", now); return err },
		"other user":    func() error { _, err := cs.open(tok, ceremonyRegister, "eu-west.u2", now); return err },
		"expired":       func() error { _, err := cs.open(tok, ceremonyRegister, "eu-west.u1", now.Add(ceremonyTTL)); return err },
		"other key":     func() error { _, err := otherCS.open(tok, ceremonyRegister, "eu-west.u1", now); return err },
		"altered": func() error {
			_, err := cs.open(base64.RawURLEncoding.EncodeToString(raw), ceremonyRegister, "eu-west.u1", now)
			return err
		},
		"garbage": func() error { _, err := cs.open("!!not base64!!", ceremonyRegister, "eu-west.u1", now); return err },
		"empty":   func() error { _, err := cs.open("", ceremonyRegister, "eu-west.u1", now); return err },
		"huge": func() error {
			_, err := cs.open(strings.Repeat("A", maxCeremonyToken+1), ceremonyRegister, "eu-west.u1", now)
			return err
		},
	} {
		if err := try(); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

func TestRelyingPartyConfig(t *testing.T) {
	for _, tc := range []struct {
		publicURL, rpID string
		origins         []string
		wantID          string
		wantOrigins     []string
		wantErr         string
	}{
		{publicURL: "https://id.example.com", wantID: "id.example.com", wantOrigins: []string{"https://id.example.com"}},
		{publicURL: "https://ID.Example.com:8443/base", wantID: "id.example.com", wantOrigins: []string{"https://id.example.com:8443"}},
		{publicURL: "http://127.0.0.1:8080", wantID: "localhost", wantOrigins: []string{"http://localhost:8080"}},
		{publicURL: "https://login.example.com", rpID: "example.com", origins: []string{"https://login.example.com", "https://example.com/"},
			wantID: "example.com", wantOrigins: []string{"https://login.example.com", "https://example.com"}},
		{publicURL: "https://192.0.2.10", wantErr: "rp_id"},
		{publicURL: "https://id.example.com", rpID: "192.0.2.10", wantErr: "rp_id"},
		{publicURL: "https://id.example.com", origins: []string{"https://evil.example"}, wantErr: "rp_origins"},
		{publicURL: "https://id.example.com", origins: []string{"https://id.example.com/login"}, wantErr: "rp_origins"},
		{publicURL: "https://id.example.com", origins: []string{"id.example.com"}, wantErr: "rp_origins"},
		{publicURL: "https://id.example.com", rpID: "example.com", origins: []string{"https://notexample.com"}, wantErr: "rp_origins"},
	} {
		w, err := newRelyingParty(Config{PublicURL: tc.publicURL, RPID: tc.rpID, RPOrigins: tc.origins})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr+":") {
				t.Errorf("%s %q %v: error %v, want one naming %s", tc.publicURL, tc.rpID, tc.origins, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.publicURL, err)
			continue
		}
		if w.Config.RPID != tc.wantID || strings.Join(w.Config.RPOrigins, " ") != strings.Join(tc.wantOrigins, " ") {
			t.Errorf("%s: RP ID %q origins %v, want %q %v", tc.publicURL, w.Config.RPID, w.Config.RPOrigins, tc.wantID, tc.wantOrigins)
		}
	}
}

// TestPasskeyAPI: register a passkey, sign in with it without an
// identifier, and every way that must fail: a replayed registration or
// assertion, another region's passkey, a wrong origin, a bad signature, a
// counter that went back, another account's passkey for an identifier, a
// disabled account; without user verification TOTP is still asked for.
func TestPasskeyAPI(t *testing.T) {
	b := newUIBrowser(t)
	ctx := context.Background()
	const email = "ana@acme.de"
	id := b.signUpAndLogin(email)
	a := &passkeytest.Authenticator{UserVerified: true, BackupEligible: true, BackupState: true, AAGUID: [16]byte{1, 2, 3}}

	// Register: the options ask for a discoverable credential, the user
	// handle names the region and no personal data.
	rec, m := b.api(http.MethodPost, "/passkeys/register/begin", "", "", "eu-west")
	wantAPI(t, rec, http.StatusOK, "register begin")
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("begin answer may be cached")
	}
	opts, state := options(t, m)
	var co protocol.PublicKeyCredentialCreationOptions
	if err := json.Unmarshal(opts, &co); err != nil {
		t.Fatal(err)
	}
	handle, _ := base64.RawURLEncoding.DecodeString(co.User.ID.(string))
	if co.RelyingParty.ID != uiHost || co.AuthenticatorSelection.ResidentKey != protocol.ResidentKeyRequirementRequired ||
		!bytes.HasPrefix(handle, []byte("eu-west.")) || bytes.Contains(handle, []byte(email)) || co.Attestation != protocol.PreferNoAttestation {
		t.Fatalf("creation options: %s", opts)
	}
	cred, err := a.Create(uiOrigin, opts)
	if err != nil {
		t.Fatal(err)
	}
	body := finishBody(t, state, "  Laptop  ", cred)
	rec, m = b.api(http.MethodPost, "/passkeys/register/finish", body, "", "eu-west")
	wantAPI(t, rec, http.StatusCreated, "register finish")
	if m["name"] != "Laptop" || m["backup_eligible"] != true || m["aaguid"] != "01020300-0000-0000-0000-000000000000" {
		t.Fatalf("registered passkey: %v", m)
	}
	pkID := m["id"].(string)
	// The owner is told, with where to remove it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if msg, ok := b.outbox.Last(email); ok && msg.Subject == "A passkey was added to your account" {
			if !strings.Contains(msg.Text, `"Laptop"`) || !strings.Contains(msg.Text, uiOrigin+"/ui/account/passkeys") {
				t.Errorf("notice: %q", msg.Text)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no notice of the new passkey")
		}
	}
	rec, _ = b.api(http.MethodPost, "/passkeys/register/finish", body, "", "eu-west")
	wantAPI(t, rec, http.StatusBadRequest, "register finish replayed")
	// Malformed registrations: 400, never a 500.
	for _, bad := range []string{`null`, `{}`, `"x"`, `{"id":"AA","rawId":"AA","type":"public-key","response":{}}`,
		`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`,
		`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"!!","attestationObject":"??"}}`} {
		rec, m := b.api(http.MethodPost, "/passkeys/register/begin", "", "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "register begin")
		_, st := options(t, m)
		rec, _ = b.api(http.MethodPost, "/passkeys/register/finish", `{"state":"`+st+`","credential":`+bad+`}`, "", "eu-west")
		wantAPI(t, rec, http.StatusBadRequest, "register with credential "+bad)
	}
	rec, _ = b.api(http.MethodPost, "/passkeys/register/finish", finishBody(t, state, strings.Repeat("n", MaxPasskeyName+1), cred), "", "eu-west")
	wantAPI(t, rec, http.StatusBadRequest, "register with a long name")
	// The same authenticator again: excluded by the options.
	rec, m = b.api(http.MethodPost, "/passkeys/register/begin", "", "", "eu-west")
	wantAPI(t, rec, http.StatusOK, "register begin again")
	opts, _ = options(t, m)
	if _, err := a.Create(uiOrigin, opts); err != passkeytest.ErrExcluded {
		t.Fatalf("second passkey on one authenticator: %v, want excluded", err)
	}
	rec, m = b.api(http.MethodGet, "/passkeys", "", "", "eu-west")
	wantAPI(t, rec, http.StatusOK, "list")
	if l, _ := m["passkeys"].([]any); len(l) != 1 || l[0].(map[string]any)["id"] != pkID {
		t.Fatalf("list: %v", m)
	}

	// A new browser signs in with the passkey, no identifier: user
	// verification makes it two factors.
	b.jar, _ = newJar()
	login := b.passkeyAssertion(a, "")
	rec, m = b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", login, "", "eu-west")
	wantAPI(t, rec, http.StatusOK, "login finish")
	if m["user_id"] != id || m["session_token"] == nil || m["mfa"] != true || m["method"] != methodPasskeyUV || b.cookie(SessionCookie) == nil {
		t.Fatalf("login answer: %v", m)
	}
	// The same assertion again: refused (the challenge is spent).
	rec, _ = b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", login, "", "eu-west")
	wantAPI(t, rec, http.StatusBadRequest, "assertion replayed")
	if ps, _ := b.db.Passkeys(ctx, id); len(ps) != 1 || ps[0].SignCount != 2 || ps[0].LastUsedAt.IsZero() {
		t.Fatalf("passkey after login: %+v", ps)
	}

	t.Run("refusals", func(t *testing.T) {
		b.jar, _ = newJar()
		finish := func(body string) (*httptest.ResponseRecorder, map[string]any) {
			return b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", body, "", "eu-west")
		}
		// Malformed requests: 400, never a 500.
		for what, body := range map[string]string{
			"not JSON":          `{"state":`,
			"no credential":     `{"state":"x"}`,
			"credential string": `{"state":"x","credential":"abc"}`,
		} {
			rec, _ := finish(body)
			wantAPI(t, rec, http.StatusBadRequest, what)
		}
		for _, cred := range []string{`null`, `{}`, `[]`, `"x"`, `{"id":"AA","rawId":"AA","type":"public-key","response":{}}`,
			`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA"}}`,
			`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`,
			`{"id":"A_-","rawId":"!!","type":"public-key"}`} {
			rec, m := b.api(http.MethodPost, "/passkeys/login/begin", "", "", "eu-west")
			wantAPI(t, rec, http.StatusOK, "begin")
			rec, _ = finish(`{"state":"` + m["state"].(string) + `","credential":` + cred + `}`)
			if rec.Code != http.StatusBadRequest && rec.Code != http.StatusUnauthorized {
				t.Errorf("login with credential %s: HTTP %d %s", cred, rec.Code, rec.Body)
			}
		}
		good := b.passkeyAssertion(a, "")
		var in map[string]any
		json.Unmarshal([]byte(good), &in)
		mangled := func(f func(cred map[string]any)) string {
			var cp map[string]any
			js, _ := json.Marshal(in)
			json.Unmarshal(js, &cp)
			f(cp["credential"].(map[string]any))
			out, _ := json.Marshal(cp)
			return string(out)
		}
		rec, _ := finish(mangled(func(c map[string]any) { c["response"].(map[string]any)["signature"] = "!!!" }))
		wantAPI(t, rec, http.StatusBadRequest, "malformed base64")
		rec, _ = finish(`{"state":"forged","credential":` + string(mustJSON(in["credential"])) + `}`)
		wantAPI(t, rec, http.StatusBadRequest, "forged state")
		// A bad signature: 401, audited.
		rec, _ = finish(mangled(func(c map[string]any) {
			r := c["response"].(map[string]any)
			sig, _ := base64.RawURLEncoding.DecodeString(r["signature"].(string))
			sig[len(sig)-1] ^= 1
			r["signature"] = base64.RawURLEncoding.EncodeToString(sig)
		}))
		wantAPI(t, rec, http.StatusUnauthorized, "bad signature")

		// Signed on another origin (a phishing site): 401.
		rec, m := b.api(http.MethodPost, "/passkeys/login/begin", "", "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "login begin")
		opts, state := options(t, m)
		cred, _ := a.Get("https://id.example.com.evil.example", opts)
		rec, _ = finish(finishBody(t, state, "", cred))
		wantAPI(t, rec, http.StatusUnauthorized, "other origin")

		// The counter went back: refused and audited.
		pk := a.Credentials()[0]
		a.SetSignCount(pk.ID, 0)
		rec, _ = finish(b.passkeyAssertion(a, ""))
		wantAPI(t, rec, http.StatusUnauthorized, "counter regressed")
		a.SetSignCount(pk.ID, 100)

		// Begun with another account's email: that account's passkeys only.
		b.api(http.MethodPost, "/signup", `{"email":"bo@acme.de","password":"`+uiPassword+`"}`, "bo@acme.de", "eu-west")
		rec, _ = finish(b.passkeyAssertion(a, "bo@acme.de"))
		wantAPI(t, rec, http.StatusUnauthorized, "another account's passkey")
		rec, _ = finish(b.passkeyAssertion(a, "nobody@acme.de"))
		wantAPI(t, rec, http.StatusUnauthorized, "an unknown account's passkey")
		// ... and with its own email it works.
		rec, _ = finish(b.passkeyAssertion(a, email))
		wantAPI(t, rec, http.StatusOK, "identifier-bound login")
		// The begin with an email is routed by it.
		rec, _ = b.api(http.MethodPost, "/passkeys/login/begin", `{"email":"`+email+`"}`, "", "eu-west")
		wantAPI(t, rec, http.StatusMisdirectedRequest, "begin with an email not routed by it")

		// A disabled account.
		b.db.SetDisabled(ctx, id, true)
		rec, _ = finish(b.passkeyAssertion(a, ""))
		wantAPI(t, rec, http.StatusUnauthorized, "disabled account")
		b.db.SetDisabled(ctx, id, false)

		actions := strings.Join(auditActions(t, b.db, id), " ")
		for _, want := range []string{"user.passkey_registered", "user.passkey_login ", "user.passkey_login_failed", "user.passkey_counter_regressed"} {
			if !strings.Contains(actions+" ", want) {
				t.Errorf("audit log has no %s: %s", want, actions)
			}
		}
	})

	t.Run("another region's passkey", func(t *testing.T) {
		// An authenticator whose handle names us-east (as if registered
		// there): this region refuses with 421, whatever the hint said.
		other := &passkeytest.Authenticator{UserVerified: true}
		b.jar, _ = newJar()
		b.api(http.MethodPost, "/login", `{"email":"`+email+`","password":"`+uiPassword+`"}`, email, "eu-west")
		rec, m := b.api(http.MethodPost, "/passkeys/register/begin", "", "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "register begin")
		opts, state := options(t, m)
		var raw map[string]any
		json.Unmarshal(opts, &raw)
		h, _ := base64.RawURLEncoding.DecodeString(raw["user"].(map[string]any)["id"].(string))
		raw["user"].(map[string]any)["id"] = base64.RawURLEncoding.EncodeToString(append([]byte("us-east."), h[len("eu-west."):]...))
		cred, err := other.Create(uiOrigin, mustJSON(raw))
		if err != nil {
			t.Fatal(err)
		}
		rec, _ = b.api(http.MethodPost, "/passkeys/register/finish", finishBody(t, state, "", cred), "", "eu-west")
		wantAPI(t, rec, http.StatusCreated, "register")
		b.jar, _ = newJar()
		rec, m = b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", b.passkeyAssertion(other, ""), "", "eu-west")
		wantAPI(t, rec, http.StatusMisdirectedRequest, "another region's user handle")
		if !strings.Contains(m["detail"].(string), "us-east") {
			t.Errorf("421 does not name the region: %v", m)
		}
	})

	t.Run("without user verification TOTP is asked for", func(t *testing.T) {
		noUV := &passkeytest.Authenticator{}
		b.jar, _ = newJar()
		b.api(http.MethodPost, "/login", `{"email":"`+email+`","password":"`+uiPassword+`"}`, email, "eu-west")
		b.registerPasskey(noUV, "Key")
		b.jar, _ = newJar()
		// No second factor yet: the passkey alone opens a session.
		rec, m := b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", b.passkeyAssertion(noUV, ""), "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "login without UV, no TOTP")
		if m["mfa"] != false || m["method"] != methodPasskey {
			t.Fatalf("login without UV: %v", m)
		}
		if err := b.db.SetTOTP(ctx, id, []byte("12345678901234567890")); err != nil {
			t.Fatal(err)
		}
		if err := b.db.UseTOTPStep(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
		b.jar, _ = newJar()
		rec, m = b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", b.passkeyAssertion(noUV, ""), "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "login without UV, TOTP on")
		if m["mfa_required"] != true || m["mfa_token"] == nil || m["session_token"] != nil || b.cookie(SessionCookie) != nil {
			t.Fatalf("login without UV and TOTP on: %v", m)
		}
		// With UV: straight in.
		rec, m = b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", b.passkeyAssertion(a, ""), "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "login with UV, TOTP on")
		if m["session_token"] == nil || m["mfa"] != true {
			t.Fatalf("login with UV and TOTP on: %v", m)
		}
	})

	t.Run("rename, delete, export, admin reset, erasure", func(t *testing.T) {
		b.jar, _ = newJar()
		b.api(http.MethodPost, "/login", `{"email":"bo@acme.de","password":"`+uiPassword+`"}`, "bo@acme.de", "eu-west")
		rec, _ := b.api(http.MethodDelete, "/passkeys/"+pkID, "", "", "eu-west")
		wantAPI(t, rec, http.StatusNotFound, "delete another user's passkey")
		rec, _ = b.api(http.MethodPatch, "/passkeys/"+pkID, `{"name":"mine"}`, "", "eu-west")
		wantAPI(t, rec, http.StatusNotFound, "rename another user's passkey")

		b.jar, _ = newJar()
		// (TOTP is on now: in with the passkey that verifies the user.)
		rec, _ = b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", b.passkeyAssertion(a, ""), "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "passkey login")
		rec, _ = b.api(http.MethodDelete, "/passkeys/a+b=", "", "", "eu-west")
		wantAPI(t, rec, http.StatusBadRequest, "delete with a malformed id")
		rec, m := b.api(http.MethodPatch, "/passkeys/"+pkID, `{"name":"Work laptop"}`, "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "rename")
		if m["name"] != "Work laptop" {
			t.Fatalf("rename: %v", m)
		}
		rec, _ = b.api(http.MethodPatch, "/passkeys/"+pkID, `{"name":"`+strings.Repeat("x", MaxPasskeyName+1)+`"}`, "", "eu-west")
		wantAPI(t, rec, http.StatusBadRequest, "rename too long")

		rec, m = b.api(http.MethodGet, "/account/export", "", "", "eu-west")
		wantAPI(t, rec, http.StatusOK, "export")
		if l, _ := m["passkeys"].([]any); len(l) != 3 {
			t.Fatalf("export passkeys: %v", m["passkeys"])
		}
		rec, _ = b.api(http.MethodDelete, "/passkeys/"+pkID, "", "", "eu-west")
		wantAPI(t, rec, http.StatusNoContent, "delete")
		rec, _ = b.api(http.MethodDelete, "/passkeys/"+pkID, "", "", "eu-west")
		wantAPI(t, rec, http.StatusNotFound, "delete twice")
		// The deleted passkey no longer signs in.
		b.jar, _ = newJar()
		rec, _ = b.api(http.MethodPost, "/passkeys/login/finish?home=eu-west", b.passkeyAssertion(a, ""), "", "eu-west")
		wantAPI(t, rec, http.StatusUnauthorized, "deleted passkey")

		// The admin's MFA reset removes the rest.
		rec, _ = b.api(http.MethodDelete, "/admin/v1/users/"+id+"/mfa", "", "", "eu-west", "Authorization", "Bearer "+uiAdminToken)
		wantAPI(t, rec, http.StatusNoContent, "admin reset")
		if ps, _ := b.db.Passkeys(ctx, id); len(ps) != 0 {
			t.Fatalf("passkeys after the admin's reset: %d", len(ps))
		}
		if _, err := b.db.TOTP(ctx, id); err == nil {
			t.Fatal("TOTP after the admin's reset")
		}

		// Erasure takes passkeys with it.
		b.api(http.MethodPost, "/login", `{"email":"`+email+`","password":"`+uiPassword+`"}`, email, "eu-west")
		b.registerPasskey(&passkeytest.Authenticator{UserVerified: true}, "")
		rec, _ = b.api(http.MethodDelete, "/account", "", "", "eu-west")
		wantAPI(t, rec, http.StatusNoContent, "delete account")
		if ps, _ := b.db.Passkeys(ctx, id); len(ps) != 0 {
			t.Fatalf("passkeys after erasure: %d", len(ps))
		}
	})
}

func mustJSON(v any) []byte {
	js, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return js
}

// pageForm is the form of a page whose data-passkey is kind, with its
// action, begin URL, email and hidden fields.
func pageForm(t *testing.T, body, kind string) (action, begin, email string, fields url.Values) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for f := range nodes(doc, "form") {
		if attr(f, "data-passkey") != kind {
			continue
		}
		fields = url.Values{}
		for in := range nodes(f, "input") {
			if attr(in, "type") == "hidden" {
				fields.Set(attr(in, "name"), attr(in, "value"))
			}
		}
		return attr(f, "action"), attr(f, "data-begin"), attr(f, "data-email"), fields
	}
	t.Fatalf("no passkey form %q in\n%s", kind, body)
	return
}

// TestPasskeyPages: the passkey page (add, list, remove), "Sign in with a
// passkey" on the login page, as the page's script drives them; the
// script and the pages pass the page checks.
func TestPasskeyPages(t *testing.T) {
	b := newUIBrowser(t)
	ctx := context.Background()
	const email = "cy@acme.de"
	a := &passkeytest.Authenticator{UserVerified: true}
	signup := b.get("/ui/signup")
	want(t, b.submit(signup, "/ui/signup", url.Values{"email": {email}, "password": {uiPassword}}), http.StatusOK, "sign-up")
	want(t, b.loginSteps(email, uiPassword), http.StatusSeeOther, "login")

	js := b.get("/ui/static/passkey.js")
	want(t, js, http.StatusOK, "script")
	if !strings.HasPrefix(js.Header().Get("Content-Type"), "text/javascript") || !strings.Contains(js.Body.String(), "navigator.credentials.create") {
		t.Fatalf("script: %q", js.Header().Get("Content-Type"))
	}

	account := b.get("/ui/account")
	checkPage(t, account, "account page")
	if !strings.Contains(account.Body.String(), `href="/ui/account/passkeys"`) {
		t.Fatal("the account page does not link to the passkey page")
	}
	page := b.get("/ui/account/passkeys")
	want(t, page, http.StatusOK, "passkey page")
	checkPage(t, page, "passkey page")
	if !strings.Contains(page.Body.String(), `<script src="/ui/static/passkey.js" defer></script>`) {
		t.Fatal("passkey page without the script")
	}
	action, beginURL, _, fields := pageForm(t, page.Body.String(), "register")

	// The form without a credential (no script): the page says why.
	fields.Set("name", "Phone")
	rec := b.do(http.MethodPost, action, fields)
	want(t, rec, http.StatusBadRequest, "add without a credential")
	checkPage(t, rec, "add without a credential")
	if !strings.Contains(rec.Body.String(), "JavaScript") {
		t.Errorf("no word of JavaScript:\n%s", rec.Body)
	}
	// The script's begin: CSRF-protected like every form.
	rec = b.do(http.MethodPost, beginURL, url.Values{"csrf": {"forged"}}, "Accept", "application/json")
	wantAPI(t, rec, http.StatusForbidden, "begin without a valid token")
	rec = b.do(http.MethodPost, beginURL, url.Values{"csrf": {fields.Get("csrf")}}, "Accept", "application/json")
	want(t, rec, http.StatusOK, "register begin")
	var m map[string]any
	json.Unmarshal(rec.Body.Bytes(), &m)
	opts, state := options(t, m)
	cred, err := a.Create(uiOrigin, opts)
	if err != nil {
		t.Fatal(err)
	}
	fields.Set("state", state)
	fields.Set("credential", string(cred))
	rec = b.do(http.MethodPost, action, fields)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/account/passkeys?saved=added" {
		t.Fatalf("add: %d %q\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	page = b.get("/ui/account/passkeys?saved=added")
	checkPage(t, page, "passkey page with one")
	if !strings.Contains(page.Body.String(), "Phone") || !strings.Contains(page.Body.String(), `role="status"`) {
		t.Fatalf("passkey page after adding:\n%s", page.Body)
	}
	// Sent again: refused, shown on the page.
	rec = b.do(http.MethodPost, action, fields)
	want(t, rec, http.StatusBadRequest, "add replayed")
	checkPage(t, rec, "add replayed")

	// Sign out; the login page offers the passkey.
	want(t, b.submit(b.get("/ui/account"), "/ui/logout", nil), http.StatusSeeOther, "logout")
	login := b.get("/ui/login")
	checkPage(t, login, "login page")
	action, beginURL, dataEmail, fields := pageForm(t, login.Body.String(), "login")
	if action != "/ui/login/passkey" || dataEmail != "" {
		t.Fatalf("login passkey form: %q %q", action, dataEmail)
	}
	// From another site: refused like every form.
	rec = b.do(http.MethodPost, action+"?home=eu-west", fields, "Origin", "https://evil.example")
	want(t, rec, http.StatusForbidden, "passkey login from another origin")
	rec = b.do(http.MethodPost, beginURL, url.Values{"csrf": {fields.Get("csrf")}}, "Accept", "application/json", "Origin", "https://evil.example")
	wantAPI(t, rec, http.StatusForbidden, "passkey login begin from another origin")
	// Without a credential: the login page again, saying why.
	rec = b.do(http.MethodPost, action, fields)
	want(t, rec, http.StatusBadRequest, "passkey login without a credential")
	checkPage(t, rec, "passkey login without a credential")

	loginWith := func(beginFields url.Values) *httptest.ResponseRecorder {
		t.Helper()
		rec := b.do(http.MethodPost, beginURL, beginFields, "Accept", "application/json")
		want(t, rec, http.StatusOK, "login begin")
		var m map[string]any
		json.Unmarshal(rec.Body.Bytes(), &m)
		opts, state := options(t, m)
		cred, err := a.Get(uiOrigin, opts)
		if err != nil {
			t.Fatal(err)
		}
		f := url.Values{"csrf": {fields.Get("csrf")}, "state": {state}, "credential": {string(cred)}}
		// As the script does: to the home region the user handle names.
		return b.do(http.MethodPost, action+"?home=eu-west", f)
	}
	rec = loginWith(url.Values{"csrf": {fields.Get("csrf")}})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/account" || b.cookie(SessionCookie) == nil {
		t.Fatalf("passkey login: %d %q\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	want(t, b.submit(b.get("/ui/account"), "/ui/logout", nil), http.StatusSeeOther, "logout")

	// After the identifier: the password step offers the passkey too,
	// bound to that email (for any address: it reveals nothing).
	step2 := b.submit(b.get("/ui/login"), "/ui/login", url.Values{"email": {email}})
	checkPage(t, step2, "login step 2")
	_, _, dataEmail, fields2 := pageForm(t, step2.Body.String(), "login")
	if dataEmail != email {
		t.Fatalf("password step's passkey form bound to %q", dataEmail)
	}
	rec = loginWith(url.Values{"csrf": {fields2.Get("csrf")}, "email": {dataEmail}})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/account" {
		t.Fatalf("identifier-bound passkey login: %d\n%s", rec.Code, rec.Body)
	}
	// A failed one: the login page with the error.
	want(t, b.submit(b.get("/ui/account"), "/ui/logout", nil), http.StatusSeeOther, "logout")
	rec = loginWith(url.Values{"csrf": {fields.Get("csrf")}, "email": {"other@acme.de"}})
	want(t, rec, http.StatusUnauthorized, "passkey of another account")
	checkPage(t, rec, "passkey of another account")

	// Remove it from the passkey page.
	want(t, b.loginSteps(email, uiPassword), http.StatusSeeOther, "login")
	page = b.get("/ui/account/passkeys")
	rec = b.submit(page, "/ui/account/passkeys/remove", nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/account/passkeys?saved=removed" {
		t.Fatalf("remove: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	rec = b.submit(page, "/ui/account/passkeys/remove", nil)
	want(t, rec, http.StatusNotFound, "remove twice")
	checkPage(t, rec, "remove twice")
	u, _ := b.db.UserByEmail(ctx, email)
	if ps, _ := b.db.Passkeys(ctx, u.ID); len(ps) != 0 {
		t.Fatalf("passkeys after removal: %d", len(ps))
	}
}

func newJar() (*cookiejar.Jar, error) { return cookiejar.New(nil) }
