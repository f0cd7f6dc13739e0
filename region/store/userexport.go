package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Export is everything the region stores about one user, decrypted, for a
// data-portability or access request. It marshals to JSON. Secrets are left
// out: the password hash and the tokens' hashes.
type Export struct {
	Profile Profile `json:"profile"`
	// Tokens are the user's outstanding single-use tokens.
	Tokens []TokenInfo `json:"tokens"`
	// LoginFailures are the recorded failed logins, oldest first.
	LoginFailures []time.Time `json:"login_failures"`
	// Consent is the user's consent history, oldest first.
	Consent []ConsentRecord `json:"consent"`
	// Passkeys are the user's passkeys (without their public keys), oldest
	// first.
	Passkeys []PasskeyInfo `json:"passkeys"`
	// Audit is the audit log's entries about the user (as subject).
	Audit      []AuditEvent `json:"audit"`
	ExportedAt time.Time    `json:"exported_at"`
}

// Profile is a user's account data, without the password hash.
type Profile struct {
	ID            string            `json:"id"`
	Email         string            `json:"email"`
	Name          string            `json:"name"`
	Attributes    map[string]string `json:"attributes"`
	EmailVerified bool              `json:"email_verified"`
	Disabled      bool              `json:"disabled"`
	HasPassword   bool              `json:"has_password"`
	CreatedAt     time.Time         `json:"created_at"`
}

// ExportUser returns everything stored about the user, read in one
// transaction. Its error wraps ErrNotFound when there is no such user.
func (db *DB) ExportUser(ctx context.Context, id string) (Export, error) {
	key, err := db.userKey(ctx, id)
	if err != nil {
		return Export{}, fmt.Errorf("store: export user %s: %w", id, err)
	}
	var x Export
	err = db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		x = Export{Tokens: []TokenInfo{}, LoginFailures: []time.Time{}, Consent: []ConsentRecord{}, Passkeys: []PasskeyInfo{}, Audit: []AuditEvent{}}
		r, err := scanUserRow(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		u, err := r.open(key)
		if err != nil {
			return err
		}
		x.Profile = Profile{ID: u.ID, Email: u.Email, Name: u.Name, Attributes: u.Attributes, EmailVerified: u.EmailVerified,
			Disabled: u.Disabled, HasPassword: u.PasswordHash != "", CreatedAt: u.CreatedAt}
		if x.Profile.Attributes == nil {
			x.Profile.Attributes = map[string]string{}
		}

		rows, err := tx.QueryContext(ctx, `SELECT purpose, created_at, expires_at FROM tokens WHERE user_id = $1 ORDER BY created_at, purpose`, id)
		if err != nil {
			return err
		}
		for rows.Next() {
			var (
				t                TokenInfo
				created, expires timeScanner
			)
			if err := rows.Scan(&t.Purpose, &created, &expires); err != nil {
				rows.Close()
				return err
			}
			t.CreatedAt, t.ExpiresAt = created.t, expires.t
			x.Tokens = append(x.Tokens, t)
		}
		if err := closeRows(rows); err != nil {
			return err
		}

		rows, err = tx.QueryContext(ctx, `SELECT at FROM login_failures WHERE user_id = $1 ORDER BY at`, id)
		if err != nil {
			return err
		}
		for rows.Next() {
			var at timeScanner
			if err := rows.Scan(&at); err != nil {
				rows.Close()
				return err
			}
			x.LoginFailures = append(x.LoginFailures, at.t)
		}
		if err := closeRows(rows); err != nil {
			return err
		}

		recs, err := consentHistory(ctx, tx, db.d, id)
		if err != nil {
			return fmt.Errorf("consent: %w", err)
		}
		x.Consent = append(x.Consent, recs...)

		pks, err := passkeysOf(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("passkeys: %w", err)
		}
		for _, p := range pks {
			name, err := key.openString(colPasskeyName, []byte(p.Name))
			if err != nil {
				return fmt.Errorf("passkeys: %w", err)
			}
			transports := p.Transports
			if transports == nil {
				transports = []string{}
			}
			x.Passkeys = append(x.Passkeys, PasskeyInfo{ID: base64.RawURLEncoding.EncodeToString(p.ID), Name: name,
				AAGUID: formatAAGUID(p.AAGUID), Transports: transports, BackupEligible: p.BackupEligible, BackupState: p.BackupState,
				CreatedAt: p.CreatedAt, LastUsedAt: p.LastUsedAt})
		}

		events, err := auditFor(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		x.Audit = append(x.Audit, events...)
		return nil
	})
	if err != nil {
		return Export{}, fmt.Errorf("store: export user %s: %w", id, bare(err, ErrNotFound))
	}
	x.ExportedAt = time.Now().UTC()
	return x, nil
}

func closeRows(rows *sql.Rows) error {
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}

// formatAAGUID writes a 16-byte AAGUID as a UUID.
func formatAAGUID(b []byte) string {
	if len(b) != 16 {
		return ""
	}
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
