package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/httpserver"
	"github.com/domicile/domicile/region"
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

	SecretsValue *Secrets             `yaml:"-"`
	HTTPListener net.Listener         `yaml:"-"`
	Logger       *slog.Logger         `yaml:"-"`
	Argon2       *region.Argon2Params `yaml:"-"`
}

// Region is a running regional node.
type Region struct {
	Name     string
	Server   *region.Server
	Store    *store.DB
	Sessions session.Store
	HTTP     *httpserver.Server
	closers  []func() error
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
	switch cfg.Sessions.Store {
	case "", "memory":
		m := session.NewMemory()
		r.Sessions = m
		r.closers = append(r.closers, func() error { m.Close(); return nil })
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
		r.closers = append(r.closers, rc.Close)
	default:
		return nil, fmt.Errorf("region config: sessions.store: unknown %q (want memory or redis)", cfg.Sessions.Store)
	}
	db, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("region config: database: %w", err)
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
	rcfg := region.Config{
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
	r.HTTP = httpserver.Start(ln, r.Server.Handler(), log)
	return r, nil
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
	return errors.Join(err, r.close())
}
