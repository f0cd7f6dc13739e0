package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/httpserver"
	"github.com/domicile/domicile/region"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/oidc"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// SessionsConfig selects a region's session store.
type SessionsConfig struct {
	Store  string `yaml:"store"`  // "memory" (default) or "redis"
	Redis  string `yaml:"redis"`  // host:port, for store: redis
	Prefix string `yaml:"prefix"` // key prefix (default "domicile:"); the region name is appended
}

// RegionConfig is the configuration of one regional node.
type RegionConfig struct {
	Name        string         `yaml:"name"`
	Listen      string         `yaml:"listen"`
	Database    store.Config   `yaml:"database"`
	Sessions    SessionsConfig `yaml:"sessions"`
	Index       []string       `yaml:"index"` // router base URLs for index writes
	SecretsFile string         `yaml:"secrets_file"`
	SessionTTL  time.Duration  `yaml:"session_ttl"`
	// SessionKeyFile holds the region's session-token signing key
	// (created, mode 0600, on first start).
	SessionKeyFile string `yaml:"session_key_file"`
	// MasterKeyFile holds the region's master key (32 bytes, base64; created,
	// mode 0600, on first start), which wraps every user's data key. It is
	// the region's own: never copy it to another region.
	MasterKeyFile string `yaml:"master_key_file"`
	// PublicURL is where users reach the service (the routers' public
	// address); links in emails point there.
	PublicURL string     `yaml:"public_url"`
	Mail      MailConfig `yaml:"mail"`
	// RPID and RPOrigins are the WebAuthn relying party of passkeys: the
	// domain passkeys are bound to (the same in every region) and the
	// origins the hosted pages are served from. Default: public_url's host
	// and origin.
	RPID      string   `yaml:"rp_id"`
	RPOrigins []string `yaml:"rp_origins"`
	// OIDCKeyFile holds the region's OpenID signing keys (EdDSA, kid
	// "<region>-<n>", apart from the session key; created, mode 0600, on
	// first start and shared by the region's nodes). Empty turns the
	// OpenID Provider off.
	OIDCKeyFile string `yaml:"oidc_key_file"`
	// OIDCKeyRotation makes a new signing key this often (0: only through
	// POST /admin/v1/oidc/keys/rotate). Set it on one node of a region.
	OIDCKeyRotation time.Duration `yaml:"oidc_key_rotation"`
	// OIDCClients are clients declared here, before the registry
	// (development: a demo client).
	OIDCClients []OIDCClientConfig `yaml:"oidc_clients"`
	// SessionKeysURL is where the session keys of every region are
	// fetched, to serve travelling users (default public_url +
	// /.well-known/session-keys, the routers' union JWKS).
	SessionKeysURL string `yaml:"session_keys_url"`
	// OIDCKeysURL is the union of the regions' OpenID keys, for the
	// id_token_hint of a logout signed by another region (default
	// public_url + /oauth2/keys).
	OIDCKeysURL string `yaml:"oidc_keys_url"`

	SecretsValue *Secrets             `yaml:"-"`
	Outbox       *mail.Outbox         `yaml:"-"` // used instead of Mail (dev)
	HTTPListener net.Listener         `yaml:"-"`
	Logger       *slog.Logger         `yaml:"-"`
	Argon2       *region.Argon2Params `yaml:"-"`
}

// OIDCClientConfig declares an OpenID client in the region configuration.
// Its secret is in clear text here: for development only (production
// clients are registered through the admin API, which keeps a hash).
type OIDCClientConfig struct {
	ID                     string   `yaml:"id"`
	Name                   string   `yaml:"name"`
	Secret                 string   `yaml:"secret"` // empty: a public client (PKCE)
	RedirectURIs           []string `yaml:"redirect_uris"`
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
	GrantTypes             []string `yaml:"grant_types"` // default authorization_code, refresh_token
	Scopes                 []string `yaml:"scopes"`
	BackchannelLogoutURI   string   `yaml:"backchannel_logout_uri"`
}

func (o OIDCClientConfig) client() store.Client {
	c := store.Client{ID: o.ID, Name: o.Name, RedirectURIs: o.RedirectURIs, PostLogoutRedirectURIs: o.PostLogoutRedirectURIs,
		GrantTypes: o.GrantTypes, Scopes: o.Scopes, BackchannelLogoutURI: o.BackchannelLogoutURI}
	if len(c.GrantTypes) == 0 {
		c.GrantTypes = []string{oidc.GrantAuthorizationCode, oidc.GrantRefreshToken}
	}
	if o.Secret != "" {
		c.SecretHash = oidc.HashSecret(o.Secret)
	}
	return c
}

// MailConfig selects how a region sends email: an SMTP submission server,
// or (development only) an outbox kept in memory and shown at
// /internal/outbox on the region's own address.
type MailConfig struct {
	Outbox bool `yaml:"outbox"`
	SMTP   struct {
		Addr         string        `yaml:"addr"`
		From         string        `yaml:"from"`
		Username     string        `yaml:"username"`
		PasswordFile string        `yaml:"password_file"`
		Timeout      time.Duration `yaml:"timeout"`
		RequireTLS   bool          `yaml:"require_tls"`
	} `yaml:"smtp"`
}

// mailer builds the configured mailer.
func (m MailConfig) mailer(log *slog.Logger) (mail.Mailer, *mail.Outbox, error) {
	switch {
	case m.Outbox && m.SMTP.Addr != "":
		return nil, nil, errors.New("region config: mail: set outbox or smtp, not both")
	case m.Outbox:
		o := mail.NewOutbox(0, log)
		return o, o, nil
	case m.SMTP.Addr == "":
		return nil, nil, errors.New("region config: mail: required (smtp.addr, or outbox: true in development)")
	}
	cfg := mail.SMTPConfig{Addr: m.SMTP.Addr, From: m.SMTP.From, Username: m.SMTP.Username, Timeout: m.SMTP.Timeout, RequireTLS: m.SMTP.RequireTLS}
	if m.SMTP.PasswordFile != "" {
		pw, err := os.ReadFile(m.SMTP.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("region config: mail.smtp.password_file: %w", err)
		}
		cfg.Password = strings.TrimSpace(string(pw))
	}
	s, err := mail.NewSMTP(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("region config: %w", err)
	}
	return s, nil, nil
}

// Region is a running regional node.
type Region struct {
	Name     string
	Server   *region.Server
	Store    *store.DB
	Sessions session.Store
	// Outbox holds the mail the region sent, when configured with one.
	Outbox  *mail.Outbox
	HTTP    *httpserver.Server
	closers []func() error
}

// URL is the region's base URL.
func (r *Region) URL() string { return r.HTTP.URL() }

// StartRegion validates cfg and starts the regional node.
func StartRegion(ctx context.Context, cfg RegionConfig) (_ *Region, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Name == "" {
		return nil, errors.New("region config: name: required")
	}
	sec := cfg.SecretsValue
	if sec == nil {
		if cfg.SecretsFile == "" {
			return nil, errors.New("region config: secrets_file: required")
		}
		if sec, err = LoadSecrets(cfg.SecretsFile); err != nil {
			return nil, fmt.Errorf("region config: secrets_file: %w", err)
		}
	}
	hasher, err := homeindex.NewHasher(sec.IndexKey)
	if err != nil {
		return nil, fmt.Errorf("region config: secrets_file: %w", err)
	}
	idx, err := homeindex.NewClient(cfg.Index, sec.InternalToken, nil)
	if err != nil {
		return nil, fmt.Errorf("region config: index: %w", err)
	}
	r := &Region{Name: cfg.Name}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	var oidcState oidc.State
	switch cfg.Sessions.Store {
	case "", "memory":
		m := session.NewMemory()
		r.Sessions = m
		r.closers = append(r.closers, func() error { m.Close(); return nil })
		ms := oidc.NewMemoryState()
		oidcState = ms
		r.closers = append(r.closers, ms.Close)
	case "redis":
		if cfg.Sessions.Redis == "" {
			return nil, errors.New("region config: sessions.redis: required for store: redis")
		}
		rc := redis.NewClient(&redis.Options{Addr: cfg.Sessions.Redis})
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rc.Ping(pctx).Err(); err != nil {
			rc.Close()
			return nil, fmt.Errorf("region config: sessions.redis: %w", err)
		}
		prefix := cfg.Sessions.Prefix
		if prefix == "" {
			prefix = "domicile:"
		}
		r.Sessions = session.NewRedis(rc, prefix+cfg.Name+":sess:")
		oidcState = oidc.NewRedisState(rc, prefix+cfg.Name+":oidc:")
		r.closers = append(r.closers, rc.Close)
	default:
		return nil, fmt.Errorf("region config: sessions.store: unknown %q (want memory or redis)", cfg.Sessions.Store)
	}
	db, err := openStore(ctx, cfg, true)
	if err != nil {
		return nil, err
	}
	r.Store = db
	r.closers = append(r.closers, db.Close)

	if cfg.SessionKeyFile == "" {
		return nil, errors.New("region config: session_key_file: required")
	}
	skey, err := session.LoadOrCreateKeyFile(cfg.SessionKeyFile, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("region config: session_key_file: %w", err)
	}
	mailer, outbox := mail.Mailer(cfg.Outbox), cfg.Outbox
	if cfg.Outbox == nil {
		if mailer, outbox, err = cfg.Mail.mailer(log); err != nil {
			return nil, err
		}
	}
	r.Outbox = outbox
	rcfg := region.Config{
		Accounts:   db,
		MFA:        db,
		Admin:      db,
		Consent:    db,
		AdminToken: sec.AdminToken,
		Audit:      db,
		Mailer:     mailer,
		PublicURL:  cfg.PublicURL,
		Passkeys:   db,
		RPID:       cfg.RPID,
		RPOrigins:  cfg.RPOrigins,
		RouteKey:   sec.RouteKey,
		SessionKey: skey,
		Name:       cfg.Name,
		Users:      db,
		Sessions:   r.Sessions,
		Index:      idx,
		Hasher:     hasher,
		SessionTTL: cfg.SessionTTL,
		Logger:     log,
	}
	if cfg.Argon2 != nil {
		rcfg.Argon2 = *cfg.Argon2
	}
	if cfg.OIDCKeyFile != "" {
		// The client registry is the home index: a client registered at
		// any region is replicated to all of them.
		registry := &region.IndexClients{Index: idx}
		oc, err := r.oidcConfig(cfg, registry, oidcState, log)
		if err != nil {
			return nil, err
		}
		rcfg.OIDC, rcfg.ClientAdmin = oc, registry
	} else if len(cfg.OIDCClients) > 0 {
		return nil, errors.New("region config: oidc_clients: needs oidc_key_file (the OpenID Provider is off without it)")
	}
	if r.Server, err = region.New(rcfg); err != nil {
		return nil, err
	}
	ln := cfg.HTTPListener
	if ln == nil {
		if cfg.Listen == "" {
			return nil, errors.New("region config: listen: required")
		}
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("region config: listen: %w", err)
		}
	}
	h := r.Server.Handler()
	if outbox != nil {
		mux := http.NewServeMux()
		mux.Handle("/internal/outbox", outbox)
		mux.Handle("/", h)
		h = mux
	}
	r.HTTP = httpserver.Start(ln, h, log)
	return r, nil
}

// oidcConfig loads (or creates) the OpenID signing keys and puts the
// provider's parts together: the state, the declared clients in front of
// the registry, the other regions' session and OpenID keys fetched from
// the routers, and the key rotation.
func (r *Region) oidcConfig(cfg RegionConfig, registry oidc.Clients, state oidc.State, log *slog.Logger) (*oidc.Config, error) {
	if cfg.OIDCKeyRotation < 0 || cfg.OIDCKeyRotation > 0 && cfg.OIDCKeyRotation < time.Hour {
		return nil, errors.New("region config: oidc_key_rotation: at least 1h (or 0: by the admin API only)")
	}
	keys, err := oidc.LoadOrCreateKeyRing(cfg.OIDCKeyFile, cfg.Name, oidc.MaxTokenTTL)
	if err != nil {
		return nil, fmt.Errorf("region config: oidc_key_file: %w", err)
	}
	declared := make([]store.Client, len(cfg.OIDCClients))
	for i, c := range cfg.OIDCClients {
		declared[i] = c.client()
	}
	clients, err := oidc.NewStaticClients(declared, registry)
	if err != nil {
		return nil, fmt.Errorf("region config: oidc_clients: %w", err)
	}
	base := strings.TrimSuffix(cfg.PublicURL, "/")
	sessKeys, oidcKeys := cfg.SessionKeysURL, cfg.OIDCKeysURL
	if sessKeys == "" {
		sessKeys = base + "/.well-known/session-keys"
	}
	if oidcKeys == "" {
		oidcKeys = base + oidc.PathKeys
	}
	for field, u := range map[string]string{"session_keys_url": sessKeys, "oidc_keys_url": oidcKeys} {
		if p, err := url.Parse(u); err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
			return nil, fmt.Errorf("region config: %s: %q: want an absolute http(s) URL (or set public_url)", field, u)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				// Another node's rotation, and this node's when due.
				if err := keys.Reload(); err != nil {
					log.Warn("oidc: reload keys", "err", err)
				}
				if cfg.OIDCKeyRotation > 0 && now.Sub(keys.SigningKeyCreated()) >= cfg.OIDCKeyRotation {
					if kid, err := keys.Rotate(now); err != nil {
						log.Error("oidc: rotate keys", "err", err)
					} else {
						log.Info("oidc: signing key rotated", "kid", kid)
					}
				}
			}
		}
	}()
	r.closers = append(r.closers, func() error { close(stop); <-done; return nil })
	return &oidc.Config{
		Keys: keys, State: state, Clients: clients,
		ForeignSessions: session.NewRemoteVerifier(&session.HTTPKeySource{URL: sessKeys}, session.RemoteOptions{}),
		ForeignKeys:     &session.HTTPKeySource{URL: oidcKeys},
	}, nil
}

func (r *Region) close() error {
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i]())
	}
	r.closers = nil
	return errors.Join(errs...)
}

// Shutdown drains HTTP, then closes the database and the session store.
func (r *Region) Shutdown(ctx context.Context) error {
	var err error
	if r.HTTP != nil {
		err = r.HTTP.Shutdown(ctx)
	}
	if r.Server != nil {
		r.Server.Wait() // writes made after answering reach the store first
	}
	return errors.Join(err, r.close())
}

// OpenRegionStore opens the database of the region cfg describes, for
// offline tools (audit verification). The master key file must exist.
func OpenRegionStore(ctx context.Context, cfg RegionConfig) (*store.DB, error) {
	return openStore(ctx, cfg, false)
}

// openStore opens the region's database with its master key, creating the
// key file first if create is set.
func openStore(ctx context.Context, cfg RegionConfig, create bool) (*store.DB, error) {
	if cfg.MasterKeyFile == "" {
		return nil, errors.New("region config: master_key_file: required")
	}
	if !create {
		if _, err := os.Stat(cfg.MasterKeyFile); err != nil {
			return nil, fmt.Errorf("region config: master_key_file: %w", err)
		}
	}
	mk, err := loadOrCreateKey(cfg.MasterKeyFile)
	if err != nil {
		return nil, fmt.Errorf("region config: master_key_file: %w", err)
	}
	dbCfg := cfg.Database
	dbCfg.MasterKey = mk
	db, err := store.Open(ctx, dbCfg)
	if err != nil {
		return nil, fmt.Errorf("region config: database: %w", err)
	}
	return db, nil
}
