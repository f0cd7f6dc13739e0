package devcluster

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/router"
)

// BenchmarkOIDCAuthCodeFlow measures the authorization-code flow end to
// end through router-1, as a relying party sees it for a user with a live
// session: the authorization request (PKCE S256) answered with a code, the
// code exchanged for tokens at the token endpoint, the ID token verified
// against the global JWKS. One op is one whole flow; flows/s is reported.
//
//	go test -run '^$' -bench OIDCAuthCodeFlow -benchtime 5s ./internal/devcluster/
func BenchmarkOIDCAuthCodeFlow(b *testing.B) {
	b.Run("sqlite+memory", func(b *testing.B) { benchAuthCodeFlow(b, Config{}) })
	b.Run("postgres+redis", func(b *testing.B) {
		dsns := map[string]string{}
		for _, name := range []string{"eu-west", "us-east", "ap-southeast"} {
			dsns[name] = testenv.PostgresDSN(b)
		}
		benchAuthCodeFlow(b, Config{
			Database: func(region string) store.Config { return store.Config{Driver: "postgres", DSN: dsns[region]} },
			Sessions: launch.SessionsConfig{Store: "redis", Redis: testenv.RedisAddr(b), Prefix: testenv.RedisPrefix(b)},
		})
	})
}

func benchAuthCodeFlow(b *testing.B, cfg Config) {
	// One relying party from one address: the per-address limit of the
	// token endpoint would stop it.
	cfg.RateLimits = launch.RateLimitConfig{PerIP: router.Limit{Rate: -1}, PerIdentifier: router.Limit{Rate: -1}}
	c := startClusterWith(b, cfg)
	r := c.RouterURLs()
	ctx := context.Background()
	browser := browserClient()
	creds := `{"email":"ana@acme.de","password":"correct horse battery"}`
	for _, p := range []string{"/signup", "/login"} {
		resp, err := browser.Post(r[0]+p, "application/json", strings.NewReader(creds))
		if err != nil || resp.StatusCode/100 != 2 {
			b.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	provider, err := oidc.NewProvider(ctx, r[0])
	if err != nil {
		b.Fatal(err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: DemoClient.ID})
	oc := oauth2.Config{ClientID: DemoClient.ID, ClientSecret: DemoClient.Secret, Endpoint: provider.Endpoint(),
		RedirectURL: rpRedirect, Scopes: []string{oidc.ScopeOpenID}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		pkce := oauth2.GenerateVerifier()
		resp, err := browser.Get(oc.AuthCodeURL("s", oauth2.S256ChallengeOption(pkce)))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			b.Fatalf("authorize: HTTP %d", resp.StatusCode)
		}
		form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {rpRedirect}, "code_verifier": {pkce}}
		req, _ := http.NewRequest(http.MethodPost, provider.Endpoint().TokenURL, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(DemoClient.ID, DemoClient.Secret)
		tr, err := browser.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var tok struct {
			IDToken string `json:"id_token"`
		}
		json.NewDecoder(tr.Body).Decode(&tok)
		tr.Body.Close()
		if tr.StatusCode != 200 {
			b.Fatalf("token: HTTP %d", tr.StatusCode)
		}
		if _, err := verifier.Verify(ctx, tok.IDToken); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}
