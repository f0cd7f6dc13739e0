package sqltx_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	_ "modernc.org/sqlite"

	"github.com/domicile/domicile/internal/sqltx"
)

// sqlStateError is a driver error that is not pgx's, like lib/pq's.
type sqlStateError string

func (e sqlStateError) Error() string    { return "sqlstate " + string(e) }
func (e sqlStateError) SQLState() string { return string(e) }

func TestIsRetryable(t *testing.T) {
	busy, constraint := sqliteErrors(t)
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("boom"), false},
		{"context canceled", context.Canceled, false},
		{"sql.ErrNoRows", sql.ErrNoRows, false},
		{"pgx serialization failure", &pgconn.PgError{Code: "40001"}, true},
		{"pgx deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"pgx unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"pgx query canceled", &pgconn.PgError{Code: "57014"}, false},
		{"wrapped pgx serialization failure", fmt.Errorf("transfer: %w", &pgconn.PgError{Code: "40001"}), true},
		{"doubly wrapped pgx deadlock", fmt.Errorf("a: %w", fmt.Errorf("b: %w", &pgconn.PgError{Code: "40P01"})), true},
		{"SQLState() serialization failure", sqlStateError("40001"), true},
		{"SQLState() deadlock", fmt.Errorf("x: %w", sqlStateError("40P01")), true},
		{"SQLState() syntax error", sqlStateError("42601"), false},
		{"joined with a retryable one", errors.Join(errors.New("x"), &pgconn.PgError{Code: "40001"}), true},
		{"sqlite busy", busy, true},
		{"wrapped sqlite busy", fmt.Errorf("insert: %w", busy), true},
		{"sqlite constraint", constraint, false},
		{"gave up, wrapping a serialization failure", fmt.Errorf("%w: %w", sqltx.ErrGaveUp, &pgconn.PgError{Code: "40001"}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sqltx.IsRetryable(tt.err); got != tt.want {
				t.Errorf("IsRetryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// sqliteErrors provokes a real SQLITE_BUSY (a second writer with no busy
// timeout while the first holds the write lock) and a real constraint error,
// since modernc's *sqlite.Error cannot be built outside its package.
func sqliteErrors(t *testing.T) (busy, constraint error) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "busy.db")
	first := openDB(t, "sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	second := openDB(t, "sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if _, err := first.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	tx, err := first.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO t (id) VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	busy = func() error { _, err := second.ExecContext(ctx, "INSERT INTO t (id) VALUES (2)"); return err }()
	if busy == nil {
		t.Fatal("second writer did not get SQLITE_BUSY")
	}
	constraint = func() error { _, err := tx.ExecContext(ctx, "INSERT INTO t (id) VALUES (1)"); return err }()
	if constraint == nil {
		t.Fatal("duplicate primary key was accepted")
	}
	return busy, constraint
}

func openDB(t testing.TB, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("ping %s: %v", driver, err)
	}
	return db
}

func TestFlavorString(t *testing.T) {
	tests := []struct {
		f    sqltx.Flavor
		want string
	}{
		{sqltx.SQLite, "sqlite"},
		{sqltx.Postgres, "postgres"},
		{sqltx.Cockroach, "cockroach"},
		{sqltx.Flavor(9), "Flavor(9)"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("Flavor(%d).String() = %q, want %q", int(tt.f), got, tt.want)
		}
	}
}
