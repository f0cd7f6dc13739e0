package devcluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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
// give and withdraw a consent. Screenshots of each page go to
// $DOMICILE_TEST_ARTIFACTS (default: the test's temp dir, logged).
func TestBrowser(t *testing.T) {
	exe := chromium(t)
	c := startCluster(t)
	r := c.RouterURLs()
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
