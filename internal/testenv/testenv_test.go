package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestPostgresDSNSchemaLifecycle(t *testing.T) {
	// The outer schema only gives the test a connection to check from
	// afterwards; it skips (or fails on CI) first when there is no server.
	base := PostgresDSN(t)

	var schema string
	t.Run("inside", func(t *testing.T) {
		db, err := sql.Open("pgx", PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		ctx := context.Background()
		if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			t.Fatalf("current_schema: %v", err)
		}
		if !strings.HasPrefix(schema, "test_") {
			t.Fatalf("current_schema() = %q, want the per-test schema test_...", schema)
		}
		// Unqualified names land in the test's schema.
		if _, err := db.ExecContext(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatalf("create table: %v", err)
		}
		var in string
		if err := db.QueryRowContext(ctx,
			"SELECT table_schema FROM information_schema.tables WHERE table_name = 't' AND table_schema = $1",
			schema).Scan(&in); err != nil {
			t.Fatalf("table t is not in schema %s: %v", schema, err)
		}
	})
	if schema == "" {
		t.Fatal("subtest did not report its schema")
	}

	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var n int
	if err := db.QueryRow("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("schema %s still exists after the test's cleanup", schema)
	}
}

func TestRedisPrefixCleanup(t *testing.T) {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: RedisAddr(t)})
	t.Cleanup(func() { client.Close() })
	outside := RedisPrefix(t) + "survivor"
	if err := client.Set(ctx, outside, "x", 0).Err(); err != nil {
		t.Fatal(err)
	}

	var keys []string
	t.Run("inside", func(t *testing.T) {
		prefix := RedisPrefix(t)
		if prefix == "" || strings.Contains(prefix, "*") {
			t.Fatalf("RedisPrefix = %q, want a non-empty literal prefix", prefix)
		}
		for i := range 250 { // more than one SCAN/UNLINK batch
			keys = append(keys, fmt.Sprintf("%sk%d", prefix, i))
		}
		for _, k := range keys {
			if err := client.Set(ctx, k, "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	})

	if n, err := client.Exists(ctx, keys...).Result(); err != nil || n != 0 {
		t.Fatalf("after cleanup %d of %d keys remain (err %v), want 0", n, len(keys), err)
	}
	if n, err := client.Exists(ctx, outside).Result(); err != nil || n != 1 {
		t.Fatalf("key outside the prefix: exists = %d (err %v), want 1", n, err)
	}
}

// recorder is a testing.TB that records Skipf/Fatalf instead of acting on the
// real test, so the unreachable-service policy can be asserted.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()        {}
func (r *recorder) Name() string   { return "TestRecorder" }
func (r *recorder) Cleanup(func()) {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUnreachablePolicy(t *testing.T) {
	tests := []struct {
		name      string
		env       string
		addr      string
		call      func(testing.TB) string
		ci        string
		wantSkip  bool
		wantInMsg string
	}{
		{"postgres local", "DOMICILE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:1/test?sslmode=disable", PostgresDSN, "", true, "SKIPPING: PostgreSQL not reachable at postgres://postgres@127.0.0.1:1/test"},
		{"postgres CI", "DOMICILE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:1/test?sslmode=disable", PostgresDSN, "true", false, "PostgreSQL not reachable at postgres://postgres@127.0.0.1:1/test"},
		{"redis local", "DOMICILE_TEST_REDIS", "127.0.0.1:1", RedisAddr, "", true, "SKIPPING: Redis not reachable at 127.0.0.1:1"},
		{"redis CI", "DOMICILE_TEST_REDIS", "127.0.0.1:1", RedisAddr, "true", false, "Redis not reachable at 127.0.0.1:1"},
		{"redis prefix CI", "DOMICILE_TEST_REDIS", "127.0.0.1:1", RedisPrefix, "true", false, "Redis not reachable at 127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.env, tt.addr)
			t.Setenv("CI", tt.ci)
			rec := &recorder{TB: t}
			done := make(chan string)
			go func() {
				var got string
				defer func() { done <- got }()
				got = tt.call(rec)
			}()
			if got := <-done; got != "" {
				t.Fatalf("returned %q for an unreachable service", got)
			}
			msg := rec.fatal
			if tt.wantSkip {
				msg = rec.skipped
				if rec.fatal != "" {
					t.Fatalf("failed (%q), want a skip without CI", rec.fatal)
				}
				if !strings.Contains(msg, "set CI=true to make this fatal") {
					t.Errorf("skip message %q does not say how to make it fatal", msg)
				}
			} else if rec.skipped != "" {
				t.Fatalf("skipped (%q), want a failure with CI=true", rec.skipped)
			}
			if !strings.Contains(msg, tt.wantInMsg) {
				t.Errorf("message %q does not contain %q", msg, tt.wantInMsg)
			}
		})
	}
}

func TestUniqueName(t *testing.T) {
	a, b := uniqueName(t, "test"), uniqueName(t, "test")
	if a == b {
		t.Fatalf("two calls returned the same name %q", a)
	}
	for _, name := range []string{a, b} {
		if len(name) > 63 {
			t.Errorf("%q is longer than PostgreSQL's 63-byte identifier limit", name)
		}
		if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("%q is not a plain lower-case identifier", name)
		}
	}
}

func TestWithSearchPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?search_path=s1&sslmode=disable"},
		{"postgresql://u@h/db", "postgresql://u@h/db?search_path=s1"},
		{"host=h user=u dbname=db", "host=h user=u dbname=db search_path=s1"},
	}
	for _, tt := range tests {
		got, err := withSearchPath(tt.in, "s1")
		if err != nil || got != tt.want {
			t.Errorf("withSearchPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
