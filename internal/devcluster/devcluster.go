// Package devcluster runs the local multi-region topology of `domicile dev`
// in one process: three routers forming a Raft cluster for the home index
// and one regional node per policy region, each with its own SQLite file
// and session store. End-to-end tests start it on free ports.
package devcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	devdeploy "github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/internal/testmmdb"
	"github.com/domicile/domicile/region"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/residency"
)

// Routers is the number of routers in the topology.
const Routers = 3

// Config configures the topology. The zero value (plus DataDir) picks
// free ports, the embedded dev policy and SQLite files.
type Config struct {
	DataDir string
	Host    string // default 127.0.0.1
	// Fixed ports; zero or missing picks a free one.
	RouterPorts []int
	RaftPorts   []int
	RegionPorts map[string]int
	// RegionBasePort, if set and RegionPorts is not, gives the regions
	// consecutive ports in sorted name order.
	RegionBasePort int
	// PolicyYAML is the residency policy (default: the embedded dev policy).
	PolicyYAML []byte
	// TrustedProxies whose X-Forwarded-For the routers believe (default:
	// loopback, so a local client can act as a CDN in front of them).
	TrustedProxies []string
	// Database returns a region's store config (default SQLite under DataDir).
	Database func(region string) store.Config
	Sessions launch.SessionsConfig
	Argon2   *region.Argon2Params
	// OIDCClients are declared in every region (default: DemoClient).
	OIDCClients []launch.OIDCClientConfig
	// RateLimits of the routers' credential endpoints (default: theirs).
	RateLimits launch.RateLimitConfig
	Logger     *slog.Logger
}

// DemoClient is the OpenID client `domicile dev` declares in every region:
// a confidential client for an app on http://localhost:9000 (or
// 127.0.0.1:9000).
var DemoClient = launch.OIDCClientConfig{
	ID: "demo", Name: "Demo app", Secret: "demo-secret",
	RedirectURIs:           []string{"http://localhost:9000/callback", "http://127.0.0.1:9000/callback"},
	PostLogoutRedirectURIs: []string{"http://localhost:9000/", "http://127.0.0.1:9000/"},
	GrantTypes:             []string{"authorization_code", "refresh_token", "client_credentials"},
	Scopes:                 []string{"openid", "profile", "email", "offline_access"},
}

// LocalRegions are the regions the dev routers run "in" (router-1 is
// eu-west, router-2 us-east, router-3 ap-southeast): where they send SSO
// with prompt=none and client-credentials grants. A router whose local
// region is not in the policy has none.
var LocalRegions = [Routers]string{"eu-west", "us-east", "ap-southeast"}

// Cluster is a running topology.
type Cluster struct {
	Routers     []*launch.Router // index i is router-(i+1); nil once stopped
	Regions     map[string]*launch.Region
	RegionNames []string
	Policy      *residency.Policy
	Secrets     *launch.Secrets
	GeoIPFile   string
}

func listen(host string, ports []int, i int) (net.Listener, error) {
	port := 0
	if i < len(ports) {
		port = ports[i]
	}
	return net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
}

// Start brings the topology up and waits until the index has a leader.
func Start(ctx context.Context, cfg Config) (c *Cluster, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("dev: data dir: required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TrustedProxies == nil {
		cfg.TrustedProxies = []string{"127.0.0.0/8", "::1/128"}
	}
	if cfg.PolicyYAML == nil {
		cfg.PolicyYAML = devdeploy.Policy
	}
	pol, err := residency.Parse(cfg.PolicyYAML)
	if err != nil {
		return nil, fmt.Errorf("dev: policy: %w", err)
	}
	if cfg.Database == nil {
		cfg.Database = func(r string) store.Config {
			return store.Config{Driver: "sqlite", DSN: regionDB(cfg.DataDir, r)}
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("dev: data dir: %w", err)
	}
	sec, err := launch.LoadOrCreateSecrets(filepath.Join(cfg.DataDir, "secrets.json"))
	if err != nil {
		return nil, err
	}
	geoFile := filepath.Join(cfg.DataDir, "geoip", "dev-country.mmdb")
	if err := testmmdb.Write(geoFile); err != nil {
		return nil, fmt.Errorf("dev: build geo-IP database: %w", err)
	}

	c = &Cluster{Regions: map[string]*launch.Region{}, RegionNames: pol.Regions(), Policy: pol, Secrets: sec, GeoIPFile: geoFile}
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Shutdown(sctx)
		}
	}()

	// Listen on every port first, so every URL is known before anything starts.
	if cfg.RegionPorts == nil && cfg.RegionBasePort > 0 {
		cfg.RegionPorts = map[string]int{}
		for i, name := range c.RegionNames {
			cfg.RegionPorts[name] = cfg.RegionBasePort + i
		}
	}
	regionLns := map[string]net.Listener{}
	regionURLs := map[string]launch.URLList{}
	for _, name := range c.RegionNames {
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.RegionPorts[name])))
		if err != nil {
			return c, fmt.Errorf("dev: region %s: %w", name, err)
		}
		lns = append(lns, l)
		regionLns[name] = l
		regionURLs[name] = launch.URLList{"http://" + l.Addr().String()}
	}
	var httpLns, raftLns []net.Listener
	var peers []launch.PeerConfig
	var routerURLs []string
	for i := range Routers {
		hl, err := listen(cfg.Host, cfg.RouterPorts, i)
		if err != nil {
			return c, fmt.Errorf("dev: router-%d: %w", i+1, err)
		}
		lns = append(lns, hl)
		rl, err := listen(cfg.Host, cfg.RaftPorts, i)
		if err != nil {
			return c, fmt.Errorf("dev: router-%d raft: %w", i+1, err)
		}
		lns = append(lns, rl)
		httpLns, raftLns = append(httpLns, hl), append(raftLns, rl)
		u := "http://" + hl.Addr().String()
		routerURLs = append(routerURLs, u)
		peers = append(peers, launch.PeerConfig{ID: fmt.Sprintf("router-%d", i+1), Raft: rl.Addr().String(), API: u})
	}

	// Passkeys: browsers take no IP address as a WebAuthn RP ID, so the
	// pages do passkeys on http://localhost:<port> of any router (a
	// secure context, unlike plain http on another host).
	var rpOrigins []string
	for _, l := range httpLns {
		_, port, _ := net.SplitHostPort(l.Addr().String())
		rpOrigins = append(rpOrigins, "http://localhost:"+port)
	}
	oidcClients := cfg.OIDCClients
	if oidcClients == nil {
		oidcClients = []launch.OIDCClientConfig{DemoClient}
	}
	for _, name := range c.RegionNames {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, name), 0o700); err != nil {
			return c, fmt.Errorf("dev: region %s: %w", name, err)
		}
		r, err := launch.StartRegion(ctx, launch.RegionConfig{
			Name:           name,
			Database:       cfg.Database(name),
			SessionKeyFile: filepath.Join(cfg.DataDir, name, "session-key.json"),
			MasterKeyFile:  filepath.Join(cfg.DataDir, name, "master.key"),
			PublicURL:      routerURLs[0],
			RPID:           "localhost",
			RPOrigins:      rpOrigins,
			Outbox:         mail.NewOutbox(0, cfg.Logger.With("node", name)),
			Sessions:       cfg.Sessions,
			Index:          routerURLs,
			SecretsValue:   sec,
			HTTPListener:   regionLns[name],
			Logger:         cfg.Logger.With("node", name),
			Argon2:         cfg.Argon2,
			OIDCKeyFile:    filepath.Join(cfg.DataDir, name, "oidc-keys.json"),
			OIDCClients:    oidcClients,
		})
		if err != nil {
			return c, fmt.Errorf("dev: region %s: %w", name, err)
		}
		c.Regions[name] = r
	}
	for i := range Routers {
		local := LocalRegions[i]
		if _, ok := regionURLs[local]; !ok {
			local = ""
		}
		r, err := launch.StartRouter(launch.RouterConfig{
			Name:           peers[i].ID,
			Issuer:         routerURLs[0],
			LocalRegion:    local,
			RateLimits:     cfg.RateLimits,
			GeoIP:          geoFile,
			Regions:        regionURLs,
			TrustedProxies: cfg.TrustedProxies,
			Index: launch.IndexConfig{
				Dir:       routerDir(cfg.DataDir, peers[i].ID),
				Bootstrap: true,
				Peers:     peers,
			},
			PolicyYAML:   cfg.PolicyYAML,
			SecretsValue: sec,
			HTTPListener: httpLns[i],
			RaftListener: raftLns[i],
			Logger:       cfg.Logger.With("node", peers[i].ID),
		})
		if err != nil {
			return c, fmt.Errorf("dev: %s: %w", peers[i].ID, err)
		}
		c.Routers = append(c.Routers, r)
	}
	lns = nil // owned by the servers now
	deadline := time.Now().Add(15 * time.Second)
	for !c.ready() {
		if time.Now().After(deadline) {
			return c, errors.New("dev: the home index was not ready (leader elected, replicas caught up, policy applied) within 15s")
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return c, nil
}

func (c *Cluster) ready() bool {
	for _, r := range c.Routers {
		if v, _ := r.Index.Policy(); !r.Index.Ready() || v < c.Policy.Version() {
			return false
		}
	}
	return true
}

func regionDB(dataDir, region string) string { return filepath.Join(dataDir, region, "domicile.db") }
func routerDir(dataDir, id string) string    { return filepath.Join(dataDir, id, "raft") }

// Layout returns the configuration `domicile dev` runs with on dataDir
// (without addresses), for tools that describe a topology such as
// `domicile residency report`.
func Layout(dataDir string, pol *residency.Policy) ([]launch.RouterConfig, []launch.RegionConfig) {
	var routers []launch.RouterConfig
	for i := range Routers {
		id := fmt.Sprintf("router-%d", i+1)
		routers = append(routers, launch.RouterConfig{Name: id, Index: launch.IndexConfig{Dir: routerDir(dataDir, id)}})
	}
	var regions []launch.RegionConfig
	for _, name := range pol.Regions() {
		regions = append(regions, launch.RegionConfig{
			Name:          name,
			Database:      store.Config{Driver: "sqlite", DSN: regionDB(dataDir, name)},
			Sessions:      launch.SessionsConfig{Store: "memory"},
			MasterKeyFile: filepath.Join(dataDir, name, "master.key"),
		})
	}
	return routers, regions
}

// RouterURLs returns the base URLs of the routers still running.
func (c *Cluster) RouterURLs() []string {
	var out []string
	for _, r := range c.Routers {
		if r != nil {
			out = append(out, r.URL())
		}
	}
	return out
}

// StopRouter shuts router i down (HTTP and its Raft replica), as a crash
// of that machine would look to the others.
func (c *Cluster) StopRouter(ctx context.Context, i int) error {
	r := c.Routers[i]
	if r == nil {
		return nil
	}
	c.Routers[i] = nil
	return r.Shutdown(ctx)
}

// Shutdown stops routers, then regions.
func (c *Cluster) Shutdown(ctx context.Context) error {
	var errs []error
	for i := range c.Routers {
		errs = append(errs, c.StopRouter(ctx, i))
	}
	for _, name := range c.RegionNames {
		if r := c.Regions[name]; r != nil {
			errs = append(errs, r.Shutdown(ctx))
			delete(c.Regions, name)
		}
	}
	return errors.Join(errs...)
}

// Banner is what `domicile dev` prints: the URLs and a curl line to try.
func (c *Cluster) Banner() string {
	var b strings.Builder
	b.WriteString("Domicile dev topology is up.\n\nRouters (the global edge; use any of them):\n")
	for _, r := range c.Routers {
		if r != nil {
			fmt.Fprintf(&b, "  %-10s %s\n", r.Name, r.URL())
		}
	}
	b.WriteString("\nRegions (each with its own database under the data dir):\n")
	for _, name := range c.RegionNames {
		if r := c.Regions[name]; r != nil {
			fmt.Fprintf(&b, "  %-13s %s   (mail it sent: %s/internal/outbox)\n", name, r.URL(), r.URL())
		}
	}
	r1, r3 := c.Routers[0].URL(), c.Routers[len(c.Routers)-1].URL()
	fmt.Fprintf(&b, "\nIn a browser: %s/ui/signup  then  %s/ui/login  and  %s/ui/account\n", r1, r1, r1)
	if u, err := url.Parse(r1); err == nil {
		fmt.Fprintf(&b, "(Passkeys need a domain: open the pages as http://localhost:%s/ui/login instead.)\n", u.Port())
	}
	fmt.Fprintf(&b, "\nTry it:\n")
	fmt.Fprintf(&b, "  curl -s -X POST %s/signup -H 'Content-Type: application/json' -d '{\"email\":\"ana@acme.de\",\"password\":\"correct horse battery\"}'\n", r1)
	fmt.Fprintf(&b, "  curl -s -X POST %s/login  -H 'Content-Type: application/json' -d '{\"email\":\"ana@acme.de\",\"password\":\"correct horse battery\"}'\n", r3)
	fmt.Fprintf(&b, "  # a new user with an unknown domain, signing up from Singapore (geo-IP of 203.0.113.9):\n")
	fmt.Fprintf(&b, "  curl -s -X POST %s/signup -H 'X-Forwarded-For: 203.0.113.9' -H 'Content-Type: application/json' -d '{\"email\":\"li@example.com\",\"password\":\"correct horse battery\"}'\n", r1)
	fmt.Fprintf(&b, "\nOpenID Connect (one issuer, %s):\n", r1)
	fmt.Fprintf(&b, "  discovery  %s/.well-known/openid-configuration   keys %s/oauth2/keys\n", r1, r1)
	fmt.Fprintf(&b, "  demo client: id %q, secret %q, redirect_uri %s\n", DemoClient.ID, DemoClient.Secret, DemoClient.RedirectURIs[0])
	fmt.Fprintf(&b, "  curl -s -u %s:%s -d grant_type=client_credentials %s/oauth2/token\n", DemoClient.ID, DemoClient.Secret, r1)
	fmt.Fprintf(&b, "\nHealth: %s/healthz  %s/readyz  %s/metrics\nPress Ctrl-C to stop.\n", r1, r1, r1)
	return b.String()
}
