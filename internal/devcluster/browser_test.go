package devcluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// chromium returns the path of a Chromium to drive, or skips (fails in CI,
// whose .ci/run installs it).
func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (apt-get install chromium); CI must run the browser test")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// TestBrowser drives headless Chromium through the hosted pages, via the
// routers: sign up, verify the email from the dev outbox, log in
// (identifier first), enrol TOTP, log out, log in again with a TOTP code,
// add a passkey (a virtual authenticator of Chrome's WebAuthn domain, with
// user verification), log out, sign in with the passkey alone (no
// identifier; user verification stands for the TOTP step), give and
// withdraw a consent. Screenshots of each page go to
// $DOMICILE_TEST_ARTIFACTS (default: the test's temp dir, logged).
func TestBrowser(t *testing.T) {
	exe := chromium(t)
	c := startCluster(t)
	// The pages are opened on localhost: browsers refuse passkeys on an IP
	// address (and on plain http anywhere but localhost).
	r := c.RouterURLs()
	for i := range r {
		r[i] = localhostOrigin(t, r[i])
	}
	artifacts := os.Getenv("DOMICILE_TEST_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	}
	artifacts = filepath.Join(artifacts, "browser")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1000, 1200),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first run starts the browser and must not have a deadline; every
	// later step gets one, so a hung page fails the test instead of CI.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// A platform authenticator that keeps discoverable credentials and
	// verifies the user (as a fingerprint reader would), answering at once.
	var authenticator webauthn.AuthenticatorID
	if err := chromedp.Do(browser, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		res, err := cdp.Call(ctx, tg, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol:                    webauthn.AuthenticatorProtocolCtap2,
				Ctap2version:                webauthn.Ctap2versionCtap21,
				Transport:                   webauthn.AuthenticatorTransportInternal,
				HasResidentKey:              true,
				HasUserVerification:         true,
				IsUserVerified:              true,
				AutomaticPresenceSimulation: true,
			},
		})
		authenticator = res.AuthenticatorID
		return err
	})); err != nil {
		t.Fatalf("virtual authenticator: %v", err)
	}

	shot := 0
	snap := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			png, err := chromedp.FullScreenshot(100)(ctx, tg) // 100: PNG
			if err != nil {
				return chromedp.Void{}, err
			}
			shot++
			return chromedp.Void{}, os.WriteFile(filepath.Join(artifacts, twoDigits(shot)+"-"+name+".png"), png, 0o644)
		}
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	const email, pw = "ana@acme.de", "correct horse battery"

	run("sign-up",
		chromedp.Navigate(r[0]+"/ui/signup"),
		chromedp.WaitVisible(chromedp.CSS(`#email`)),
		snap("signup"),
		chromedp.SendKeys(chromedp.CSS(`#email`), email),
		chromedp.SendKeys(chromedp.CSS(`#password`), pw),
		chromedp.Submit(chromedp.CSS(`form[action="/ui/signup"]`)),
		chromedp.WaitVisible(chromedp.CSS(`main`)),
		snap("signed-up"),
	)
	link := mailedLink(t, c, "eu-west", email)
	if link.Path != "/ui/verify-email" {
		t.Fatalf("verification link %s", link)
	}
	run("verify", chromedp.Navigate(link.String()), chromedp.WaitVisible(chromedp.CSS(`main`)), snap("verified"))
	body := text(`main`)
	if !strings.Contains(strings.ToLower(body), "confirmed") && !strings.Contains(strings.ToLower(body), "verified") {
		t.Fatalf("verification page: %q", body)
	}

	login := func(code func() string) {
		t.Helper()
		run("login: identifier",
			chromedp.Navigate(r[1]+"/ui/login"),
			chromedp.WaitVisible(chromedp.CSS(`#email`)),
			snap("login-identifier"),
			chromedp.SendKeys(chromedp.CSS(`#email`), email),
			chromedp.Submit(chromedp.CSS(`#email`)),
			chromedp.WaitVisible(chromedp.CSS(`#password`)),
			snap("login-password"),
			chromedp.SendKeys(chromedp.CSS(`#password`), pw),
			chromedp.Submit(chromedp.CSS(`#password`)),
		)
		if code != nil {
			run("login: second factor",
				chromedp.WaitVisible(chromedp.CSS(`#code`)),
				snap("login-totp"),
				chromedp.SendKeys(chromedp.CSS(`#code`), code()),
				chromedp.Submit(chromedp.CSS(`#code`)),
			)
		}
		run("account page", chromedp.WaitVisible(chromedp.CSS(`#mfa-h`)), snap("account"))
		body := text(`main`)
		if !strings.Contains(body, email) {
			t.Fatalf("account page does not show the email: %q", body)
		}
	}
	login(nil)

	run("enrol TOTP",
		chromedp.Submit(chromedp.CSS(`form[action="/ui/account/mfa/totp"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#secret`)),
		snap("totp-enrol"),
	)
	secret := strings.Join(strings.Fields(text(`#secret`)), "")
	gen := func(at time.Time) string {
		code, err := totp.GenerateCodeCustom(strings.TrimSpace(secret), at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	now := time.Now()
	run("type the TOTP code", chromedp.SendKeys(chromedp.CSS(`#code`), gen(now)), snap("totp-code-typed"))
	run("confirm TOTP",
		chromedp.Submit(chromedp.CSS(`#code`)),
		chromedp.WaitVisible(chromedp.CSS(`main`)),
		snap("recovery-codes"),
	)
	body = text(`main`)
	if !strings.Contains(strings.ToLower(body), "recovery") {
		t.Fatalf("after confirming TOTP: %q", body)
	}
	run("sign out",
		chromedp.Navigate(r[2]+"/ui/account"),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/ui/logout"]`)),
		chromedp.Submit(chromedp.CSS(`form[action="/ui/logout"]`)),
		chromedp.WaitVisible(chromedp.CSS(`main`)),
		snap("signed-out"),
	)
	// The step used to confirm is spent: the next one (within the skew).
	login(func() string { return gen(now.Add(30 * time.Second)) })

	// A passkey, from the account page, with the keyboard only.
	run("passkey page",
		chromedp.Focus(chromedp.CSS(`#manage-passkeys`)),
		chromedp.SendKeys(chromedp.CSS(`#manage-passkeys`), kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`#passkey-add`)),
		snap("passkeys-none"),
		chromedp.SendKeys(chromedp.CSS(`#passkey-name`), "Test laptop"),
		snap("passkey-named"),
		chromedp.SendKeys(chromedp.CSS(`#passkey-name`), kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`.passkeys li`)),
		snap("passkey-added"),
	)
	body = text(`main`)
	if !strings.Contains(body, "Test laptop") || !strings.Contains(body, "has been added") {
		t.Fatalf("passkey page after adding: %q", body)
	}
	creds, err := chromedp.Call(browser, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: authenticator})
	if err != nil || len(creds.Credentials) != 1 || !creds.Credentials[0].IsResidentCredential || !strings.HasPrefix(string(creds.Credentials[0].UserHandle), "eu-west.") {
		t.Fatalf("virtual authenticator's credentials: %+v %v", creds, err)
	}
	run("sign out before the passkey",
		chromedp.Navigate(r[0]+"/ui/account"),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/ui/logout"]`)),
		chromedp.Submit(chromedp.CSS(`form[action="/ui/logout"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#passkey-signin`)),
	)
	// Passwordless: no identifier typed; the user verification of the
	// passkey stands for the TOTP step.
	run("sign in with the passkey",
		chromedp.Navigate(r[2]+"/ui/login"),
		chromedp.WaitVisible(chromedp.CSS(`#passkey-signin`)),
		snap("login-passkey"),
		chromedp.Focus(chromedp.CSS(`#passkey-signin`)),
		chromedp.SendKeys(chromedp.CSS(`#passkey-signin`), kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`#passkeys-h`)),
		snap("account-by-passkey"),
	)
	body = text(`main`)
	if !strings.Contains(body, email) || !strings.Contains(body, "You have 1 passkey.") {
		t.Fatalf("account page after the passkey: %q", body)
	}
	u, err := c.Regions["eu-west"].Store.UserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	if ps, err := c.Regions["eu-west"].Store.Passkeys(context.Background(), u.ID); err != nil || len(ps) != 1 || ps[0].Name != "Test laptop" || ps[0].LastUsedAt.IsZero() {
		t.Fatalf("stored passkeys: %+v %v", ps, err)
	}

	run("give consent",
		chromedp.Submit(chromedp.CSS(`form[action="/ui/account/consent"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#consent-h`)),
		snap("consent-given"),
	)
	body = text(`.purposes`)
	if !strings.Contains(body, "You have given consent.") {
		t.Fatalf("after giving consent: %q", body)
	}
	run("withdraw consent",
		chromedp.Submit(chromedp.CSS(`form[action="/ui/account/consent"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#consent-h`)),
		snap("consent-withdrawn"),
	)
	body = text(`.purposes`)
	if strings.Contains(body, "You have given consent.") {
		t.Fatalf("after withdrawing consent: %q", body)
	}
	hist, err := c.Regions["eu-west"].Store.UserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := c.Regions["eu-west"].Store.ConsentHistory(context.Background(), hist.ID)
	if err != nil || len(recs) != 2 || !recs[0].Granted || recs[1].Granted {
		t.Fatalf("consent log: %+v %v", recs, err)
	}
	t.Logf("%d screenshots in %s", shot, artifacts)
}

func twoDigits(n int) string {
	if n < 10 {
		return "0" + string(rune('0'+n))
	}
	return string(rune('0'+n/10)) + string(rune('0'+n%10))
}
