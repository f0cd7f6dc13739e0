package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // "sqlite" database/sql driver

	"github.com/domicile/domicile/internal/sqltx"
)

// Errors callers can test for with errors.Is. The store always returns them
// wrapped with what was looked for, e.g. "store: create user u1: already
// exists".
var (
	ErrNotFound  = errors.New("not found")
	ErrDuplicate = errors.New("already exists")
)

// Config selects and locates the database.
type Config struct {
	// Driver is "sqlite", "postgres" or "cockroach".
	Driver string
	// DSN is a file path for sqlite (its directory is created if missing),
	// a pgx connection string (URL or key=value) otherwise.
	DSN string
}

// DB is a region's database. It is safe for concurrent use.
type DB struct {
	db *sql.DB
	tx *sqltx.Runner
	d  *dialect
}

// Open connects to the database cfg names, checks that it answers, and
// migrates its schema to the current version.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	d, ok := dialects[cfg.Driver]
	if !ok {
		return nil, fmt.Errorf("store: driver: unknown %q (want sqlite, postgres or cockroach)", cfg.Driver)
	}
	if strings.TrimSpace(cfg.DSN) == "" {
		return nil, fmt.Errorf("store: dsn: empty (want %s)", d.dsnHelp)
	}
	sqlDB, err := d.open(cfg.DSN)
	if err != nil {
		return nil, err
	}
	db := &DB{db: sqlDB, d: d, tx: &sqltx.Runner{DB: sqlDB, Flavor: d.flavor}}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", d.flavor, err)
	}
	if err := db.migrate(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	return db, nil
}

// Flavor reports which database this is.
func (db *DB) Flavor() sqltx.Flavor { return db.d.flavor }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping %s: %w", db.d.flavor, err)
	}
	return nil
}

// Close closes the database's connections.
func (db *DB) Close() error { return db.db.Close() }

// dialect is what differs between the backends.
type dialect struct {
	flavor  sqltx.Flavor
	dsnHelp string
	open    func(dsn string) (*sql.DB, error)
	// lockMigrations, if set, runs first in each migration transaction so
	// that two nodes starting at once apply each migration once.
	lockMigrations string
	migrations     []string
	// timeValue converts a timestamp for a created_at-like column.
	timeValue func(time.Time) any
}

var dialects = map[string]*dialect{
	"sqlite": {
		flavor:     sqltx.SQLite,
		dsnHelp:    "a file path such as ./data/region.db",
		open:       openSQLite,
		migrations: sqliteMigrations,
		// SQLite has no timestamp type: store Unix microseconds, which keep
		// the precision PostgreSQL has and sort as numbers.
		timeValue: func(t time.Time) any { return t.UnixMicro() },
	},
	"postgres": {
		flavor:         sqltx.Postgres,
		dsnHelp:        "a connection string such as postgres://user@host:5432/db",
		open:           openPgx,
		lockMigrations: "SELECT pg_advisory_xact_lock(7305316431)", // any constant shared by all nodes
		migrations:     postgresMigrations,
		timeValue:      func(t time.Time) any { return t },
	},
	"cockroach": {
		flavor:     sqltx.Cockroach,
		dsnHelp:    "a connection string such as postgresql://root@host:26257/db",
		open:       openPgx,
		migrations: postgresMigrations,
		timeValue:  func(t time.Time) any { return t },
	},
}

// sqliteParams: WAL so readers never block the writer, a busy timeout so
// other processes' writers queue instead of failing, foreign keys enforced,
// and BEGIN IMMEDIATE so a transaction takes the write lock up front rather
// than failing to upgrade a read lock.
const sqliteParams = "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"

func openSQLite(path string) (*sql.DB, error) {
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: dsn: %q: want a plain file path, without '?' or '#'", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: dsn: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+sqliteParams)
	if err != nil {
		return nil, fmt.Errorf("store: dsn: %w", err)
	}
	// One connection: SQLite has one writer anyway, and a single
	// connection cannot deadlock with itself.
	db.SetMaxOpenConns(1)
	return db, nil
}

func openPgx(dsn string) (*sql.DB, error) {
	// Parsed here so a malformed DSN is a configuration error, not a
	// connection failure; pgx's message hides any password.
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: dsn: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(25)
	db.SetMaxIdleConns(10)
	// Recycle connections so a failover or DNS change is picked up.
	db.SetConnMaxLifetime(30 * time.Minute)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}
