package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrReplay is returned by UseTOTPStep for a time step at or before the
// last one accepted: a TOTP code is good once.
var ErrReplay = errors.New("code already used")

// TOTP is a user's time-based one-time password enrolment.
type TOTP struct {
	Secret    []byte // the shared secret (decrypted)
	Confirmed bool   // the user has proved they hold it
	LastStep  int64  // the last time step accepted
}

// SetTOTP stores (replacing any) the user's TOTP secret, sealed with their
// data key, unconfirmed.
func (db *DB) SetTOTP(ctx context.Context, userID string, secret []byte) error {
	key, err := db.userKey(ctx, userID)
	if err != nil {
		return fmt.Errorf("store: set totp %s: %w", userID, err)
	}
	ct, err := key.seal("totp_secret", secret)
	if err != nil {
		return fmt.Errorf("store: set totp %s: %w", userID, err)
	}
	err = db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM totp WHERE user_id = $1`, userID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO totp (user_id, secret, confirmed, last_step) VALUES ($1, $2, $3, 0)`, userID, ct, false)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set totp %s: %w", userID, err)
	}
	return nil
}

// TOTP returns the user's enrolment, or an error wrapping ErrNotFound.
func (db *DB) TOTP(ctx context.Context, userID string) (TOTP, error) {
	var t TOTP
	var ct []byte
	err := db.db.QueryRowContext(ctx, `SELECT secret, confirmed, last_step FROM totp WHERE user_id = $1`, userID).Scan(&ct, &t.Confirmed, &t.LastStep)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("store: totp %s: %w", userID, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("store: totp %s: %w", userID, err)
	}
	key, err := db.userKey(ctx, userID)
	if err != nil {
		return t, fmt.Errorf("store: totp %s: %w", userID, err)
	}
	if t.Secret, err = key.open("totp_secret", ct); err != nil {
		return t, fmt.Errorf("store: totp %s: %w", userID, err)
	}
	return t, nil
}

// UseTOTPStep records that a code of time step step was accepted, and
// confirms the enrolment. It fails with ErrReplay if that step (or a later
// one) was already used, so a code cannot be used twice even by two
// concurrent requests.
func (db *DB) UseTOTPStep(ctx context.Context, userID string, step int64) error {
	res, err := db.db.ExecContext(ctx, `UPDATE totp SET last_step = $2, confirmed = $3 WHERE user_id = $1 AND last_step < $2`, userID, step, true)
	if err != nil {
		return fmt.Errorf("store: use totp step %s: %w", userID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if _, terr := db.TOTP(ctx, userID); errors.Is(terr, ErrNotFound) {
			return terr
		}
		return fmt.Errorf("store: use totp step %s: %w", userID, ErrReplay)
	}
	return nil
}

// DeleteTOTP removes the user's TOTP enrolment and recovery codes.
func (db *DB) DeleteTOTP(ctx context.Context, userID string) error {
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, q := range []string{`DELETE FROM totp WHERE user_id = $1`, `DELETE FROM recovery_codes WHERE user_id = $1`} {
			if _, err := tx.ExecContext(ctx, q, userID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete totp %s: %w", userID, err)
	}
	return nil
}

// SetRecoveryCodes replaces the user's recovery codes (SHA-256 hashes of
// high-entropy codes; the codes themselves are shown once and not kept).
func (db *DB) SetRecoveryCodes(ctx context.Context, userID string, hashes [][32]byte) error {
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
			return err
		}
		for _, h := range hashes {
			if _, err := tx.ExecContext(ctx, `INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)`, userID, h[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set recovery codes %s: %w", userID, err)
	}
	return nil
}

// UseRecoveryCode consumes one recovery code: exactly once, even under
// concurrency. Unknown or used codes are ErrNotFound.
func (db *DB) UseRecoveryCode(ctx context.Context, userID string, hash [32]byte) error {
	if err := db.execOne(ctx, ErrNotFound, `DELETE FROM recovery_codes WHERE user_id = $1 AND code_hash = $2`, userID, hash[:]); err != nil {
		return fmt.Errorf("store: use recovery code %s: %w", userID, err)
	}
	return nil
}

// RecoveryCodesLeft is the number of unused recovery codes.
func (db *DB) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	var n int
	if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1`, userID).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: recovery codes %s: %w", userID, err)
	}
	return n, nil
}
