package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Token is a single-use secret sent to a user, such as an email
// verification or password reset link. The store keeps only its SHA-256
// hash, so its table's contents cannot be used to redeem tokens.
type Token struct {
	// Hash is the SHA-256 of the secret token the user was sent.
	Hash   [32]byte
	UserID string
	// Purpose says what the token is for, e.g. "verify_email" or
	// "reset_password": 1 to 64 characters of [a-z0-9_]. A token is only
	// consumed for its own purpose.
	Purpose   string
	ExpiresAt time.Time
}

// TokenInfo describes a stored token without its hash (for exports).
type TokenInfo struct {
	Purpose   string    `json:"purpose"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateToken stores t. Its error wraps ErrNotFound when the user does not
// exist, ErrDuplicate when a token with the same hash does.
func (db *DB) CreateToken(ctx context.Context, t Token) error {
	switch {
	case t.Hash == [32]byte{}:
		return fmt.Errorf("store: create token for %s: hash: zero", t.UserID)
	case !validAttributeKey(t.Purpose):
		return fmt.Errorf("store: create token for %s: purpose %q: want 1 to 64 characters of [a-z0-9_]", t.UserID, truncate(t.Purpose, 64))
	case t.ExpiresAt.IsZero():
		return fmt.Errorf("store: create token for %s: expiry: zero", t.UserID)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := userExists(ctx, tx, t.UserID); err != nil {
			return err
		}
		return execTx(ctx, tx, ErrDuplicate,
			`INSERT INTO tokens (hash, user_id, purpose, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			t.Hash[:], t.UserID, t.Purpose, db.d.timeValue(now), db.d.timeValue(t.ExpiresAt.UTC().Truncate(time.Microsecond)))
	})
	if err != nil {
		return fmt.Errorf("store: create token for %s: %w", t.UserID, bare(err, ErrNotFound, ErrDuplicate))
	}
	return nil
}

// ConsumeToken redeems the token with the given hash for purpose and
// returns its user's id. It is atomic and single-use: the token is deleted
// in the same statement that reads it, so of any number of concurrent calls
// for one token exactly one succeeds. A token whose expiry is not after now
// is deleted too, and reported with an error wrapping ErrExpired; an
// unknown, already used or deleted token, or one for another purpose (which
// is left in place), with one wrapping ErrNotFound. A zero now means
// time.Now().
func (db *DB) ConsumeToken(ctx context.Context, hash [32]byte, purpose string, now time.Time) (string, error) {
	if now.IsZero() {
		now = time.Now()
	}
	var (
		userID  string
		expires timeScanner
	)
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx,
			`DELETE FROM tokens WHERE hash = $1 AND purpose = $2 RETURNING user_id, expires_at`,
			hash[:], purpose).Scan(&userID, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: consume token: %w", bare(err, ErrNotFound))
	}
	if !now.Before(expires.t) {
		return "", fmt.Errorf("store: consume token for %s: %w", userID, ErrExpired)
	}
	return userID, nil
}

// DeleteTokens deletes the user's tokens for purpose, or all of them when
// purpose is empty (after a password change, say). Deleting none is not an
// error.
func (db *DB) DeleteTokens(ctx context.Context, userID, purpose string) error {
	q, args := `DELETE FROM tokens WHERE user_id = $1 AND purpose = $2`, []any{userID, purpose}
	if purpose == "" {
		q, args = `DELETE FROM tokens WHERE user_id = $1`, []any{userID}
	}
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: delete tokens of %s: %w", userID, err)
	}
	return nil
}

// PurgeExpiredTokens deletes every token whose expiry is not after now and
// returns how many it deleted.
func (db *DB) PurgeExpiredTokens(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE expires_at <= $1`, db.d.timeValue(now.UTC()))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: purge expired tokens: %w", err)
	}
	return int(n), nil
}

// Failed logins are kept as one row per failure, at most MaxLoginFailures
// per user (the oldest go first), so that a lockout policy can count them
// over any window it likes: CountLoginFailures(id, now-15m) >= 5, say.
// A successful login clears them.

// MaxLoginFailures is how many of a user's most recent failed logins are
// kept; CountLoginFailures never returns more.
const MaxLoginFailures = 100

// RecordLoginFailure records a failed login for the user at at (now when
// zero). Its error wraps ErrNotFound when there is no such user.
func (db *DB) RecordLoginFailure(ctx context.Context, userID string, at time.Time) error {
	if at.IsZero() {
		at = time.Now()
	}
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := userExists(ctx, tx, userID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_failures (user_id, at) VALUES ($1, $2)`,
			userID, db.d.timeValue(at.UTC().Truncate(time.Microsecond))); err != nil {
			return err
		}
		// Keep the newest MaxLoginFailures (ties at the boundary may keep a
		// few more). With fewer rows the subquery is NULL and nothing goes.
		_, err := tx.ExecContext(ctx, `DELETE FROM login_failures WHERE user_id = $1 AND at <
			(SELECT at FROM login_failures WHERE user_id = $1 ORDER BY at DESC LIMIT 1 OFFSET $2)`,
			userID, MaxLoginFailures-1)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: record login failure for %s: %w", userID, bare(err, ErrNotFound))
	}
	return nil
}

// CountLoginFailures returns how many failed logins were recorded for the
// user at or after since (0 for an unknown user).
func (db *DB) CountLoginFailures(ctx context.Context, userID string, since time.Time) (int, error) {
	var n int
	err := db.db.QueryRowContext(ctx, `SELECT count(*) FROM login_failures WHERE user_id = $1 AND at >= $2`,
		userID, db.d.timeValue(since.UTC())).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: count login failures for %s: %w", userID, err)
	}
	return n, nil
}

// ClearLoginFailures forgets the user's failed logins.
func (db *DB) ClearLoginFailures(ctx context.Context, userID string) error {
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM login_failures WHERE user_id = $1`, userID)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: clear login failures for %s: %w", userID, err)
	}
	return nil
}

// userExists returns ErrNotFound unless there is a user with the given id.
func userExists(ctx context.Context, tx *sql.Tx, id string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE id = $1`, id).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// bare returns the first of sentinels err wraps, unwrapped from sqltx's
// "sqltx: " prefix, or err itself.
func bare(err error, sentinels ...error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}
