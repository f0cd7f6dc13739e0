package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/residency"
	"github.com/domicile/domicile/router"
)

// PeerConfig is one member of the home-index cluster.
type PeerConfig struct {
	ID   string `yaml:"id"`
	Raft string `yaml:"raft"` // host:port of its Raft transport
	API  string `yaml:"api"`  // base URL of its HTTP server
}

// IndexConfig is a router's home-index replica.
type IndexConfig struct {
	Dir       string       `yaml:"dir"`
	Bind      string       `yaml:"bind"` // Raft transport address
	Bootstrap bool         `yaml:"bootstrap"`
	Peers     []PeerConfig `yaml:"peers"`
	// Join lists API URLs of existing routers; a router with no index
	// state asks them to add it, as a non-voter if non_voter is set.
	Join     []string `yaml:"join"`
	NonVoter bool     `yaml:"non_voter"`
}

// RouterConfig is the configuration of one router.
type RouterConfig struct {
	Name      string `yaml:"name"`
	Listen    string `yaml:"listen"`
	Advertise string `yaml:"advertise"` // base URL other routers use (default http://<listen>)
	Policy    string `yaml:"policy"`    // path of the residency policy
	GeoIP     string `yaml:"geoip"`     // path of a country MMDB (optional)
	// Regions maps each region to the base URL of its node, or a list of
	// them.
	Regions        map[string]URLList `yaml:"regions"`
	TrustedProxies []string           `yaml:"trusted_proxies"`
	SecretsFile    string             `yaml:"secrets_file"`
	Index          IndexConfig        `yaml:"index"`
	// MaxBodyBytes bounds what the router reads of a JSON or form body to
	// find the identifier (default 16 KiB).
	MaxBodyBytes int             `yaml:"max_body_bytes"`
	Health       HealthConfig    `yaml:"health"`
	RateLimits   RateLimitConfig `yaml:"rate_limits"`
	// Issuer is the OpenID Connect issuer, the global public URL (as
	// https://id.example.com, no path), the same on every router and
	// region. Without it the router serves no discovery document and no
	// JWKS.
	Issuer string `yaml:"issuer"`
	// LocalRegion is the region this router runs in (one of regions):
	// SSO with prompt=none on a live session and client-credentials
	// grants go there rather than to a home region.
	LocalRegion string `yaml:"local_region"`

	// Set programmatically (dev, tests) instead of from the file.
	PolicyYAML   []byte       `yaml:"-"` // used instead of reading Policy
	SecretsValue *Secrets     `yaml:"-"`
	HTTPListener net.Listener `yaml:"-"`
	RaftListener net.Listener `yaml:"-"`
	Logger       *slog.Logger `yaml:"-"`
}

// URLList is one URL or a list of them.
type URLList []string

// UnmarshalYAML accepts a scalar or a sequence.
func (u *URLList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*u = URLList{n.Value}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*u = l
	return nil
}

// HealthConfig tunes the routers' active health checks of region nodes.
type HealthConfig struct {
	Interval time.Duration `yaml:"interval"` // default 1s
	Timeout  time.Duration `yaml:"timeout"`  // default 1s
	Fall     int           `yaml:"fall"`     // failed checks that eject a node (default 2)
	Rise     int           `yaml:"rise"`     // good checks that return it (default 2)
}

// RateLimitConfig configures the per-client limits on credential endpoints.
type RateLimitConfig struct {
	Paths         []string     `yaml:"paths"`
	PerIP         router.Limit `yaml:"per_ip"`
	PerIdentifier router.Limit `yaml:"per_identifier"`
}

// Router is a running router and its index replica.
type Router struct {
	Name   string
	Index  *homeindex.Node
	Router *router.Router
	ln     net.Listener
	served chan error
	geo    *residency.GeoIP
	stop   chan struct{}
	done   chan struct{}
}

// URL is the router's base URL.
func (r *Router) URL() string { return "http://" + r.ln.Addr().String() }

// StartRouter validates cfg and starts the router.
func StartRouter(cfg RouterConfig) (_ *Router, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Name == "" {
		return nil, errors.New("router config: name: required")
	}
	raw := cfg.PolicyYAML
	if raw == nil {
		if cfg.Policy == "" {
			return nil, errors.New("router config: policy: required")
		}
		if raw, err = os.ReadFile(cfg.Policy); err != nil {
			return nil, fmt.Errorf("router config: policy: %w", err)
		}
	}
	pol, err := residency.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("router config: policy: %w", err)
	}
	sec := cfg.SecretsValue
	if sec == nil {
		if cfg.SecretsFile == "" {
			return nil, errors.New("router config: secrets_file: required")
		}
		if sec, err = LoadSecrets(cfg.SecretsFile); err != nil {
			return nil, fmt.Errorf("router config: secrets_file: %w", err)
		}
	}
	var trusted []netip.Prefix
	for i, s := range cfg.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("router config: trusted_proxies[%d]: %q is not a CIDR prefix or address", i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		trusted = append(trusted, p.Masked())
	}
	if len(cfg.Index.Peers) == 0 && len(cfg.Index.Join) == 0 {
		return nil, errors.New("router config: index.peers: list the voters, or index.join: existing routers")
	}
	if cfg.Index.Dir == "" {
		return nil, errors.New("router config: index.dir: required")
	}
	hasher, err := homeindex.NewHasher(sec.IndexKey)
	if err != nil {
		return nil, fmt.Errorf("router config: secrets_file: %w", err)
	}
	var geo *residency.GeoIP
	if cfg.GeoIP != "" {
		if geo, err = residency.OpenGeoIP(cfg.GeoIP); err != nil {
			return nil, fmt.Errorf("router config: geoip: %w", err)
		}
	}
	defer func() {
		if err != nil && geo != nil {
			geo.Close()
		}
	}()
	httpLn := cfg.HTTPListener
	if httpLn == nil {
		if cfg.Listen == "" {
			return nil, errors.New("router config: listen: required")
		}
		if httpLn, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("router config: listen: %w", err)
		}
	}
	peers := make([]homeindex.Peer, len(cfg.Index.Peers))
	for i, p := range cfg.Index.Peers {
		peers[i] = homeindex.Peer{ID: p.ID, RaftAddr: p.Raft, APIAddr: p.API}
	}
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = "http://" + httpLn.Addr().String()
	}
	// The index tells us about policies put through any router's admin API
	// (and, on restart, the one in force); the router may not exist yet
	// when the replica first applies one.
	var rtp atomic.Pointer[router.Router]
	var latest atomic.Pointer[residency.Policy]
	onPolicy := func(version int, data []byte) {
		p, err := residency.Parse(data)
		if err != nil {
			log.Error("index carries a policy this router cannot parse", "version", version, "err", err)
			return
		}
		latest.Store(p)
		if rt := rtp.Load(); rt != nil {
			if err := rt.SetPolicy(p); err != nil {
				log.Error("cannot put the index's policy in force", "version", version, "err", err)
			}
		}
	}
	node, err := homeindex.Open(homeindex.Config{
		OnPolicy:  onPolicy,
		APIAddr:   advertise,
		Join:      cfg.Index.Join,
		NonVoter:  cfg.Index.NonVoter,
		ID:        cfg.Name,
		Dir:       filepath.Clean(cfg.Index.Dir),
		Listener:  cfg.RaftListener,
		Bind:      cfg.Index.Bind,
		Peers:     peers,
		Bootstrap: cfg.Index.Bootstrap,
		Token:     sec.InternalToken,
		Logger:    log,
	})
	if err != nil {
		httpLn.Close()
		return nil, fmt.Errorf("router config: index: %w", err)
	}
	regions := make(map[string][]string, len(cfg.Regions))
	for k, v := range cfg.Regions {
		regions[k] = v
	}
	rt, err := router.New(router.Config{
		Name:           cfg.Name,
		Policy:         pol,
		GeoIP:          geo,
		Regions:        regions,
		Index:          node,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		RouteKey:       sec.RouteKey,
		Health:         router.HealthConfig(cfg.Health),
		RateLimits:     router.RateLimits{Paths: cfg.RateLimits.Paths, PerIP: cfg.RateLimits.PerIP, PerIdentifier: cfg.RateLimits.PerIdentifier},
		IndexAPI:       node.Handler(),
		Hasher:         hasher,
		TrustedProxies: trusted,
		Logger:         log,
		Collectors:     node.Collectors(),
		AdminToken:     sec.AdminToken,
		Policies:       node,
		Issuer:         cfg.Issuer,
		LocalRegion:    cfg.LocalRegion,
		Revoked:        node.IsRevoked, // global logout: from the commit of the Revoke on
	})
	if err != nil {
		node.Close()
		httpLn.Close()
		return nil, err
	}
	rtp.Store(rt)
	if p := latest.Load(); p != nil {
		if err := rt.SetPolicy(p); err != nil {
			log.Error("cannot put the index's policy in force", "version", p.Version(), "err", err)
		}
	}
	r := &Router{
		Name:   cfg.Name,
		Index:  node,
		Router: rt,
		ln:     httpLn,
		served: make(chan error, 1),
		geo:    geo,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go func() {
		err := rt.Serve(httpLn)
		if err != nil {
			log.Error("http server stopped", "addr", httpLn.Addr().String(), "err", err)
		}
		r.served <- err
	}()
	go r.ensurePolicy(pol.Version(), raw, log)
	return r, nil
}

// ensurePolicy makes sure the index carries at least the configured policy
// version (it registers the regions that claims may name): whichever router
// is leader proposes it; a newer version already in force wins.
func (r *Router) ensurePolicy(version int, raw []byte, log *slog.Logger) {
	defer close(r.done)
	for {
		if v, _ := r.Index.Policy(); v >= version {
			return
		}
		if r.Index.IsLeader() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := r.Index.SetPolicy(ctx, version, raw)
			cancel()
			if err == nil || errors.Is(err, homeindex.ErrStalePolicy) {
				return
			}
			log.Warn("could not apply the residency policy to the index; retrying", "version", version, "err", err)
		}
		select {
		case <-r.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Shutdown drains HTTP, then leaves Raft and closes the geo-IP database.
func (r *Router) Shutdown(ctx context.Context) error {
	close(r.stop)
	<-r.done
	err := r.Router.Shutdown(ctx)
	if err == nil {
		err = <-r.served
	}
	if cerr := r.Index.Close(); err == nil {
		err = cerr
	}
	if r.geo != nil {
		r.geo.Close()
	}
	return err
}
