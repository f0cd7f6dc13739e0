// Package store is a region's SQL storage: the only place a user's personal
// data is written. One small API, [DB], runs on three backends chosen by
// [Config]: SQLite files (the embedded default for `domicile dev`, no cgo,
// nothing to install), PostgreSQL and CockroachDB (production, one database
// per residency zone).
//
// Every write goes through internal/sqltx, so transactions that lose a
// serialization race are retried whole and a failed commit is never reported
// as a success. Open migrates the schema forward from a versioned
// schema_migrations table; reopening is a no-op.
//
// Callers that only need users depend on the [Users] interface.
package store
