package sqltx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
)

// Flavor is the SQL database behind a *sql.DB. It decides how transactions
// are retried.
type Flavor int

// The flavors a Runner knows.
const (
	SQLite Flavor = iota
	Postgres
	Cockroach
)

// String returns the lower-case name of the flavor ("sqlite", "postgres",
// "cockroach").
func (f Flavor) String() string {
	switch f {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	case Cockroach:
		return "cockroach"
	}
	return fmt.Sprintf("Flavor(%d)", int(f))
}

// DefaultMaxAttempts is used when Runner.MaxAttempts is zero or negative.
const DefaultMaxAttempts = 10

// ErrGaveUp is wrapped, together with the last retryable error, by the error
// Tx returns when every attempt lost a race.
var ErrGaveUp = errors.New("sqltx: gave up retrying")

// Backoff between attempts: exponential from backoffBase, capped at
// backoffMax, each wait drawn uniformly from [d/2, d) so that the
// transactions that collided do not collide again in step.
const (
	backoffBase = 2 * time.Millisecond
	backoffMax  = 250 * time.Millisecond
)

// Runner runs transactions on DB. The zero values of the optional fields are
// usable: MaxAttempts defaults to DefaultMaxAttempts and Isolation to
// sql.LevelSerializable on PostgreSQL and CockroachDB (the driver default on
// SQLite, whose transactions are always serializable).
type Runner struct {
	DB          *sql.DB
	Flavor      Flavor
	MaxAttempts int
	Isolation   sql.IsolationLevel
	// OnRetry, if set, is called before each retry with the number of the
	// attempt that failed (1 for the first) and its error. It is called from
	// the goroutine that called Tx.
	OnRetry func(attempt int, err error)
}

// Tx runs fn in a transaction and commits it. When fn, any statement in it or
// the commit fails with an error for which IsRetryable is true, the
// transaction is rolled back and, after a jittered exponential backoff, run
// again from the start, up to MaxAttempts times in all; fn must therefore
// have no effects outside the transaction, and must return (or wrap with %w)
// the database's errors rather than swallow them.
//
// A nil error means the transaction committed. Any other error means it did
// not, except where the connection broke during COMMIT itself, which no
// client can tell apart. A non-retryable error is returned wrapped once;
// after the last attempt the error wraps ErrGaveUp and the last retryable
// error. If ctx ends while waiting to retry, the error wraps ctx.Err() and the
// last retryable error.
func (r *Runner) Tx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if r.Flavor == Cockroach {
		return r.crdbTx(ctx, fn)
	}
	maxAttempts := r.maxAttempts()
	for attempt := 1; ; attempt++ {
		stage, err := r.attempt(ctx, fn)
		if err == nil {
			return nil
		}
		if !IsRetryable(err) {
			return wrap(stage, err)
		}
		if attempt >= maxAttempts {
			return fmt.Errorf("%w after %d attempts: %w", ErrGaveUp, attempt, err)
		}
		if err := r.retryWait(ctx, attempt, err); err != nil {
			return err
		}
	}
}

// attempt runs fn once in a fresh transaction. stage names the step that
// failed: "begin", "" for fn itself, or "commit".
func (r *Runner) attempt(ctx context.Context, fn func(context.Context, *sql.Tx) error) (stage string, err error) {
	tx, err := r.DB.BeginTx(ctx, r.txOptions())
	if err != nil {
		return "begin", err
	}
	// Rolls back when fn fails or panics, before any backoff, so locks are
	// not held while waiting; after a Commit it is a no-op (sql.ErrTxDone).
	defer tx.Rollback()
	if err := fn(ctx, tx); err != nil {
		return "", err
	}
	if err := tx.Commit(); err != nil {
		return "commit", err
	}
	return "", nil
}

// crdbTx runs fn with crdb.ExecuteTx, which retries inside one transaction
// through CockroachDB's SAVEPOINT cockroach_restart. The wrapper adds what
// the loop in Tx gives the other flavors: OnRetry, backoff and MaxAttempts.
func (r *Runner) crdbTx(ctx context.Context, fn func(context.Context, *sql.Tx) error) error {
	maxAttempts := r.maxAttempts()
	var (
		attempt int
		last    error // what the previous fn call returned
	)
	// crdb's own limit is set above ours so that ours always decides.
	err := crdb.ExecuteTx(crdb.WithMaxRetries(ctx, maxAttempts), r.DB, r.txOptions(), func(tx *sql.Tx) error {
		attempt++
		if attempt > 1 {
			cause := last
			if cause == nil {
				// fn succeeded and RELEASE SAVEPOINT failed; crdb does not
				// show us that error, only that it was retryable.
				cause = errRetriedRelease
			}
			if attempt > maxAttempts {
				return &stopRetry{last: cause}
			}
			if err := r.retryWait(ctx, attempt-1, cause); err != nil {
				return &stopRetry{final: err}
			}
		}
		last = fn(ctx, tx)
		return last
	})
	if err == nil {
		return nil
	}
	var stop *stopRetry
	if errors.As(err, &stop) {
		if stop.final != nil {
			return stop.final
		}
		return fmt.Errorf("%w after %d attempts: %w", ErrGaveUp, maxAttempts, stop.last)
	}
	return wrap("", err)
}

var errRetriedRelease = errors.New("sqltx: retryable error at RELEASE SAVEPOINT cockroach_restart")

// stopRetry ends crdb.ExecuteTx's loop. It deliberately has no Unwrap: crdb
// would find the retryable SQLSTATE in the wrapped error and retry again.
type stopRetry struct {
	last  error // the last retryable error, when attempts ran out
	final error // the error to return as is, when ctx ended
}

func (e *stopRetry) Error() string { return "sqltx: stop retrying" }

// retryWait reports a failed attempt to OnRetry and waits before the next
// one. It returns an error, wrapping ctx.Err() and err, if ctx ends first.
func (r *Runner) retryWait(ctx context.Context, attempt int, err error) error {
	if r.OnRetry != nil {
		r.OnRetry(attempt, err)
	}
	// A context that already ended wins over a timer that fires at once
	// (select would pick either).
	if ctx.Err() == nil {
		timer := time.NewTimer(backoff(attempt))
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
		}
	}
	return fmt.Errorf("sqltx: waiting to retry: %w (after attempt %d: %w)", ctx.Err(), attempt, err)
}

// backoff returns the wait after the given failed attempt (1-based).
func backoff(attempt int) time.Duration {
	d := backoffMax
	if attempt < 16 { // beyond that the shift is above the cap anyway
		d = min(backoffBase<<(attempt-1), backoffMax)
	}
	return d/2 + rand.N(d/2)
}

func (r *Runner) maxAttempts() int {
	if r.MaxAttempts > 0 {
		return r.MaxAttempts
	}
	return DefaultMaxAttempts
}

func (r *Runner) txOptions() *sql.TxOptions {
	iso := r.Isolation
	if iso == sql.LevelDefault && r.Flavor != SQLite {
		iso = sql.LevelSerializable
	}
	if iso == sql.LevelDefault {
		return nil
	}
	return &sql.TxOptions{Isolation: iso}
}

// wrap adds the package, and the step when it was not fn, to err.
func wrap(stage string, err error) error {
	if stage == "" {
		return fmt.Errorf("sqltx: %w", err)
	}
	return fmt.Errorf("sqltx: %s: %w", stage, err)
}
