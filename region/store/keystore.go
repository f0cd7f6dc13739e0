package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/domicile/domicile/internal/sqltx"
)

// The key store's one table: a wrapped data key per user, and the id of the
// master key that wrapped it. Created with IF NOT EXISTS; a change to it
// needs a versioned migration like the main schema's.
const (
	sqliteKeyStoreTable = `CREATE TABLE IF NOT EXISTS %s (
		user_id    TEXT PRIMARY KEY,
		kek_id     TEXT NOT NULL,
		wrapped    BLOB NOT NULL,
		created_at INTEGER NOT NULL -- Unix microseconds, UTC
	)`
	postgresKeyStoreTable = `CREATE TABLE IF NOT EXISTS %s (
		user_id    TEXT PRIMARY KEY,
		kek_id     TEXT NOT NULL,
		wrapped    BYTEA NOT NULL,
		created_at TIMESTAMPTZ NOT NULL
	)`
)

// maxIdentifier is PostgreSQL's identifier length limit, in bytes.
const maxIdentifier = 63

// keyStore holds the users' wrapped data keys, apart from the main database
// (see Config). Its writes are their own transactions: the store never
// holds a main-database transaction open while it waits on the key store,
// except while migrating.
type keyStore struct {
	db    *sql.DB
	own   bool // db was opened for the key store, and Close closes it
	tx    *sqltx.Runner
	table string // quoted, schema-qualified where needed
	where string // names the key store in errors
	d     *dialect
}

// openKeyStore opens the key store cfg names (creating its table) next to
// main, the main database.
func openKeyStore(ctx context.Context, cfg Config, d *dialect, main *sql.DB) (_ *keyStore, err error) {
	k := &keyStore{d: d, table: "user_keys"}
	var createSchema string
	switch {
	case d.flavor == sqltx.SQLite:
		path := cfg.KeysDSN
		if strings.TrimSpace(path) == "" {
			path = cfg.DSN + ".keys"
		}
		if filepath.Clean(path) == filepath.Clean(cfg.DSN) {
			return nil, errors.New("store: keys_dsn: is the main database file: the key store must be a separate file")
		}
		if k.db, err = openSQLiteAs("keys_dsn", path); err != nil {
			return nil, err
		}
		k.own, k.where = true, path
	case strings.TrimSpace(cfg.KeysDSN) != "":
		if k.db, err = openPgxAs("keys_dsn", cfg.KeysDSN); err != nil {
			return nil, err
		}
		k.own, k.where = true, "keys_dsn"
	default:
		var current sql.NullString
		if err := main.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&current); err != nil {
			return nil, fmt.Errorf("store: key store: current schema: %w", err)
		}
		if !current.Valid || current.String == "" {
			return nil, errors.New("store: keys_dsn: the connection has no current schema (search_path) to name the key store's schema after: set keys_dsn")
		}
		schema := current.String + "_keys"
		if len(schema) > maxIdentifier {
			return nil, fmt.Errorf("store: keys_dsn: the default key store schema %q is longer than %d bytes: set keys_dsn", schema, maxIdentifier)
		}
		k.db = main
		k.table = pgx.Identifier{schema, "user_keys"}.Sanitize()
		k.where = "schema " + pgx.Identifier{schema}.Sanitize()
		createSchema = "CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize()
	}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	k.tx = &sqltx.Runner{DB: k.db, Flavor: d.flavor}
	if k.own {
		if err := ping(ctx, k.db); err != nil {
			return nil, fmt.Errorf("store: connect to key store %s: %w", k.where, err)
		}
	}
	setup := *k.tx
	if d.lockKeyStore != "" {
		// As for migrations: a fresh snapshot after the lock is granted.
		setup.Isolation = sql.LevelReadCommitted
	}
	err = setup.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if d.lockKeyStore != "" {
			if _, err := tx.ExecContext(ctx, d.lockKeyStore); err != nil {
				return err
			}
		}
		if createSchema != "" {
			if _, err := tx.ExecContext(ctx, createSchema); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf(d.keyStoreTable, k.table))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: create key store %s: %w", k.where, err)
	}
	return k, nil
}

func (k *keyStore) close() error {
	if k.own && k.db != nil {
		return k.db.Close()
	}
	return nil
}

// checkKEK refuses a key store whose data keys another master key wrapped.
func (k *keyStore) checkKEK(ctx context.Context, kekID string) error {
	var other bool
	err := k.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+k.table+` WHERE kek_id <> $1)`, kekID).Scan(&other)
	if err != nil {
		return fmt.Errorf("store: check key store %s: %w", k.where, err)
	}
	if other {
		return fmt.Errorf("store: database.master_key: data keys in key store %s were wrapped by another master key: wrong master key", k.where)
	}
	return nil
}

// empty reports whether the key store holds no key.
func (k *keyStore) empty(ctx context.Context) (bool, error) {
	var any bool
	if err := k.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+k.table+`)`).Scan(&any); err != nil {
		return false, fmt.Errorf("store: check key store %s: %w", k.where, err)
	}
	return !any, nil
}

// insert stores userID's wrapped key; it returns ErrDuplicate if the user
// has one.
func (k *keyStore) insert(ctx context.Context, userID, kekID string, wrapped []byte) error {
	return execOne(ctx, k.tx, ErrDuplicate,
		`INSERT INTO `+k.table+` (user_id, kek_id, wrapped, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		userID, kekID, wrapped, k.d.timeValue(time.Now().UTC().Truncate(time.Microsecond)))
}

// get returns userID's wrapped key, or ErrNotFound.
func (k *keyStore) get(ctx context.Context, userID string) ([]byte, error) {
	var wrapped []byte
	err := k.db.QueryRowContext(ctx, `SELECT wrapped FROM `+k.table+` WHERE user_id = $1`, userID).Scan(&wrapped)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return wrapped, err
}

// delete removes userID's key and reports whether there was one.
func (k *keyStore) delete(ctx context.Context, userID string) (bool, error) {
	err := execOne(ctx, k.tx, ErrNotFound, `DELETE FROM `+k.table+` WHERE user_id = $1`, userID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// newUserKey creates and stores a data key for a new user. Its error wraps
// ErrDuplicate when the user already has one.
func (db *DB) newUserKey(ctx context.Context, userID string) (dataKey, error) {
	key, wrapped, err := db.seal.newDataKey(userID)
	if err != nil {
		return dataKey{}, err
	}
	if err := db.keys.insert(ctx, userID, db.seal.kekID, wrapped); err != nil {
		if errors.Is(err, ErrDuplicate) {
			return dataKey{}, ErrDuplicate
		}
		return dataKey{}, fmt.Errorf("key store: %w", err)
	}
	return key, nil
}

// userKey returns userID's data key. Its error wraps ErrNotFound when there
// is none: no such user, or the user was deleted and the key shredded.
func (db *DB) userKey(ctx context.Context, userID string) (dataKey, error) {
	wrapped, err := db.keys.get(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return dataKey{}, fmt.Errorf("data key: %w", ErrNotFound)
	}
	if err != nil {
		return dataKey{}, fmt.Errorf("key store: %w", err)
	}
	return db.seal.unwrap(userID, wrapped)
}

// userKeyOrNew returns userID's data key, creating it if there is none. The
// plaintext migration uses it, so that a retried migration reuses the keys
// an earlier attempt stored.
func (db *DB) userKeyOrNew(ctx context.Context, userID string) (dataKey, error) {
	key, err := db.userKey(ctx, userID)
	if !errors.Is(err, ErrNotFound) {
		return key, err
	}
	key, err = db.newUserKey(ctx, userID)
	if errors.Is(err, ErrDuplicate) { // another node created it meanwhile
		return db.userKey(ctx, userID)
	}
	return key, err
}

// discardNewKey deletes the data key CreateUser stored for a user whose row
// it then failed to insert. It first checks that the row is indeed absent:
// a commit whose outcome the client could not see may have written it.
func (db *DB) discardNewKey(ctx context.Context, userID string) error {
	var n int
	if err := db.db.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE id = $1`, userID).Scan(&n); err != nil {
		return fmt.Errorf("discard data key: %w", err)
	}
	if n > 0 {
		return nil
	}
	if _, err := db.keys.delete(ctx, userID); err != nil {
		return fmt.Errorf("discard data key: %w", err)
	}
	return nil
}
