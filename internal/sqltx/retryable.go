package sqltx

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLSTATEs after which PostgreSQL and CockroachDB guarantee the transaction
// did not commit, and running it again may succeed.
const (
	sqlstateSerializationFailure = "40001"
	sqlstateDeadlockDetected     = "40P01"
)

// IsRetryable reports whether err, or an error it wraps, says the transaction
// lost a race with another one and can be run again from the start: SQLSTATE
// 40001 (serialization_failure) or 40P01 (deadlock_detected) from pgx or any
// driver whose errors have a SQLState() string method, or SQLITE_BUSY or
// SQLITE_LOCKED (with any extended code) from modernc.org/sqlite.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return retryableSQLState(pgErr.Code)
	}
	var stater interface{ SQLState() string }
	if errors.As(err, &stater) {
		return retryableSQLState(stater.SQLState())
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		// The driver turns on extended result codes; the primary code is
		// the low byte (SQLITE_BUSY_SNAPSHOT is SQLITE_BUSY | 2<<8).
		switch liteErr.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	return false
}

func retryableSQLState(code string) bool {
	return code == sqlstateSerializationFailure || code == sqlstateDeadlockDetected
}
