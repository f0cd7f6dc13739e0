package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/domicile/domicile/internal/sqltx"
)

// Migrations, per dialect, in order: migration i brings the schema to
// version i+1. Append only; never edit one that has shipped.
var (
	sqliteMigrations = []string{
		`CREATE TABLE users (
			id            TEXT PRIMARY KEY,
			email         TEXT NOT NULL UNIQUE,
			password_hash TEXT NOT NULL,
			created_at    INTEGER NOT NULL -- Unix microseconds, UTC
		)`,
		`ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT ''`,
	}
	postgresMigrations = []string{ // PostgreSQL and CockroachDB
		`CREATE TABLE users (
			id            TEXT PRIMARY KEY,
			email         TEXT NOT NULL UNIQUE,
			password_hash TEXT NOT NULL,
			created_at    TIMESTAMPTZ NOT NULL
		)`,
		`ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT ''`,
	}
)

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version INTEGER PRIMARY KEY
)`

// migrate applies the migrations the database has not seen, each in its own
// transaction together with the row that records it.
func (db *DB) migrate(ctx context.Context) error {
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
	for i := current; i < len(migrations); i++ {
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
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
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
