package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// DefaultPostgres is the PostgreSQL server tests use unless
// DOMICILE_TEST_POSTGRES names another.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresDSN returns a pgx DSN for a fresh, uniquely named schema that only
// this test uses: every connection opened with it has that schema as its
// search_path, so tests can create tables with plain names and run in
// parallel. The schema is dropped (CASCADE) by t.Cleanup; close the
// connections opened with the DSN in an earlier-registered cleanup or before
// the test ends.
//
// When the server is unreachable the test is skipped, or failed if CI=true.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := envOr("DOMICILE_TEST_POSTGRES", DefaultPostgres)
	where := redactDSN(base)

	admin, err := sql.Open("pgx", base)
	if err != nil {
		// A DSN that does not parse is a mistake in the environment, not a
		// missing service: never skip it.
		t.Fatalf("testenv: DOMICILE_TEST_POSTGRES: %v", err)
	}
	admin.SetMaxOpenConns(1) // it only creates and drops the schema
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		unavailable(t, "PostgreSQL", where, err)
	}

	schema := uniqueName(t, "test")
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("testenv: create schema %s on %s: %v", schema, where, err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		// <schema>_keys is where a region store keeps its key store by
		// default (region/store Config.KeysDSN).
		for _, s := range []string{schema, schema + "_keys"} {
			if _, err := admin.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+s+" CASCADE"); err != nil {
				t.Errorf("testenv: drop schema %s on %s: %v", s, where, err)
			}
		}
	})

	dsn, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("testenv: DOMICILE_TEST_POSTGRES: %v", err)
	}
	return dsn
}

// withSearchPath adds a search_path run-time parameter to dsn, which pgx sends
// in the startup message of every connection. It accepts both DSN forms pgx
// does: a URL and keyword=value pairs.
func withSearchPath(dsn, schema string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return fmt.Sprintf("%s search_path=%s", dsn, schema), nil
}

// redactDSN drops any password from a URL DSN so it can be printed.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return "the configured DOMICILE_TEST_POSTGRES"
	}
	return u.Redacted()
}
