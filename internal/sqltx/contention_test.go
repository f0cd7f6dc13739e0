package sqltx_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/domicile/domicile/internal/sqltx"
	"github.com/domicile/domicile/internal/testenv"
)

// The contention tests move money between a few accounts from many
// goroutines, each transfer a read-then-write that loses updates unless the
// database serializes it, and check afterwards that what Tx reported matches
// what the database holds: no money created or destroyed, every transfer
// reported as committed is in the ledger, and no transfer reported as failed
// is. That last check is the one crdb.ExecuteTx fails on PostgreSQL.

const (
	contentionAccounts  = 5
	contentionBalance   = 1000
	contentionWorkers   = 8
	contentionTransfers = 1000 // in total, across the workers
)

type contentionResult struct {
	committed []string         // transfer ids Tx reported as committed
	failed    map[string]error // transfer ids Tx reported as failed
	retries   int64            // OnRetry calls
	// commitRetries counts serialization failures PostgreSQL reported from
	// COMMIT itself: the errors a retry loop that ignores Commit's error
	// would turn into transfers reported committed but never written.
	commitRetries int64
}

// isCommitTimeFailure reports whether err is PostgreSQL's serialization
// failure raised by COMMIT (SSI found the dangerous structure only then).
func isCommitTimeFailure(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && strings.Contains(pg.Detail, "during commit attempt")
}

func TestContentionPostgres(t *testing.T) {
	db := openDB(t, "pgx", testenv.PostgresDSN(t))
	db.SetMaxOpenConns(contentionWorkers + 2)
	// pg_sleep between the reads and the writes, and again before COMMIT,
	// keeps each transaction open long enough to collide reliably on two
	// cores, and with the audit read makes SSI fail some at COMMIT.
	res := runContention(t, db, sqltx.Postgres, "SELECT pg_sleep(0.001)")
	if res.retries == 0 {
		t.Errorf("no retries under contention: the test did not exercise the retry loop")
	}
	if res.commitRetries == 0 {
		t.Errorf("no serialization failure came from COMMIT: the test did not exercise the check of Commit's error")
	}
}

func TestContentionSQLite(t *testing.T) {
	db := openDB(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "contention.db")))
	db.SetMaxOpenConns(contentionWorkers)
	runContention(t, db, sqltx.SQLite, "")
}

func runContention(t *testing.T, db *sql.DB, flavor sqltx.Flavor, pause string) contentionResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createSchema(t, db, `
CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL);
CREATE TABLE ledger (
	transfer_id TEXT PRIMARY KEY,
	from_id INTEGER NOT NULL,
	to_id INTEGER NOT NULL,
	amount BIGINT NOT NULL
)`)
	for id := range contentionAccounts {
		if _, err := db.ExecContext(ctx, "INSERT INTO accounts (id, balance) VALUES ($1, $2)", id, contentionBalance); err != nil {
			t.Fatal(err)
		}
	}

	var retries, commitRetries atomic.Int64
	r := &sqltx.Runner{
		DB:     db,
		Flavor: flavor,
		// Generous, so that the run is about correctness rather than about
		// how often eight workers on five rows exhaust the default.
		MaxAttempts: 50,
		OnRetry: func(_ int, err error) {
			retries.Add(1)
			if isCommitTimeFailure(err) {
				commitRetries.Add(1)
			}
		},
	}
	pauseTx := func(ctx context.Context, tx *sql.Tx) error {
		if pause == "" {
			return nil
		}
		_, err := tx.ExecContext(ctx, pause)
		return err
	}
	transfer := func(ctx context.Context, id string, from, to int, amount int64) error {
		return r.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var fromBal, toBal int64
			if err := tx.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE id = $1", from).Scan(&fromBal); err != nil {
				return fmt.Errorf("read %d: %w", from, err)
			}
			if err := tx.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE id = $1", to).Scan(&toBal); err != nil {
				return fmt.Errorf("read %d: %w", to, err)
			}
			// An audit read of every row: with the writes of concurrent
			// transfers it forms read-write cycles that PostgreSQL's SSI
			// may only detect at COMMIT, so commit errors get exercised.
			var total int64
			if err := tx.QueryRowContext(ctx, "SELECT SUM(balance) FROM accounts").Scan(&total); err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			if total != contentionAccounts*contentionBalance {
				return fmt.Errorf("audit: sum of balances is %d inside a transaction", total)
			}
			if err := pauseTx(ctx, tx); err != nil {
				return err
			}
			// Writing back values computed in Go (not balance = balance - x)
			// loses updates unless the transaction is serialized.
			if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = $1 WHERE id = $2", fromBal-amount, from); err != nil {
				return fmt.Errorf("debit %d: %w", from, err)
			}
			if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = $1 WHERE id = $2", toBal+amount, to); err != nil {
				return fmt.Errorf("credit %d: %w", to, err)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO ledger (transfer_id, from_id, to_id, amount) VALUES ($1, $2, $3, $4)",
				id, from, to, amount); err != nil {
				return fmt.Errorf("ledger: %w", err)
			}
			return pauseTx(ctx, tx)
		})
	}

	var (
		mu  sync.Mutex
		res = contentionResult{failed: map[string]error{}}
		wg  sync.WaitGroup
	)
	start := time.Now()
	for w := range contentionWorkers {
		wg.Go(func() {
			for i := range contentionTransfers / contentionWorkers {
				from := rand.IntN(contentionAccounts)
				to := (from + 1 + rand.IntN(contentionAccounts-1)) % contentionAccounts
				id := fmt.Sprintf("w%d-t%d", w, i)
				err := transfer(ctx, id, from, to, int64(1+rand.IntN(50)))
				mu.Lock()
				if err != nil {
					res.failed[id] = err
				} else {
					res.committed = append(res.committed, id)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.retries, res.commitRetries = retries.Load(), commitRetries.Load()
	t.Logf("%s: %d transfers by %d workers on %d accounts in %v: %d committed, %d failed, %d retries",
		flavor, contentionTransfers, contentionWorkers, contentionAccounts, time.Since(start).Round(time.Millisecond),
		len(res.committed), len(res.failed), res.retries)
	if flavor == sqltx.Postgres {
		t.Logf("%d of the retries followed a serialization failure raised by COMMIT", res.commitRetries)
	}

	// Giving up after MaxAttempts is the only acceptable failure.
	for id, err := range res.failed {
		if !errors.Is(err, sqltx.ErrGaveUp) {
			t.Errorf("transfer %s: unexpected error: %v", id, err)
		}
	}
	if len(res.committed) == 0 {
		t.Fatal("no transfer committed")
	}

	var sum int64
	if err := db.QueryRowContext(ctx, "SELECT SUM(balance) FROM accounts").Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if want := int64(contentionAccounts * contentionBalance); sum != want {
		t.Errorf("sum of balances = %d, want %d: money was created or destroyed", sum, want)
	}

	// The ledger must hold exactly the committed transfers, and replaying it
	// must give every account's balance (which catches lost updates that
	// happen to cancel out in the sum).
	rows, err := db.QueryContext(ctx, "SELECT transfer_id, from_id, to_id, amount FROM ledger")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	inLedger := map[string]bool{}
	var replay [contentionAccounts]int64
	for i := range replay {
		replay[i] = contentionBalance
	}
	for rows.Next() {
		var (
			id       string
			from, to int
			amount   int64
		)
		if err := rows.Scan(&id, &from, &to, &amount); err != nil {
			t.Fatal(err)
		}
		inLedger[id] = true
		replay[from] -= amount
		replay[to] += amount
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range res.committed {
		if !inLedger[id] {
			t.Errorf("transfer %s was reported committed but is not in the ledger", id)
		}
	}
	for id, err := range res.failed {
		if inLedger[id] {
			t.Errorf("transfer %s was reported failed (%v) but is in the ledger", id, err)
		}
	}
	if len(inLedger) != len(res.committed) {
		t.Errorf("ledger has %d transfers, %d were reported committed", len(inLedger), len(res.committed))
	}

	balances, err := db.QueryContext(ctx, "SELECT id, balance FROM accounts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer balances.Close()
	for balances.Next() {
		var (
			id  int
			bal int64
		)
		if err := balances.Scan(&id, &bal); err != nil {
			t.Fatal(err)
		}
		if bal != replay[id] {
			t.Errorf("account %d: balance %d, ledger replay gives %d", id, bal, replay[id])
		}
	}
	if err := balances.Err(); err != nil {
		t.Fatal(err)
	}
	return res
}
