package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/domicile/domicile/internal/devcluster"
	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/router"
)

// startDomicile starts the dev topology (three regions, three routers, the
// home index) on PostgreSQL (a fresh database per region) and Redis, and
// registers a client_credentials client through the admin API of one
// region (the registry replicates it to all). The measurements go through
// router-1, whose local region (eu-west) issues the tokens.
func startDomicile(ctx context.Context, pgURL, redisURL, dir string) (target, error) {
	dsns := map[string]string{}
	for _, name := range []string{"eu-west", "us-east", "ap-southeast"} {
		dsn, err := recreateDB(ctx, pgURL, "domicile_bench_"+strings.ReplaceAll(name, "-", "_"))
		if err != nil {
			return target{}, err
		}
		dsns[name] = dsn
	}
	ru, err := url.Parse(redisURL)
	if err != nil {
		return target{}, fmt.Errorf("-redis: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := devcluster.Start(sctx, devcluster.Config{
		DataDir:  filepath.Join(dir, "domicile"),
		Database: func(region string) store.Config { return store.Config{Driver: "postgres", DSN: dsns[region]} },
		Sessions: launch.SessionsConfig{Store: "redis", Redis: ru.Host, Prefix: fmt.Sprintf("bench-oidc-%d:", time.Now().UnixNano())},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		// One client from one address at full speed: the per-address
		// limit on /oauth2/token is off here (Hydra has none).
		RateLimits: launch.RateLimitConfig{PerIP: router.Limit{Rate: -1}, PerIdentifier: router.Limit{Rate: -1}},
	})
	if err != nil {
		return target{}, err
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c.Shutdown(sctx)
	}
	id, secret, err := registerClient(ctx, c.Regions["us-east"].URL(), c.Secrets.AdminToken)
	if err != nil {
		stop()
		return target{}, err
	}
	router := c.RouterURLs()[0]
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
	// The registry is replicated through the index: wait for router-1's
	// region to see the client.
	var tok string
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tok, err = clientCredentials(ctx, router+"/oauth2/token", basic); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		stop()
		return target{}, err
	}
	return target{
		name:             "Domicile (through router-1)",
		tokenURL:         router + "/oauth2/token",
		basicAuth:        basic,
		introspectURL:    router + "/oauth2/introspect",
		introspectAuth:   basic, // RFC 7662: the caller authenticates as a client
		introspectSample: tok,
		stop:             stop,
	}, nil
}

// registerClient registers a confidential client_credentials client with
// a region's admin API and returns its id and secret.
func registerClient(ctx context.Context, regionURL, adminToken string) (id, secret string, err error) {
	body, _ := json.Marshal(map[string]any{
		"client_name": "bench", "grant_types": []string{"client_credentials"}, "scopes": []string{"openid"},
		"token_endpoint_auth_method": "client_secret_basic", "redirect_uris": []string{},
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, regionURL+"/admin/v1/clients", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var d struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(raw, &d) != nil || d.ID == "" || d.Secret == "" {
		return "", "", fmt.Errorf("register a client: HTTP %d: %s", resp.StatusCode, raw)
	}
	return d.ID, d.Secret, nil
}
