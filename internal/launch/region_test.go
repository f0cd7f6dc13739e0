package launch

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/region"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

func testSecrets() *Secrets {
	return &Secrets{IndexKey: []byte(strings.Repeat("i", 32)), InternalToken: "internal", AdminToken: "admin", RouteKey: []byte(strings.Repeat("r", 32))}
}

func regionConfig(t *testing.T) RegionConfig {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return RegionConfig{
		Name: "eu-west", Database: store.Config{Driver: "sqlite", DSN: filepath.Join(dir, "r.db")},
		SessionKeyFile: filepath.Join(dir, "session-key.json"), MasterKeyFile: filepath.Join(dir, "master.key"),
		PublicURL: "http://127.0.0.1:9", Index: []string{"http://127.0.0.1:9"}, SecretsValue: testSecrets(),
		Outbox: mail.NewOutbox(0, nil), HTTPListener: ln, Logger: slog.New(slog.DiscardHandler),
		Argon2: &region.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1},
	}
}

// TestStartRegionOIDC: with oidc_key_file the region serves its OpenID
// keys (the file is made on first start, mode 0600, and read again on the
// next), and a declared client works at the token endpoint.
func TestStartRegionOIDC(t *testing.T) {
	cfg := regionConfig(t)
	cfg.OIDCKeyFile = filepath.Join(t.TempDir(), "oidc-keys.json")
	cfg.OIDCClients = []OIDCClientConfig{{ID: "demo", Secret: "demo-secret", RedirectURIs: []string{"http://127.0.0.1:9999/callback"},
		GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"}}}
	r, err := StartRegion(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	resp, err := http.Get(r.URL() + "/internal/oidc-keys")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	keys, err := session.ParseJWKS(body)
	if resp.StatusCode != http.StatusOK || err != nil || len(keys) != 1 || keys[0].KID != "eu-west-1" {
		t.Fatalf("/internal/oidc-keys: HTTP %d %s %v", resp.StatusCode, body, err)
	}
	if st, err := os.Stat(cfg.OIDCKeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	if r.Server.OIDC() == nil {
		t.Fatal("no OpenID Provider")
	}
	// The declared client gets a token, through a (test) router.
	signer, err := routesig.NewSigner(cfg.SecretsValue.RouteKey, "test-router")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, r.URL()+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo", "demo-secret")
	req.Header.Set(routesig.Header, string(signer.AppendHeader(nil, http.MethodPost, "/oauth2/token", "eu-west", time.Now())))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"access_token"`) {
		t.Fatalf("client credentials of the declared client: HTTP %d %s", resp.StatusCode, body)
	}
}

func TestStartRegionOIDCConfigErrors(t *testing.T) {
	for name, c := range map[string]struct {
		mod  func(*RegionConfig)
		want string
	}{
		"clients without keys": {func(c *RegionConfig) { c.OIDCClients = []OIDCClientConfig{{ID: "demo"}} }, "oidc_clients"},
		"bad client": {func(c *RegionConfig) {
			c.OIDCKeyFile = filepath.Join(t.TempDir(), "k.json")
			c.OIDCClients = []OIDCClientConfig{{ID: "demo", RedirectURIs: []string{"http://evil.example.com/cb"}}}
		}, "oidc_clients"},
		"rotation too often": {func(c *RegionConfig) {
			c.OIDCKeyFile = filepath.Join(t.TempDir(), "k.json")
			c.OIDCKeyRotation = time.Minute
		}, "oidc_key_rotation"},
		"key file of another region": {func(c *RegionConfig) {
			p := filepath.Join(t.TempDir(), "k.json")
			os.WriteFile(p, []byte(`{"region":"us-east","keys":[]}`), 0o600)
			c.OIDCKeyFile = p
		}, "oidc_key_file"},
	} {
		cfg := regionConfig(t)
		c.mod(&cfg)
		r, err := StartRegion(context.Background(), cfg)
		if err == nil {
			r.Shutdown(context.Background())
			t.Errorf("%s: started", name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", name, err, c.want)
		}
	}
}
