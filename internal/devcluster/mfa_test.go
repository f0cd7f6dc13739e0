package devcluster

import (
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// TestTOTP: enrol, confirm, log in with a code (once only), and with a
// recovery code (once only), all through the routers.
func TestTOTP(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	const creds = `{"email":"ana@acme.de","password":"correct horse battery"}`
	if code, m := do(t, browser, "POST", r[0]+"/signup", creds); code != 201 {
		t.Fatalf("sign-up: %d %v", code, m)
	}
	if code, m := do(t, browser, "POST", r[0]+"/login", creds); code != 200 || m["session_token"] == nil {
		t.Fatalf("login: %d %v", code, m)
	}
	code, enrol := do(t, browser, "POST", r[1]+"/account/mfa/totp", "")
	secret, _ := enrol["secret"].(string)
	if code != 200 || secret == "" || !strings.HasPrefix(enrol["otpauth_url"].(string), "otpauth://totp/") {
		t.Fatalf("enrol: %d %v", code, enrol)
	}
	gen := func(at time.Time) string {
		s, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if code, _ := do(t, browser, "POST", r[1]+"/account/mfa/totp/confirm", `{"code":"000000"}`); code != 400 {
		t.Fatalf("confirm with a wrong code: %d", code)
	}
	now := time.Now()
	code, conf := do(t, browser, "POST", r[1]+"/account/mfa/totp/confirm", `{"code":"`+gen(now)+`"}`)
	codes, _ := conf["recovery_codes"].([]any)
	if code != 200 || len(codes) != 10 {
		t.Fatalf("confirm: %d %v", code, conf)
	}

	// The password alone no longer opens a session.
	hc := &http.Client{Timeout: 10 * time.Second}
	code, first := do(t, hc, "POST", r[2]+"/login", creds)
	if code != 200 || first["mfa_required"] != true || first["session_token"] != nil {
		t.Fatalf("login with TOTP on: %d %v", code, first)
	}
	next := r[2] + first["next"].(string)
	// The code of the step used to confirm is spent: refused.
	if code, _ := do(t, hc, "POST", next, `{"mfa_token":"`+first["mfa_token"].(string)+`","code":"`+gen(now)+`"}`); code != 401 {
		t.Fatalf("reused TOTP step: %d", code)
	}
	// A fresh password step, the current code: in.
	_, second := do(t, hc, "POST", r[2]+"/login", creds)
	// (The next step's code: within the accepted skew whether or not the
	// clock has moved on since now.)
	code, sess := do(t, hc, "POST", next, `{"mfa_token":"`+second["mfa_token"].(string)+`","code":"`+gen(now.Add(30*time.Second))+`"}`)
	if code != 200 || sess["session_token"] == nil || sess["mfa"] != true {
		t.Fatalf("second factor: %d %v", code, sess)
	}
	// The mfa token was single use.
	if code, _ := do(t, hc, "POST", next, `{"mfa_token":"`+second["mfa_token"].(string)+`","code":"`+gen(now.Add(30*time.Second))+`"}`); code != 400 {
		t.Fatalf("mfa token reused: %d", code)
	}
	// A recovery code works once.
	rc := codes[0].(string)
	_, third := do(t, hc, "POST", r[0]+"/login", creds)
	if code, m := do(t, hc, "POST", r[0]+first["next"].(string), `{"mfa_token":"`+third["mfa_token"].(string)+`","recovery_code":"`+strings.ToUpper(rc)+`"}`); code != 200 {
		t.Fatalf("recovery code: %d %v", code, m)
	}
	_, fourth := do(t, hc, "POST", r[0]+"/login", creds)
	if code, _ := do(t, hc, "POST", r[0]+first["next"].(string), `{"mfa_token":"`+fourth["mfa_token"].(string)+`","recovery_code":"`+rc+`"}`); code != 401 {
		t.Fatalf("recovery code reused: %d", code)
	}
}

// TestConsent: grant, withdraw, the derived state, the history, and a
// stale version refused.
func TestConsent(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	const creds = `{"email":"ana@acme.de","password":"correct horse battery"}`
	do(t, browser, "POST", r[0]+"/signup", creds)
	if code, _ := do(t, browser, "POST", r[0]+"/login", creds); code != 200 {
		t.Fatalf("login: %d", code)
	}
	state := func() map[string]any {
		code, m := do(t, browser, "GET", r[1]+"/account/consent", "")
		if code != 200 {
			t.Fatalf("consent: %d %v", code, m)
		}
		out := map[string]any{}
		for _, p := range m["purposes"].([]any) {
			p := p.(map[string]any)
			out[p["name"].(string)] = p["granted"]
		}
		return out
	}
	if s := state(); s["marketing"] != false || s["analytics"] != false {
		t.Fatalf("initial state: %v", s)
	}
	if code, _ := do(t, browser, "POST", r[2]+"/account/consent", `{"purpose":"marketing","version":1,"granted":true}`); code != 200 {
		t.Fatalf("grant: %d", code)
	}
	if s := state(); s["marketing"] != true {
		t.Fatalf("after grant: %v", s)
	}
	if code, _ := do(t, browser, "POST", r[2]+"/account/consent", `{"purpose":"marketing","version":1,"granted":false}`); code != 200 {
		t.Fatalf("withdraw: %d", code)
	}
	if s := state(); s["marketing"] != false {
		t.Fatalf("after withdrawal: %v", s)
	}
	if code, _ := do(t, browser, "POST", r[2]+"/account/consent", `{"purpose":"marketing","version":0,"granted":true}`); code != 409 {
		t.Fatalf("stale version: %d", code)
	}
	if code, _ := do(t, browser, "POST", r[2]+"/account/consent", `{"purpose":"telepathy","version":1,"granted":true}`); code != 400 {
		t.Fatalf("unknown purpose: %d", code)
	}
	code, h := do(t, browser, "GET", r[0]+"/account/consent/history", "")
	if hist, _ := h["history"].([]any); code != 200 || len(hist) != 2 {
		t.Fatalf("history: %d %v", code, h)
	}
}
