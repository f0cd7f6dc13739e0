package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/domicile/domicile/internal/sqltx"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region/store"
)

type backend struct {
	name   string
	flavor sqltx.Flavor
	// config returns the configuration of a new, empty database, with a
	// random master key and the default key store.
	config func(t *testing.T) store.Config
	// raw opens the same database behind the store's back.
	raw func(t *testing.T, cfg store.Config) *sql.DB
	// rawKeys opens the database that holds cfg's key store.
	rawKeys func(t *testing.T, cfg store.Config) *sql.DB
	// otherKeys returns a KeysDSN for a new, empty key store.
	otherKeys func(t *testing.T) string
}

func backends() []backend {
	return []backend{
		{
			name:   "sqlite",
			flavor: sqltx.SQLite,
			config: func(t *testing.T) store.Config {
				// A directory that does not exist yet: Open creates it.
				return store.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "data", "eu-west", "region.db"), MasterKey: newMasterKey(t)}
			},
			raw: func(t *testing.T, cfg store.Config) *sql.DB {
				return openRaw(t, "sqlite", "file:"+cfg.DSN+"?_pragma=busy_timeout(5000)")
			},
			rawKeys: func(t *testing.T, cfg store.Config) *sql.DB {
				path := cfg.KeysDSN
				if path == "" {
					path = cfg.DSN + ".keys"
				}
				return openRaw(t, "sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
			},
			otherKeys: func(t *testing.T) string { return filepath.Join(t.TempDir(), "other", "keys.db") },
		},
		{
			name:   "postgres",
			flavor: sqltx.Postgres,
			config: func(t *testing.T) store.Config {
				dsn := testenv.PostgresDSN(t)
				dropDefaultKeySchema(t, dsn)
				return store.Config{Driver: "postgres", DSN: dsn, MasterKey: newMasterKey(t)}
			},
			raw: func(t *testing.T, cfg store.Config) *sql.DB {
				return openRaw(t, "pgx", cfg.DSN)
			},
			rawKeys: func(t *testing.T, cfg store.Config) *sql.DB {
				if cfg.KeysDSN != "" {
					return openRaw(t, "pgx", cfg.KeysDSN)
				}
				return openRaw(t, "pgx", cfg.DSN)
			},
			// Another per-test schema: the key store's table goes into the
			// current schema of its connection.
			otherKeys: func(t *testing.T) string { return testenv.PostgresDSN(t) },
		},
	}
}

// dropDefaultKeySchema makes t's cleanup drop the default key store schema,
// "<current schema>_keys", that Open creates next to the per-test schema
// testenv drops. It runs after the stores opened later in the test are
// closed, and before testenv drops the main schema.
func dropDefaultKeySchema(t *testing.T, dsn string) {
	t.Helper()
	t.Cleanup(func() {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Errorf("drop key schema: %v", err)
			return
		}
		defer db.Close()
		var schema string
		if err := db.QueryRow("SELECT current_schema()").Scan(&schema); err != nil {
			t.Errorf("drop key schema: %v", err)
			return
		}
		if _, err := db.Exec("DROP SCHEMA IF EXISTS " + pgx.Identifier{schema + "_keys"}.Sanitize() + " CASCADE"); err != nil {
			t.Errorf("drop key schema: %v", err)
		}
	})
}

func newMasterKey(t testing.TB) []byte {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return key
}

func openRaw(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openStore(t *testing.T, cfg store.Config) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.Driver, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestStore(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			cfg := b.config(t)
			db := openStore(t, cfg)
			if got := db.Flavor(); got != b.flavor {
				t.Errorf("Flavor() = %v, want %v", got, b.flavor)
			}
			if err := db.Ping(context.Background()); err != nil {
				t.Errorf("Ping: %v", err)
			}
			t.Run("users", func(t *testing.T) { testUsers(t, db) })
			t.Run("profile", func(t *testing.T) { testProfile(t, db) })
			t.Run("login state", func(t *testing.T) { testLoginState(t, db) })
			t.Run("tokens", func(t *testing.T) { testTokens(t, db) })
			t.Run("login failures", func(t *testing.T) { testLoginFailures(t, db) })
			t.Run("mfa", func(t *testing.T) { testMFA(t, db) })
			t.Run("list users", func(t *testing.T) { testListUsers(t, db) })
			t.Run("consent", func(t *testing.T) { testConsent(t, db) })
			t.Run("passkeys", func(t *testing.T) { testPasskeys(t, db) })
			t.Run("challenges", func(t *testing.T) { testChallenges(t, db) })
			t.Run("clients", func(t *testing.T) { testClients(t, db) })
			t.Run("crypto-shredding", func(t *testing.T) { testShredding(t, b, cfg, db) })
			t.Run("export", func(t *testing.T) { testExport(t, db) })
			t.Run("audit", func(t *testing.T) { testAudit(t, b) })
			t.Run("key store", func(t *testing.T) { testKeyStore(t, b) })
			t.Run("plaintext migration", func(t *testing.T) { testPlaintextMigration(t, b, b.config(t)) })
			t.Run("reopen", func(t *testing.T) { testReopen(t, b, b.config(t)) })
			t.Run("concurrent open", func(t *testing.T) { testConcurrentOpen(t, b, b.config(t)) })
			t.Run("newer schema", func(t *testing.T) { testNewerSchema(t, b, b.config(t)) })
		})
	}
}

// testUsers is the behaviour every backend must have. Each case uses its own
// ids and emails, so they share one database.
func testUsers(t *testing.T, users store.Users) {
	ctx := context.Background()
	created := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))

	mustCreate := func(t *testing.T, u store.User) {
		t.Helper()
		if err := users.CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser(%s): %v", u.ID, err)
		}
	}
	wantUser := func(t *testing.T, email string, want store.User) {
		t.Helper()
		got, err := users.UserByEmail(ctx, email)
		if err != nil {
			t.Fatalf("UserByEmail: %v", err)
		}
		if got.ID != want.ID || got.Email != want.Email || got.PasswordHash != want.PasswordHash || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("UserByEmail = %+v, want %+v", got, want)
		}
		if got.CreatedAt.Location() != time.UTC {
			t.Errorf("CreatedAt is in %v, want UTC", got.CreatedAt.Location())
		}
	}
	wantErr := func(t *testing.T, err, target error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Fatalf("error = %v, want %v", err, target)
		}
	}

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"create and read back, email normalised, time kept to the microsecond in UTC", func(t *testing.T) {
			mustCreate(t, store.User{ID: "u-roundtrip", Email: "  Alice@Example.COM ", PasswordHash: "$argon2id$h1", CreatedAt: created})
			want := store.User{ID: "u-roundtrip", Email: "alice@example.com", PasswordHash: "$argon2id$h1",
				CreatedAt: created.UTC().Truncate(time.Microsecond)}
			for _, email := range []string{"alice@example.com", "ALICE@example.com", " alice@EXAMPLE.com\t"} {
				wantUser(t, email, want)
			}
		}},
		{"zero CreatedAt becomes now", func(t *testing.T) {
			before := time.Now().Truncate(time.Microsecond)
			mustCreate(t, store.User{ID: "u-now", Email: "now@example.com", PasswordHash: "h"})
			after := time.Now()
			got, err := users.UserByEmail(ctx, "now@example.com")
			if err != nil {
				t.Fatal(err)
			}
			if got.CreatedAt.Before(before) || got.CreatedAt.After(after) {
				t.Fatalf("CreatedAt = %v, want between %v and %v", got.CreatedAt, before, after)
			}
		}},
		{"duplicate email, whatever its case", func(t *testing.T) {
			mustCreate(t, store.User{ID: "u-dup-1", Email: "dup@example.com", PasswordHash: "first"})
			err := users.CreateUser(ctx, store.User{ID: "u-dup-2", Email: " DUP@example.com", PasswordHash: "second"})
			wantErr(t, err, store.ErrDuplicate)
			if strings.Contains(strings.ToLower(err.Error()), "dup@example.com") {
				t.Errorf("error %q reveals the email", err)
			}
			// The first user is untouched.
			if got := mustGet(t, users, "dup@example.com"); got.ID != "u-dup-1" || got.PasswordHash != "first" {
				t.Fatalf("after the duplicate, UserByEmail = %+v, want u-dup-1 with hash \"first\"", got)
			}
		}},
		{"duplicate id", func(t *testing.T) {
			mustCreate(t, store.User{ID: "u-dup-id", Email: "id1@example.com", PasswordHash: "h"})
			wantErr(t, users.CreateUser(ctx, store.User{ID: "u-dup-id", Email: "id2@example.com", PasswordHash: "h"}), store.ErrDuplicate)
			_, err := users.UserByEmail(ctx, "id2@example.com")
			wantErr(t, err, store.ErrNotFound)
		}},
		{"not found", func(t *testing.T) {
			u, err := users.UserByEmail(ctx, "nobody@example.com")
			wantErr(t, err, store.ErrNotFound)
			if !reflect.DeepEqual(u, store.User{}) {
				t.Errorf("UserByEmail returned %+v with ErrNotFound, want the zero User", u)
			}
		}},
		{"delete, then the email is free again", func(t *testing.T) {
			mustCreate(t, store.User{ID: "u-del", Email: "del@example.com", PasswordHash: "h"})
			if err := users.DeleteUser(ctx, "u-del"); err != nil {
				t.Fatalf("DeleteUser: %v", err)
			}
			_, err := users.UserByEmail(ctx, "del@example.com")
			wantErr(t, err, store.ErrNotFound)
			wantErr(t, users.DeleteUser(ctx, "u-del"), store.ErrNotFound)
			mustCreate(t, store.User{ID: "u-del-2", Email: "del@example.com", PasswordHash: "h"})
		}},
		{"invalid users are refused", func(t *testing.T) {
			for _, u := range []store.User{
				{Email: "a@example.com", PasswordHash: "h"},
				{ID: "u-inv", Email: "  ", PasswordHash: "h"},
				{ID: "u-inv", Email: "inv@example.com"},
			} {
				err := users.CreateUser(ctx, u)
				if err == nil || errors.Is(err, store.ErrDuplicate) {
					t.Errorf("CreateUser(%+v) = %v, want a validation error", u, err)
				}
			}
			_, err := users.UserByEmail(ctx, "inv@example.com")
			wantErr(t, err, store.ErrNotFound)
		}},
		{"count", func(t *testing.T) {
			before, err := users.CountUsers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				mustCreate(t, store.User{ID: fmt.Sprintf("u-count-%d", i), Email: fmt.Sprintf("count%d@example.com", i), PasswordHash: "h"})
			}
			if err := users.DeleteUser(ctx, "u-count-0"); err != nil {
				t.Fatal(err)
			}
			after, err := users.CountUsers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after != before+2 {
				t.Fatalf("CountUsers = %d after adding 3 and deleting 1 to %d, want %d", after, before, before+2)
			}
		}},
		{"concurrent sign-ups with one email: exactly one wins", func(t *testing.T) {
			const n = 8
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					errs[i] = users.CreateUser(ctx, store.User{ID: fmt.Sprintf("u-race-%d", i), Email: "race@example.com", PasswordHash: "h"})
				})
			}
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, store.ErrDuplicate):
					t.Errorf("CreateUser #%d: %v, want nil or ErrDuplicate", i, err)
				}
			}
			if won != 1 {
				t.Fatalf("%d of %d concurrent CreateUser calls succeeded, want 1", won, n)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func mustGet(t *testing.T, users store.Users, email string) store.User {
	t.Helper()
	u, err := users.UserByEmail(context.Background(), email)
	if err != nil {
		t.Fatalf("UserByEmail: %v", err)
	}
	return u
}

// testReopen: data survives Close and Open, and running the migrations again
// changes nothing.
func testReopen(t *testing.T, b backend, cfg store.Config) {
	ctx := context.Background()
	for round := range 3 {
		db, err := store.Open(ctx, cfg)
		if err != nil {
			t.Fatalf("open #%d: %v", round+1, err)
		}
		if round == 0 {
			if err := db.CreateUser(ctx, store.User{ID: "u-keep", Email: "keep@example.com", PasswordHash: "h"}); err != nil {
				t.Fatal(err)
			}
		}
		if u, err := db.UserByEmail(ctx, "keep@example.com"); err != nil || u.ID != "u-keep" {
			t.Fatalf("open #%d: UserByEmail = %+v, %v; want u-keep", round+1, u, err)
		}
		if n, err := db.CountUsers(ctx); err != nil || n != 1 {
			t.Fatalf("open #%d: CountUsers = %d, %v; want 1", round+1, n, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := db.Ping(ctx); err == nil {
			t.Fatal("Ping after Close succeeded")
		}
	}
	wantMigrations(t, b.raw(t, cfg), store.MigrationCount(cfg.Driver))
}

// testConcurrentOpen: region nodes starting together apply each migration
// once and all come up.
func testConcurrentOpen(t *testing.T, b backend, cfg store.Config) {
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			db, err := store.Open(context.Background(), cfg)
			if err == nil {
				err = db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open #%d: %v", i, err)
		}
	}
	wantMigrations(t, b.raw(t, cfg), store.MigrationCount(cfg.Driver))
}

func wantMigrations(t *testing.T, raw *sql.DB, want int) {
	t.Helper()
	var count, maxVersion int
	if err := raw.QueryRow("SELECT count(*), COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&count, &maxVersion); err != nil {
		t.Fatal(err)
	}
	if count != want || maxVersion != want {
		t.Fatalf("schema_migrations has %d rows up to version %d, want %d up to %d", count, maxVersion, want, want)
	}
}

// testNewerSchema: an older binary refuses a database a newer one migrated.
func testNewerSchema(t *testing.T, b backend, cfg store.Config) {
	openStore(t, cfg).Close()
	newer := store.MigrationCount(cfg.Driver) + 1
	if _, err := b.raw(t, cfg).Exec("INSERT INTO schema_migrations (version) VALUES ($1)", newer); err != nil {
		t.Fatal(err)
	}
	_, err := store.Open(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("schema version %d is newer", newer)) {
		t.Fatalf("Open = %v, want a refusal naming schema version %d", err, newer)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	key := newMasterKey(t)
	tests := []struct {
		name string
		cfg  store.Config
		want string // prefix of the error
	}{
		{"unknown driver", store.Config{Driver: "mysql", DSN: "x"}, `store: driver: unknown "mysql" (want sqlite, postgres or cockroach)`},
		{"no driver", store.Config{DSN: "x"}, `store: driver: unknown "" (want sqlite, postgres or cockroach)`},
		{"sqlite without path", store.Config{Driver: "sqlite"}, "store: dsn: empty (want a file path"},
		{"postgres without DSN", store.Config{Driver: "postgres", DSN: " "}, "store: dsn: empty (want a connection string"},
		{"sqlite path with a query", store.Config{Driver: "sqlite", DSN: filepath.Join(dir, "x.db?mode=ro"), MasterKey: key}, "store: dsn: "},
		{"sqlite directory cannot be created", store.Config{Driver: "sqlite", DSN: filepath.Join(file, "x.db"), MasterKey: key}, "store: dsn: "},
		{"postgres DSN does not parse", store.Config{Driver: "postgres", DSN: "postgres://h:notaport/db", MasterKey: key}, "store: dsn: "},
		{"postgres unreachable", store.Config{Driver: "postgres", DSN: "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2", MasterKey: key}, "store: connect to postgres: "},
		{"no master key", store.Config{Driver: "sqlite", DSN: filepath.Join(dir, "nokey.db")}, "store: database.master_key: required"},
		{"short master key", store.Config{Driver: "sqlite", DSN: filepath.Join(dir, "nokey.db"), MasterKey: key[:16]}, "store: database.master_key: want 32 bytes, got 16"},
		{"keys file is the database", store.Config{Driver: "sqlite", DSN: filepath.Join(dir, "same.db"), KeysDSN: filepath.Join(dir, ".", "same.db"), MasterKey: key}, "store: keys_dsn: is the main database file"},
		{"keys file path with a query", store.Config{Driver: "sqlite", DSN: filepath.Join(dir, "k.db"), KeysDSN: filepath.Join(dir, "k.keys?mode=ro"), MasterKey: key}, "store: keys_dsn: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := store.Open(context.Background(), tt.cfg)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%+v) succeeded", tt.cfg)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Open(%+v) = %q, want prefix %q", tt.cfg, err, tt.want)
			}
		})
	}
}
