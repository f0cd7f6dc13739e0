package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Ory Hydra v2.3.0, as ../shared/peers/peers.sh builds it and runs it:
// `hydra serve all --dev` on PostgreSQL, public port 4444, admin port 4445.
const (
	hydraPublic = "http://127.0.0.1:4444"
	hydraAdmin  = "http://127.0.0.1:4445"
)

// hydra is a running Hydra with one client_credentials client.
type hydra struct {
	cmd          *exec.Cmd
	clientID     string
	clientSecret string
	dir          string
}

// startHydra creates a fresh database, migrates it, starts Hydra and
// registers a client.
func startHydra(ctx context.Context, bin, pgURL, dir string) (*hydra, error) {
	dsn, err := recreateDB(ctx, pgURL, "hydra_bench")
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "DSN="+dsn)
	mig := exec.CommandContext(ctx, bin, "migrate", "sql", "-e", "--yes")
	mig.Env = env
	if out, err := mig.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("hydra migrate: %v: %s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "hydra.log"))
	if err != nil {
		return nil, err
	}
	h := &hydra{cmd: exec.Command(bin, "serve", "all", "--dev"), dir: dir}
	h.cmd.Env = append(env, "SECRETS_SYSTEM=0123456789abcdef0123456789abcdef", "URLS_SELF_ISSUER="+hydraPublic, "LOG_LEVEL=error")
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, hydraAdmin+"/health/ready", 60*time.Second); err != nil {
		h.stop()
		return nil, fmt.Errorf("hydra did not become ready: %w (log in %s)", err, logf.Name())
	}
	create := exec.CommandContext(ctx, bin, "create", "oauth2-client", "--endpoint", hydraAdmin,
		"--grant-type", "client_credentials", "--name", "bench", "--secret", "benchsecret-0123456789", "--format", "json")
	out, err := create.Output()
	if err != nil {
		h.stop()
		return nil, fmt.Errorf("hydra create oauth2-client: %w", err)
	}
	var c struct {
		ID string `json:"client_id"`
	}
	if err := json.Unmarshal(out, &c); err != nil || c.ID == "" {
		h.stop()
		return nil, fmt.Errorf("hydra create oauth2-client: %q: %v", out, err)
	}
	h.clientID, h.clientSecret = c.ID, "benchsecret-0123456789"
	return h, nil
}

func (h *hydra) stop() {
	if h.cmd.Process != nil {
		h.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { h.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			h.cmd.Process.Kill()
			<-done
		}
	}
}

// target returns Hydra's side of the measurements.
func (h *hydra) target(ctx context.Context) (target, error) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(h.clientID)+":"+url.QueryEscape(h.clientSecret)))
	tok, err := clientCredentials(ctx, hydraPublic+"/oauth2/token", basic)
	if err != nil {
		return target{}, err
	}
	return target{
		name:             "Ory Hydra v2.3.0",
		tokenURL:         hydraPublic + "/oauth2/token",
		basicAuth:        basic,
		introspectURL:    hydraAdmin + "/admin/oauth2/introspect",
		introspectAuth:   "", // Hydra's admin port has no authentication of its own
		introspectSample: tok,
	}, nil
}

// clientCredentials gets an access token with the client_credentials grant.
func clientCredentials(ctx context.Context, tokenURL, basic string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", basic)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var t struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &t) != nil || t.AccessToken == "" {
		return "", fmt.Errorf("client_credentials at %s: HTTP %d: %s", tokenURL, resp.StatusCode, body)
	}
	return t.AccessToken, nil
}

// recreateDB drops and creates database name on the server of pgURL and
// returns its URL.
func recreateDB(ctx context.Context, pgURL, name string) (string, error) {
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	for _, q := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "CREATE DATABASE " + name} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("%s: %w", q, err)
		}
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, u string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
