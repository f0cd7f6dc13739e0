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
	// ErrExpired is returned by ConsumeToken for a token past its expiry.
	ErrExpired = errors.New("expired")
)

// Config selects and locates the database and its key store.
//
// Personal data is stored encrypted with per-user data keys (see the package
// documentation). The data keys live, wrapped with MasterKey, in a key store
// that is kept apart from the main database so that it is not part of the
// same backups; deleting a user deletes their data key, after which every
// earlier copy of their rows is undecryptable. Where the key store is:
//
//   - sqlite: a second SQLite file, KeysDSN, by default DSN + ".keys" (for
//     example ./data/eu-west/region.db.keys). It holds one table, user_keys.
//   - postgres, cockroach: with KeysDSN empty, table user_keys in schema
//     "<current schema>_keys" of the same database (for example
//     public_keys.user_keys), created if missing. A schema-level dump
//     (pg_dump -n <schema>) of the main schema leaves it out; a cluster-level
//     backup (pg_basebackup, PITR, CockroachDB BACKUP of the database) does
//     not. To keep the keys out of those too, set KeysDSN to a connection
//     string for another database or server: the table user_keys is then
//     created in that connection's current schema.
type Config struct {
	// Driver is "sqlite", "postgres" or "cockroach".
	Driver string `yaml:"driver"`
	// DSN is a file path for sqlite (its directory is created if missing),
	// a pgx connection string (URL or key=value) otherwise.
	DSN string `yaml:"dsn"`
	// KeysDSN locates the key store: a file path for sqlite (default
	// DSN+".keys"), a pgx connection string for postgres and cockroach
	// (default: schema "<current schema>_keys" of DSN's database). See the
	// type's documentation.
	KeysDSN string `yaml:"keys_dsn"`
	// MasterKey is the region's key-encryption key: 32 random bytes,
	// required. It wraps the users' data keys and keys the email blind
	// index, so it must stay the same for the life of the data; it comes
	// from the secrets file, never from the configuration file.
	MasterKey []byte `yaml:"-"`
}

// DB is a region's database. It is safe for concurrent use.
type DB struct {
	db *sql.DB
	tx *sqltx.Runner
	// chain runs audit appends: READ COMMITTED on PostgreSQL, where the
	// audit_head row lock alone serialises them (see AppendAudit).
	chain *sqltx.Runner
	d     *dialect
	keys  *keyStore
	seal  *sealer
	// rewrotePlaintext is set by the migration that encrypted existing
	// plaintext rows.
	rewrotePlaintext bool
}

// Open connects to the database and the key store cfg names, checks that
// they answer and that MasterKey is the one the key store's data keys were
// wrapped with, and migrates the schema to the current version (encrypting
// the rows of a database written by a release that stored them in plain
// text).
func Open(ctx context.Context, cfg Config) (*DB, error) {
	return open(ctx, cfg, -1)
}

// open is Open, migrating only up to schema version upTo when it is not
// negative (for tests of the migrations).
func open(ctx context.Context, cfg Config, upTo int) (_ *DB, err error) {
	d, ok := dialects[cfg.Driver]
	if !ok {
		return nil, fmt.Errorf("store: driver: unknown %q (want sqlite, postgres or cockroach)", cfg.Driver)
	}
	if strings.TrimSpace(cfg.DSN) == "" {
		return nil, fmt.Errorf("store: dsn: empty (want %s)", d.dsnHelp)
	}
	seal, err := newSealer(cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	sqlDB, err := d.open(cfg.DSN)
	if err != nil {
		return nil, err
	}
	db := &DB{db: sqlDB, d: d, seal: seal, tx: &sqltx.Runner{DB: sqlDB, Flavor: d.flavor}}
	db.chain = db.tx
	if d.flavor == sqltx.Postgres {
		db.chain = &sqltx.Runner{DB: sqlDB, Flavor: d.flavor, Isolation: sql.LevelReadCommitted}
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	if err := ping(ctx, sqlDB); err != nil {
		return nil, fmt.Errorf("store: connect to %s: %w", d.flavor, err)
	}
	if db.keys, err = openKeyStore(ctx, cfg, d, sqlDB); err != nil {
		return nil, err
	}
	if err := db.keys.checkKEK(ctx, seal.kekID); err != nil {
		return nil, err
	}
	if err := db.migrate(ctx, upTo); err != nil {
		return nil, err
	}
	if upTo < 0 {
		if err := db.checkKeysPresent(ctx); err != nil {
			return nil, err
		}
	}
	if db.rewrotePlaintext {
		// Push the plaintext table's zeroed pages (secure_delete) into the
		// file and empty the WAL. Only then: a TRUNCATE checkpoint makes
		// other processes opening the file at the same moment fail with
		// SQLITE_BUSY.
		db.scrub(ctx)
	}
	return db, nil
}

// ping checks that db answers, retrying for a while when SQLite reports the
// file busy: setting up a new connection (journal_mode=WAL) can fail that
// way, without waiting for busy_timeout, while another process checkpoints.
func ping(ctx context.Context, db *sql.DB) error {
	const attempts = 20
	for i := 1; ; i++ {
		err := db.PingContext(ctx)
		if err == nil || !sqltx.IsRetryable(err) || i == attempts {
			return err
		}
		select {
		case <-time.After(time.Duration(i) * 10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		}
	}
}

// checkKeysPresent refuses a database with users whose key store holds no
// data key at all: the wrong key store, or a lost one. Every user's key is
// written before their row and deleted after it, so users without any key
// cannot otherwise happen.
func (db *DB) checkKeysPresent(ctx context.Context) error {
	var users bool
	if err := db.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM users)`).Scan(&users); err != nil {
		return fmt.Errorf("store: check key store: %w", err)
	}
	if !users {
		return nil
	}
	empty, err := db.keys.empty(ctx)
	if err != nil {
		return err
	}
	if empty {
		return fmt.Errorf("store: keys_dsn: key store %s holds no data keys but the database has users: wrong key store, or it was lost (the users' personal data cannot be decrypted)", db.keys.where)
	}
	return nil
}

// Flavor reports which database this is.
func (db *DB) Flavor() sqltx.Flavor { return db.d.flavor }

// Ping checks that the database and the key store answer.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping %s: %w", db.d.flavor, err)
	}
	if db.keys != nil && db.keys.own {
		if err := db.keys.db.PingContext(ctx); err != nil {
			return fmt.Errorf("store: ping key store: %w", err)
		}
	}
	return nil
}

// Close closes the connections to the database and the key store.
func (db *DB) Close() error {
	var errs []error
	if db.keys != nil {
		errs = append(errs, db.keys.close())
	}
	errs = append(errs, db.db.Close())
	return errors.Join(errs...)
}

// scrub makes SQLite's deleted content unrecoverable from the files: with
// secure_delete on, deleted cells and freed pages are overwritten with
// zeros, but earlier images of those pages stay in the -wal file until a
// checkpoint copies the WAL into the database and truncates it. It is best
// effort: a checkpoint that another process's reader keeps from completing
// is finished by a later one, and the content is encrypted anyway. It does
// nothing on PostgreSQL and CockroachDB, whose old row versions are
// reclaimed by VACUUM and garbage collection.
func (db *DB) scrub(ctx context.Context) {
	if db.d.flavor != sqltx.SQLite {
		return
	}
	checkpoint(ctx, db.db)
	if db.keys != nil {
		checkpoint(ctx, db.keys.db)
	}
}

func checkpoint(ctx context.Context, db *sql.DB) {
	var busy, log, done int
	_ = db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &log, &done)
}

// dialect is what differs between the backends.
type dialect struct {
	flavor  sqltx.Flavor
	dsnHelp string
	open    func(dsn string) (*sql.DB, error)
	// lockMigrations, if set, runs first in each migration transaction so
	// that two nodes starting at once apply each migration once.
	lockMigrations string
	// lockKeyStore, if set, does the same for creating the key store.
	lockKeyStore string
	migrations   []migration
	// keyStoreTable creates the key store's table; %s is its name.
	keyStoreTable string
	// forUpdate ends a SELECT that locks the rows it reads ("" on SQLite,
	// whose write transactions hold the database lock from BEGIN).
	forUpdate string
	// timeValue converts a timestamp for a created_at-like column.
	timeValue func(time.Time) any
}

var dialects = map[string]*dialect{
	"sqlite": {
		flavor:        sqltx.SQLite,
		dsnHelp:       "a file path such as ./data/region.db",
		open:          openSQLite,
		migrations:    sqliteMigrations,
		keyStoreTable: sqliteKeyStoreTable,
		// SQLite has no timestamp type: store Unix microseconds, which keep
		// the precision PostgreSQL has and sort as numbers.
		timeValue: func(t time.Time) any { return t.UnixMicro() },
	},
	"postgres": {
		flavor:         sqltx.Postgres,
		dsnHelp:        "a connection string such as postgres://user@host:5432/db",
		open:           openPgx,
		lockMigrations: "SELECT pg_advisory_xact_lock(7305316431)", // any constant shared by all nodes
		lockKeyStore:   "SELECT pg_advisory_xact_lock(7305316432)",
		migrations:     postgresMigrations,
		keyStoreTable:  postgresKeyStoreTable,
		forUpdate:      " FOR UPDATE",
		timeValue:      func(t time.Time) any { return t },
	},
	"cockroach": {
		flavor:        sqltx.Cockroach,
		dsnHelp:       "a connection string such as postgresql://root@host:26257/db",
		open:          openPgx,
		migrations:    postgresMigrations,
		keyStoreTable: postgresKeyStoreTable,
		forUpdate:     " FOR UPDATE",
		timeValue:     func(t time.Time) any { return t },
	},
}

// sqliteParams: WAL so readers never block the writer, a busy timeout so
// other processes' writers queue instead of failing, foreign keys enforced,
// secure_delete so deleted content is overwritten with zeros rather than
// left in free space, and BEGIN IMMEDIATE so a transaction takes the write
// lock up front rather than failing to upgrade a read lock.
const sqliteParams = "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=secure_delete(1)&_txlock=immediate"

func openSQLite(path string) (*sql.DB, error) { return openSQLiteAs("dsn", path) }

// openSQLiteAs opens the SQLite file at path; field names the setting it came
// from in errors.
func openSQLiteAs(field, path string) (*sql.DB, error) {
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: %s: %q: want a plain file path, without '?' or '#'", field, path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %s: %w", field, err)
	}
	db, err := sql.Open("sqlite", "file:"+path+sqliteParams)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", field, err)
	}
	// One connection: SQLite has one writer anyway, and a single
	// connection cannot deadlock with itself.
	db.SetMaxOpenConns(1)
	return db, nil
}

func openPgx(dsn string) (*sql.DB, error) { return openPgxAs("dsn", dsn) }

// openPgxAs opens a pool for the connection string dsn; field names the
// setting it came from in errors.
func openPgxAs(field, dsn string) (*sql.DB, error) {
	// Parsed here so a malformed DSN is a configuration error, not a
	// connection failure; pgx's message hides any password.
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", field, err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(25)
	db.SetMaxIdleConns(10)
	// Recycle connections so a failover or DNS change is picked up.
	db.SetConnMaxLifetime(30 * time.Minute)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}
