package sqltx_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/domicile/domicile/internal/sqltx"
	"github.com/domicile/domicile/internal/testenv"
)

// sqliteDSN is the DSN the store uses too: WAL so readers do not block the
// writer, a busy timeout so writers queue, foreign keys enforced.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)"
}

type backend struct {
	name   string
	flavor sqltx.Flavor
	open   func(t *testing.T) *sql.DB
}

func backends() []backend {
	return []backend{
		{"sqlite", sqltx.SQLite, func(t *testing.T) *sql.DB {
			return openDB(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "tx.db")))
		}},
		{"postgres", sqltx.Postgres, func(t *testing.T) *sql.DB {
			return openDB(t, "pgx", testenv.PostgresDSN(t))
		}},
		// CockroachDB is not available here; running the Cockroach flavor on
		// PostgreSQL checks the wiring around crdb.ExecuteTx (OnRetry,
		// MaxAttempts, errors) with retryable errors that fn makes up.
		{"cockroach flavor on postgres", sqltx.Cockroach, func(t *testing.T) *sql.DB {
			return openDB(t, "pgx", testenv.PostgresDSN(t))
		}},
	}
}

const runnerSchema = `
CREATE TABLE items (k TEXT NOT NULL);
CREATE TABLE parents (id INTEGER PRIMARY KEY);
CREATE TABLE children (parent_id INTEGER NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)`

func createSchema(t *testing.T, db *sql.DB, schema string) {
	t.Helper()
	for stmt := range strings.SplitSeq(schema, ";") {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", strings.TrimSpace(stmt), err)
		}
	}
}

var (
	errBoom      = errors.New("boom")
	errSerialize = sqlStateError("40001")
)

func TestRunnerTx(t *testing.T) {
	type result struct {
		attempts int   // calls of fn
		retries  []int // attempts OnRetry was told about
	}
	tests := []struct {
		name        string
		maxAttempts int
		// fn runs after inserting the row (k = test name) in attempt n.
		fn          func(ctx context.Context, tx *sql.Tx, n int) error
		cancelRetry bool // cancel ctx from OnRetry
		panics      bool
		wantErr     []error // each must match errors.Is; nil means success
		wantPrefix  string  // of the error text
		wantRows    int
		want        result
		skipOn      sqltx.Flavor // with skipWhy set: the flavor the case does not hold for
		skipWhy     string
	}{
		{
			name:     "commits",
			fn:       func(context.Context, *sql.Tx, int) error { return nil },
			wantRows: 1,
			want:     result{attempts: 1},
		},
		{
			name:       "non-retryable error is returned wrapped once and rolled back",
			fn:         func(context.Context, *sql.Tx, int) error { return errBoom },
			wantErr:    []error{errBoom},
			wantPrefix: "sqltx: boom",
			want:       result{attempts: 1},
		},
		{
			name: "retryable error is retried and only the last attempt lands",
			fn: func(_ context.Context, _ *sql.Tx, n int) error {
				if n < 3 {
					return errSerialize
				}
				return nil
			},
			wantRows: 1,
			want:     result{attempts: 3, retries: []int{1, 2}},
		},
		{
			name:        "gives up after MaxAttempts with the last error",
			maxAttempts: 4,
			fn:          func(context.Context, *sql.Tx, int) error { return errSerialize },
			wantErr:     []error{sqltx.ErrGaveUp, errSerialize},
			wantPrefix:  "sqltx: gave up retrying after 4 attempts: sqlstate 40001",
			want:        result{attempts: 4, retries: []int{1, 2, 3}},
		},
		{
			name:        "context cancelled while waiting to retry",
			fn:          func(context.Context, *sql.Tx, int) error { return errSerialize },
			cancelRetry: true,
			wantErr:     []error{context.Canceled, errSerialize},
			wantPrefix:  "sqltx: waiting to retry: context canceled",
			want:        result{attempts: 1, retries: []int{1}},
		},
		{
			name: "failing commit is reported",
			fn: func(ctx context.Context, tx *sql.Tx, _ int) error {
				// A deferred foreign key is checked by COMMIT itself.
				_, err := tx.ExecContext(ctx, "INSERT INTO children (parent_id) VALUES (42)")
				return err
			},
			wantPrefix: "sqltx: commit: ",
			want:       result{attempts: 1},
			skipOn:     sqltx.Cockroach,
			skipWhy:    "crdb.ExecuteTx ignores the error of COMMIT; see TestCrdbOnPostgresLosesCommitErrors",
		},
		{
			name:     "panic rolls back and propagates",
			fn:       func(context.Context, *sql.Tx, int) error { panic(errBoom) },
			panics:   true,
			wantRows: 0,
			want:     result{attempts: 1},
		},
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			db := b.open(t)
			createSchema(t, db, runnerSchema)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if tt.skipWhy != "" && tt.skipOn == b.flavor {
						t.Skip(tt.skipWhy)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					var got result
					r := &sqltx.Runner{
						DB: db, Flavor: b.flavor, MaxAttempts: tt.maxAttempts,
						OnRetry: func(attempt int, err error) {
							if !sqltx.IsRetryable(err) {
								t.Errorf("OnRetry(%d, %v): error is not retryable", attempt, err)
							}
							got.retries = append(got.retries, attempt)
							if tt.cancelRetry {
								cancel()
							}
						},
					}
					var panicked any
					err := func() (err error) {
						defer func() { panicked = recover() }()
						return r.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
							got.attempts++
							if _, err := tx.ExecContext(ctx, "INSERT INTO items (k) VALUES ($1)", tt.name); err != nil {
								return err
							}
							return tt.fn(ctx, tx, got.attempts)
						})
					}()

					if (panicked != nil) != tt.panics {
						t.Fatalf("panicked = %v, want a panic: %v", panicked, tt.panics)
					}
					wantFail := len(tt.wantErr) > 0 || tt.wantPrefix != ""
					if !tt.panics && (err != nil) != wantFail {
						t.Fatalf("Tx() = %v, want failure: %v", err, wantFail)
					}
					for _, want := range tt.wantErr {
						if !errors.Is(err, want) {
							t.Errorf("Tx() = %v, want it to wrap %v", err, want)
						}
					}
					if tt.wantPrefix != "" && !strings.HasPrefix(err.Error(), tt.wantPrefix) {
						t.Errorf("Tx() = %q, want prefix %q", err, tt.wantPrefix)
					}
					if got.attempts != tt.want.attempts || !slices.Equal(got.retries, tt.want.retries) {
						t.Errorf("attempts %d, OnRetry %v; want %d, %v", got.attempts, got.retries, tt.want.attempts, tt.want.retries)
					}
					// A fresh context: the pool must still have a usable
					// connection (SQLite has one writer) after a panic.
					var rows int
					if err := db.QueryRowContext(context.Background(), "SELECT count(*) FROM items WHERE k = $1", tt.name).Scan(&rows); err != nil {
						t.Fatalf("count rows: %v", err)
					}
					if rows != tt.wantRows {
						t.Errorf("%d rows landed, want %d", rows, tt.wantRows)
					}
				})
			}
		})
	}
}

// TestCrdbOnPostgresLosesCommitErrors pins down why the Cockroach flavor
// must never be used on PostgreSQL: crdb.ExecuteTx treats RELEASE SAVEPOINT
// as the commit and ignores COMMIT's error, so a transaction PostgreSQL
// refuses at COMMIT is reported as a success. The Postgres flavor reports it.
func TestCrdbOnPostgresLosesCommitErrors(t *testing.T) {
	db := openDB(t, "pgx", testenv.PostgresDSN(t))
	createSchema(t, db, runnerSchema)
	ctx := context.Background()
	tests := []struct {
		flavor  sqltx.Flavor
		wantErr bool
	}{
		{sqltx.Postgres, true},
		{sqltx.Cockroach, false}, // the lie this test documents
	}
	for _, tt := range tests {
		t.Run(tt.flavor.String(), func(t *testing.T) {
			r := &sqltx.Runner{DB: db, Flavor: tt.flavor}
			err := r.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, "INSERT INTO items (k) VALUES ($1)", t.Name()); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, "INSERT INTO children (parent_id) VALUES (42)")
				return err
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Tx() = %v, want error: %v", err, tt.wantErr)
			}
			var rows int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM items WHERE k = $1", t.Name()).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if rows != 0 {
				t.Fatalf("%d rows landed from a transaction PostgreSQL refused", rows)
			}
		})
	}
}
