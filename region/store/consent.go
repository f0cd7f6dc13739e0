package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ConsentRecord is one grant or withdrawal of consent to a purpose, at the
// version of the purpose's text the user saw. Records are only appended;
// the current state is derived from them (the latest record per purpose).
type ConsentRecord struct {
	Seq     int64     `json:"seq"`
	Purpose string    `json:"purpose"`
	Version int       `json:"version"`
	Granted bool      `json:"granted"`
	At      time.Time `json:"at"`
}

// AppendConsent appends a consent record for the user and returns it with
// its sequence number. Purpose is 1 to 64 characters of [a-z0-9_]; version
// is at least 1. Its error wraps ErrNotFound when the user does not exist.
func (db *DB) AppendConsent(ctx context.Context, userID string, r ConsentRecord) (ConsentRecord, error) {
	if !validAttributeKey(r.Purpose) || r.Version < 1 {
		return r, fmt.Errorf("store: append consent for %s: purpose %q version %d: want [a-z0-9_]{1,64} and a version >= 1", userID, truncate(r.Purpose, 64), r.Version)
	}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	r.At = r.At.UTC().Truncate(time.Microsecond)
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := userExists(ctx, tx, userID); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM consent_records WHERE user_id = $1`, userID).Scan(&r.Seq); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO consent_records (user_id, seq, purpose, version, granted, at) VALUES ($1, $2, $3, $4, $5, $6)`,
			userID, r.Seq, r.Purpose, r.Version, r.Granted, db.d.timeValue(r.At))
		return err
	})
	if err != nil {
		return r, fmt.Errorf("store: append consent for %s: %w", userID, err)
	}
	return r, nil
}

// ConsentHistory returns the user's consent records, oldest first.
func (db *DB) ConsentHistory(ctx context.Context, userID string) ([]ConsentRecord, error) {
	recs, err := consentHistory(ctx, db.db, db.d, userID)
	if err != nil {
		return nil, fmt.Errorf("store: consent history %s: %w", userID, err)
	}
	return recs, nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func consentHistory(ctx context.Context, q queryer, _ *dialect, userID string) ([]ConsentRecord, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, purpose, version, granted, at FROM consent_records WHERE user_id = $1 ORDER BY seq`, userID)
	if err != nil {
		return nil, err
	}
	out := []ConsentRecord{}
	for rows.Next() {
		var r ConsentRecord
		var at timeScanner
		if err := rows.Scan(&r.Seq, &r.Purpose, &r.Version, &r.Granted, &at); err != nil {
			rows.Close()
			return nil, err
		}
		r.At = at.t
		out = append(out, r)
	}
	return out, closeRows(rows)
}
