package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/domicile/domicile/internal/sqltx"
)

// migration brings the schema from one version to the next, inside the
// transaction tx that also records the new version. It may be run again
// from the start if the transaction is retried.
type migration func(ctx context.Context, db *DB, tx *sql.Tx) error

// execs is a migration made of SQL statements run in order.
func execs(stmts ...string) migration {
	return func(ctx context.Context, _ *DB, tx *sql.Tx) error {
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return err
			}
		}
		return nil
	}
}

// Migrations, per dialect, in order: migration i brings the schema to
// version i+1. Append only; never edit one that has shipped.
//
// Version 3 replaces the plaintext users table of versions 1 and 2 with the
// encrypted layout, users_v3 (encryptUsers), and version 4 renames that to
// users: in a transaction of its own, so that no backend has to reuse the
// name of a table dropped in the same transaction (CockroachDB restricts
// that). Version 5 adds tokens, login failures and the audit log; version 6 the
// TOTP secrets and recovery codes; version 7 the consent records; version 8
// the passkeys (WebAuthn credentials) and the challenges of the ceremonies
// already answered (not personal data: no user id, kept until they expire);
// version 9 the OAuth/OpenID clients (not personal data either).
// Every table that holds a user's data references users(id)
// without ON DELETE CASCADE, so that DeleteUser, which deletes from each of
// them, fails loudly if a new one is not added to it.
var (
	sqliteMigrations = []migration{
		execs(`CREATE TABLE users (
			id            TEXT PRIMARY KEY,
			email         TEXT NOT NULL UNIQUE,
			password_hash TEXT NOT NULL,
			created_at    INTEGER NOT NULL -- Unix microseconds, UTC
		)`),
		execs(`ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT ''`),
		encryptUsers(`CREATE TABLE users_v3 (
			id             TEXT PRIMARY KEY,
			email_hash     BLOB NOT NULL UNIQUE, -- HMAC-SHA256 blind index of the normalised email
			email          BLOB NOT NULL,        -- sealed, as are name, password_hash and attributes
			name           BLOB NOT NULL,
			password_hash  BLOB NOT NULL,
			attributes     BLOB,                 -- sealed JSON object; NULL when there are none
			email_verified INTEGER NOT NULL DEFAULT 0,
			disabled       INTEGER NOT NULL DEFAULT 0,
			created_at     INTEGER NOT NULL      -- Unix microseconds, UTC
		)`),
		execs(`ALTER TABLE users_v3 RENAME TO users`),
		execs(
			`CREATE TABLE tokens (
				hash       BLOB PRIMARY KEY, -- SHA-256 of the token
				user_id    TEXT NOT NULL REFERENCES users (id),
				purpose    TEXT NOT NULL,
				created_at INTEGER NOT NULL,
				expires_at INTEGER NOT NULL
			)`,
			`CREATE INDEX tokens_user ON tokens (user_id, purpose)`,
			`CREATE TABLE login_failures (
				user_id TEXT NOT NULL REFERENCES users (id),
				at      INTEGER NOT NULL
			)`,
			`CREATE INDEX login_failures_user_at ON login_failures (user_id, at)`,
			`CREATE TABLE audit_log (
				seq       INTEGER PRIMARY KEY,
				subject   TEXT NOT NULL,
				event     BLOB NOT NULL, -- canonical JSON
				prev_hash BLOB NOT NULL,
				hash      BLOB NOT NULL  -- SHA-256(prev_hash || event)
			)`,
			`CREATE INDEX audit_log_subject ON audit_log (subject, seq)`,
			`CREATE TABLE audit_head (
				id   INTEGER PRIMARY KEY CHECK (id = 1),
				seq  INTEGER NOT NULL,
				hash BLOB NOT NULL
			)`,
			`INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32))`,
		),
		execs(
			`CREATE TABLE totp (
				user_id   TEXT PRIMARY KEY REFERENCES users (id),
				secret    BLOB NOT NULL,              -- sealed with the user's key
				confirmed INTEGER NOT NULL DEFAULT 0,
				last_step INTEGER NOT NULL DEFAULT 0  -- the last time step accepted (no replay)
			)`,
			`CREATE TABLE recovery_codes (
				user_id   TEXT NOT NULL REFERENCES users (id),
				code_hash BLOB NOT NULL,              -- SHA-256 of the code
				PRIMARY KEY (user_id, code_hash)
			)`,
		),
		execs(
			`CREATE TABLE consent_records (
				user_id TEXT NOT NULL REFERENCES users (id),
				seq     INTEGER NOT NULL,             -- per user: 1, 2, 3, ...
				purpose TEXT NOT NULL,
				version INTEGER NOT NULL,
				granted INTEGER NOT NULL,
				at      INTEGER NOT NULL,
				PRIMARY KEY (user_id, seq)
			)`,
		),
		execs(
			`CREATE TABLE passkeys (
				id                 BLOB PRIMARY KEY,  -- credential id: looked up at login, not personal data
				user_id            TEXT NOT NULL REFERENCES users (id),
				name               BLOB NOT NULL,     -- sealed with the user's key
				public_key         BLOB NOT NULL,     -- COSE
				attestation_type   TEXT NOT NULL,
				attestation_format TEXT NOT NULL,
				aaguid             BLOB NOT NULL,
				sign_count         INTEGER NOT NULL,
				transports         TEXT NOT NULL,     -- comma-separated
				user_verified      INTEGER NOT NULL,
				backup_eligible    INTEGER NOT NULL,
				backup_state       INTEGER NOT NULL,
				created_at         INTEGER NOT NULL,
				last_used_at       INTEGER            -- NULL until the first login
			)`,
			`CREATE INDEX passkeys_user ON passkeys (user_id)`,
			`CREATE TABLE passkey_challenges (
				hash       BLOB PRIMARY KEY,          -- SHA-256 of an answered challenge
				expires_at INTEGER NOT NULL
			)`,
			`CREATE INDEX passkey_challenges_expiry ON passkey_challenges (expires_at)`,
		),
		execs(
			`CREATE TABLE oauth_clients (
				id          TEXT PRIMARY KEY,
				secret_hash BLOB,             -- SHA-256 of the generated secret; NULL for a public client
				metadata    TEXT NOT NULL,    -- JSON: redirect URIs, grant types, scopes, lifetimes
				created_at  INTEGER NOT NULL,
				updated_at  INTEGER NOT NULL
			)`,
		),
	}
	postgresMigrations = []migration{ // PostgreSQL and CockroachDB
		execs(`CREATE TABLE users (
			id            TEXT PRIMARY KEY,
			email         TEXT NOT NULL UNIQUE,
			password_hash TEXT NOT NULL,
			created_at    TIMESTAMPTZ NOT NULL
		)`),
		execs(`ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT ''`),
		encryptUsers(`CREATE TABLE users_v3 (
			id             TEXT PRIMARY KEY,
			email_hash     BYTEA NOT NULL UNIQUE,
			email          BYTEA NOT NULL,
			name           BYTEA NOT NULL,
			password_hash  BYTEA NOT NULL,
			attributes     BYTEA,
			email_verified BOOLEAN NOT NULL DEFAULT FALSE,
			disabled       BOOLEAN NOT NULL DEFAULT FALSE,
			created_at     TIMESTAMPTZ NOT NULL
		)`),
		execs(`ALTER TABLE users_v3 RENAME TO users`),
		execs(
			`CREATE TABLE tokens (
				hash       BYTEA PRIMARY KEY,
				user_id    TEXT NOT NULL REFERENCES users (id),
				purpose    TEXT NOT NULL,
				created_at TIMESTAMPTZ NOT NULL,
				expires_at TIMESTAMPTZ NOT NULL
			)`,
			`CREATE INDEX tokens_user ON tokens (user_id, purpose)`,
			`CREATE TABLE login_failures (
				user_id TEXT NOT NULL REFERENCES users (id),
				at      TIMESTAMPTZ NOT NULL
			)`,
			`CREATE INDEX login_failures_user_at ON login_failures (user_id, at)`,
			`CREATE TABLE audit_log (
				seq       BIGINT PRIMARY KEY,
				subject   TEXT NOT NULL,
				event     BYTEA NOT NULL,
				prev_hash BYTEA NOT NULL,
				hash      BYTEA NOT NULL
			)`,
			`CREATE INDEX audit_log_subject ON audit_log (subject, seq)`,
			`CREATE TABLE audit_head (
				id   INTEGER PRIMARY KEY CHECK (id = 1),
				seq  BIGINT NOT NULL,
				hash BYTEA NOT NULL
			)`,
			`INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))`,
		),
		execs(
			`CREATE TABLE totp (
				user_id   TEXT PRIMARY KEY REFERENCES users (id),
				secret    BYTEA NOT NULL,
				confirmed BOOLEAN NOT NULL DEFAULT FALSE,
				last_step BIGINT NOT NULL DEFAULT 0
			)`,
			`CREATE TABLE recovery_codes (
				user_id   TEXT NOT NULL REFERENCES users (id),
				code_hash BYTEA NOT NULL,
				PRIMARY KEY (user_id, code_hash)
			)`,
		),
		execs(
			`CREATE TABLE consent_records (
				user_id TEXT NOT NULL REFERENCES users (id),
				seq     BIGINT NOT NULL,
				purpose TEXT NOT NULL,
				version INTEGER NOT NULL,
				granted BOOLEAN NOT NULL,
				at      TIMESTAMPTZ NOT NULL,
				PRIMARY KEY (user_id, seq)
			)`,
		),
		execs(
			`CREATE TABLE passkeys (
				id                 BYTEA PRIMARY KEY,
				user_id            TEXT NOT NULL REFERENCES users (id),
				name               BYTEA NOT NULL,
				public_key         BYTEA NOT NULL,
				attestation_type   TEXT NOT NULL,
				attestation_format TEXT NOT NULL,
				aaguid             BYTEA NOT NULL,
				sign_count         BIGINT NOT NULL,
				transports         TEXT NOT NULL,
				user_verified      BOOLEAN NOT NULL,
				backup_eligible    BOOLEAN NOT NULL,
				backup_state       BOOLEAN NOT NULL,
				created_at         TIMESTAMPTZ NOT NULL,
				last_used_at       TIMESTAMPTZ
			)`,
			`CREATE INDEX passkeys_user ON passkeys (user_id)`,
			`CREATE TABLE passkey_challenges (
				hash       BYTEA PRIMARY KEY,
				expires_at TIMESTAMPTZ NOT NULL
			)`,
			`CREATE INDEX passkey_challenges_expiry ON passkey_challenges (expires_at)`,
		),
		execs(
			`CREATE TABLE oauth_clients (
				id          TEXT PRIMARY KEY,
				secret_hash BYTEA,
				metadata    TEXT NOT NULL,
				created_at  TIMESTAMPTZ NOT NULL,
				updated_at  TIMESTAMPTZ NOT NULL
			)`,
		),
	}
)

// encryptUsers is migration 3: it creates the encrypted users table with
// createTable (as users_v3), gives every existing user a data key, copies
// their row into it sealed, and drops the plaintext table (migration 4
// renames users_v3 to users). The store's connections run with secure_delete on SQLite,
// so the dropped table's pages are overwritten, and Open checkpoints the WAL
// afterwards.
//
// The data keys are written to the key store outside the migration's
// transaction; a retried or failed migration leaves them in place and the
// next attempt reuses them.
func encryptUsers(createTable string) migration {
	return func(ctx context.Context, db *DB, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, createTable); err != nil {
			return err
		}
		type plainUser struct {
			id, email, name, passwordHash string
			created                       timeScanner
		}
		// Read them all first: a transaction's connection runs one query
		// at a time.
		rows, err := tx.QueryContext(ctx, `SELECT id, email, name, password_hash, created_at FROM users`)
		if err != nil {
			return err
		}
		var users []plainUser
		for rows.Next() {
			var u plainUser
			if err := rows.Scan(&u.id, &u.email, &u.name, &u.passwordHash, &u.created); err != nil {
				rows.Close()
				return err
			}
			users = append(users, u)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, p := range users {
			key, err := db.userKeyOrNew(ctx, p.id)
			if err != nil {
				return fmt.Errorf("user %s: %w", p.id, err)
			}
			u := User{ID: p.id, Email: NormalizeEmail(p.email), Name: p.name, PasswordHash: p.passwordHash, CreatedAt: p.created.t}
			r, err := db.sealUser(key, u)
			if err != nil {
				return fmt.Errorf("user %s: %w", p.id, err)
			}
			_, err = tx.ExecContext(ctx,
				`INSERT INTO users_v3 (id, email_hash, email, name, password_hash, attributes, email_verified, disabled, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, r.args(db.d)...)
			if err != nil {
				return fmt.Errorf("user %s: %w", p.id, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DROP TABLE users`); err != nil {
			return err
		}
		db.rewrotePlaintext = len(users) > 0
		return nil
	}
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version INTEGER PRIMARY KEY
)`

// migrate applies the migrations the database has not seen, each in its own
// transaction together with the row that records it, up to version upTo
// (all of them when upTo is negative).
func (db *DB) migrate(ctx context.Context, upTo int) error {
	run := *db.tx
	if db.d.lockMigrations != "" {
		// Under SERIALIZABLE the snapshot would be taken before the lock
		// is granted, hiding what the previous holder committed; READ
		// COMMITTED gives each statement after the lock a fresh one.
		run.Isolation = sql.LevelReadCommitted
	}
	migrations := db.d.migrations
	current, err := db.schemaVersion(ctx, &run)
	if err != nil {
		return err
	}
	if current > len(migrations) {
		return fmt.Errorf("store: schema version %d is newer than this binary knows (%d): refusing to run an older release on it",
			current, len(migrations))
	}
	target := len(migrations)
	if upTo >= 0 && upTo < target {
		target = upTo
	}
	for i := current; i < target; i++ {
		version := i + 1
		err := run.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if err := db.lockMigrations(ctx, tx); err != nil {
				return err
			}
			// Another node may have applied it while we waited for the lock.
			var applied int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = $1", version).Scan(&applied); err != nil {
				return err
			}
			if applied > 0 {
				return nil
			}
			if err := migrations[i](ctx, db, tx); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", version)
			return err
		})
		if err != nil {
			return fmt.Errorf("store: migrate to version %d: %w", version, err)
		}
	}
	return nil
}

// schemaVersion creates schema_migrations if needed and returns the highest
// version applied (0 for a new database).
func (db *DB) schemaVersion(ctx context.Context, run *sqltx.Runner) (int, error) {
	var version int
	err := run.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := db.lockMigrations(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, createMigrationsTable); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&version)
	})
	if err != nil {
		return 0, fmt.Errorf("store: read schema version: %w", err)
	}
	return version, nil
}

func (db *DB) lockMigrations(ctx context.Context, tx *sql.Tx) error {
	if db.d.lockMigrations == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, db.d.lockMigrations)
	return err
}
