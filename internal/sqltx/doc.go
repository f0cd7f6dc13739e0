// Package sqltx runs a database transaction and retries it, whole, when the
// database reports that it lost a race: a serialization failure (SQLSTATE
// 40001) or deadlock (40P01) on PostgreSQL and CockroachDB, SQLITE_BUSY or
// SQLITE_LOCKED on SQLite.
//
// Every write in a region's store goes through [Runner.Tx]. On PostgreSQL and
// SQLite the loop is BeginTx, fn, Commit, and the error of Commit is checked
// like any other: a commit that failed is never reported as a success, and a
// transaction is only retried when the database guarantees that it did not
// commit. github.com/cockroachdb/cockroach-go/v2/crdb.ExecuteTx is used only
// for CockroachDB, whose SAVEPOINT cockroach_restart protocol it speaks;
// PostgreSQL does not support that protocol.
package sqltx
