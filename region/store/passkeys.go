package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Passkeys are WebAuthn credentials. The credential id, public key,
// counter and flags are not personal data (they identify an authenticator's
// key pair for this service, not a person) and stay in clear, because
// logins look credentials up by id; the name the user gave the passkey is
// sealed with the user's data key like the rest of their personal data.

// Limits on passkeys.
const (
	// MaxPasskeys bounds the passkeys one user has.
	MaxPasskeys = 20
	// MaxPasskeyNameBytes bounds a passkey's name.
	MaxPasskeyNameBytes = 256
	// MaxCredentialIDBytes bounds a credential id (WebAuthn: 1023).
	MaxCredentialIDBytes = 1023
	// maxPublicKeyBytes bounds a COSE public key.
	maxPublicKeyBytes = 4096
)

// ErrCounter is returned by UsePasskey when the authenticator's signature
// counter did not increase: a sign that the credential's private key was
// cloned (or the assertion replayed).
var ErrCounter = errors.New("signature counter did not increase")

// ErrLimit is returned by AddPasskey when the user has MaxPasskeys.
var ErrLimit = errors.New("limit reached")

// colPasskeyName is the column (and additional data) of a passkey's name.
const colPasskeyName = "passkey_name"

// Passkey is a user's WebAuthn credential record.
type Passkey struct {
	// ID is the credential id the authenticator chose: unique across the
	// region.
	ID     []byte
	UserID string
	// Name is the user's label for it ("Laptop"); sealed at rest.
	Name string
	// PublicKey is the credential public key, COSE-encoded.
	PublicKey []byte
	// AttestationType and AttestationFormat are what the registration
	// conveyed ("none", "packed", ...).
	AttestationType   string
	AttestationFormat string
	// AAGUID identifies the authenticator model (16 bytes, zero if none).
	AAGUID []byte
	// SignCount is the signature counter last seen (0: the authenticator
	// keeps none).
	SignCount uint32
	// Transports the authenticator said it supports ("internal", "usb").
	Transports []string
	// Flags: the user was verified at registration (or since), and the
	// credential may be (BackupEligible) or is (BackupState) synced.
	UserVerified   bool
	BackupEligible bool
	BackupState    bool
	// CreatedAt and LastUsedAt are to the microsecond in UTC; LastUsedAt is
	// zero until the first login.
	CreatedAt  time.Time
	LastUsedAt time.Time
}

// PasskeyInfo is a passkey as an export shows it: without the key.
type PasskeyInfo struct {
	ID             string    `json:"id"` // base64url, as WebAuthn clients show it
	Name           string    `json:"name"`
	AAGUID         string    `json:"aaguid"`
	Transports     []string  `json:"transports"`
	BackupEligible bool      `json:"backup_eligible"`
	BackupState    bool      `json:"backup_state"`
	CreatedAt      time.Time `json:"created_at"`
	LastUsedAt     time.Time `json:"last_used_at,omitzero"`
}

// PasskeyUse is what a successful login changes on a passkey.
type PasskeyUse struct {
	SignCount    uint32
	UserVerified bool
	BackupState  bool
	At           time.Time // now when zero
}

func checkPasskey(p Passkey) error {
	switch {
	case len(p.ID) == 0 || len(p.ID) > MaxCredentialIDBytes:
		return fmt.Errorf("credential id: want 1 to %d bytes", MaxCredentialIDBytes)
	case len(p.PublicKey) == 0 || len(p.PublicKey) > maxPublicKeyBytes:
		return fmt.Errorf("public key: want 1 to %d bytes", maxPublicKeyBytes)
	case len(p.AAGUID) != 0 && len(p.AAGUID) != 16:
		return fmt.Errorf("aaguid: want 16 bytes, got %d", len(p.AAGUID))
	case len(p.AttestationType) > 64 || len(p.AttestationFormat) > 64:
		return errors.New("attestation type or format: longer than 64 bytes")
	}
	if err := checkPasskeyName(p.Name); err != nil {
		return err
	}
	for _, t := range p.Transports {
		if t == "" || len(t) > 32 || strings.ContainsAny(t, ", ") {
			return fmt.Errorf("transport %q: want 1 to 32 bytes without comma or space", truncate(t, 32))
		}
	}
	if len(p.Transports) > 8 {
		return errors.New("transports: more than 8")
	}
	return nil
}

func checkPasskeyName(name string) error {
	if len(name) > MaxPasskeyNameBytes || !utf8.ValidString(name) {
		return fmt.Errorf("name: want at most %d bytes of UTF-8", MaxPasskeyNameBytes)
	}
	return nil
}

// AddPasskey stores a new passkey of p.UserID (CreatedAt now when zero).
// Its error wraps ErrNotFound when the user does not exist, ErrDuplicate
// when a passkey with the same credential id exists (for any user), and
// ErrLimit when the user has MaxPasskeys already.
func (db *DB) AddPasskey(ctx context.Context, p Passkey) error {
	if err := checkPasskey(p); err != nil {
		return fmt.Errorf("store: add passkey for %s: %w", p.UserID, err)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	p.CreatedAt = p.CreatedAt.UTC().Truncate(time.Microsecond)
	aaguid := p.AAGUID
	if len(aaguid) == 0 {
		aaguid = make([]byte, 16)
	}
	key, err := db.userKey(ctx, p.UserID)
	if err != nil {
		return fmt.Errorf("store: add passkey for %s: %w", p.UserID, err)
	}
	name, err := key.sealString(colPasskeyName, p.Name)
	if err != nil {
		return fmt.Errorf("store: add passkey for %s: %w", p.UserID, err)
	}
	err = db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := userExists(ctx, tx, p.UserID); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM passkeys WHERE user_id = $1`, p.UserID).Scan(&n); err != nil {
			return err
		}
		if n >= MaxPasskeys {
			return ErrLimit
		}
		return execTx(ctx, tx, ErrDuplicate, `INSERT INTO passkeys (id, user_id, name, public_key, attestation_type, attestation_format, aaguid,
			sign_count, transports, user_verified, backup_eligible, backup_state, created_at, last_used_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL) ON CONFLICT DO NOTHING`,
			p.ID, p.UserID, name, p.PublicKey, p.AttestationType, p.AttestationFormat, aaguid,
			int64(p.SignCount), strings.Join(p.Transports, ","), p.UserVerified, p.BackupEligible, p.BackupState, db.d.timeValue(p.CreatedAt))
	})
	if err != nil {
		return fmt.Errorf("store: add passkey for %s: %w", p.UserID, bare(err, ErrNotFound, ErrDuplicate, ErrLimit))
	}
	return nil
}

const passkeyColumns = `id, user_id, name, public_key, attestation_type, attestation_format, aaguid, sign_count, transports,
	user_verified, backup_eligible, backup_state, created_at, last_used_at`

// Passkeys returns the user's passkeys (names decrypted), oldest first; none
// is not an error.
func (db *DB) Passkeys(ctx context.Context, userID string) ([]Passkey, error) {
	out, err := passkeysOf(ctx, db.db, userID)
	if err != nil {
		return nil, fmt.Errorf("store: passkeys of %s: %w", userID, err)
	}
	if len(out) == 0 {
		return out, nil
	}
	if err := db.openPasskeyNames(ctx, userID, out); err != nil {
		return nil, fmt.Errorf("store: passkeys of %s: %w", userID, err)
	}
	return out, nil
}

// passkeysOf reads the user's passkeys with their names still sealed (in
// Name, as raw bytes).
func passkeysOf(ctx context.Context, q queryer, userID string) ([]Passkey, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE user_id = $1 ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, err
	}
	out := []Passkey{}
	for rows.Next() {
		var (
			p          Passkey
			name       []byte
			count      int64
			transports string
			created    timeScanner
			used       sql.Null[timeScanner] // NULL: never used
		)
		if err := rows.Scan(&p.ID, &p.UserID, &name, &p.PublicKey, &p.AttestationType, &p.AttestationFormat, &p.AAGUID, &count,
			&transports, &p.UserVerified, &p.BackupEligible, &p.BackupState, &created, &used); err != nil {
			rows.Close()
			return nil, err
		}
		p.Name = string(name)
		p.SignCount = uint32(count)
		if transports != "" {
			p.Transports = strings.Split(transports, ",")
		}
		p.CreatedAt = created.t
		if used.Valid {
			p.LastUsedAt = used.V.t
		}
		out = append(out, p)
	}
	return out, closeRows(rows)
}

// openPasskeyNames decrypts the sealed names passkeysOf left in ps.
func (db *DB) openPasskeyNames(ctx context.Context, userID string, ps []Passkey) error {
	key, err := db.userKey(ctx, userID)
	if err != nil {
		return err
	}
	for i := range ps {
		if ps[i].Name, err = key.openString(colPasskeyName, []byte(ps[i].Name)); err != nil {
			return err
		}
	}
	return nil
}

// UsePasskey records a successful login with the user's passkey id: the
// new signature counter, flags and time. The counter must increase (unless
// the authenticator keeps none: 0 stored and 0 seen), checked in the same
// statement that writes it, so that of two logins with one counter value
// only one passes; otherwise the error wraps ErrCounter. Its error wraps
// ErrNotFound when the user has no such passkey.
func (db *DB) UsePasskey(ctx context.Context, userID string, id []byte, use PasskeyUse) error {
	if use.At.IsZero() {
		use.At = time.Now()
	}
	n := int64(use.SignCount)
	err := db.execOne(ctx, ErrCounter, `UPDATE passkeys SET sign_count = $3, user_verified = $4, backup_state = $5, last_used_at = $6
		WHERE user_id = $1 AND id = $2 AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0))`,
		userID, id, n, use.UserVerified, use.BackupState, db.d.timeValue(use.At.UTC().Truncate(time.Microsecond)))
	if errors.Is(err, ErrCounter) {
		var exists int
		if qerr := db.db.QueryRowContext(ctx, `SELECT count(*) FROM passkeys WHERE user_id = $1 AND id = $2`, userID, id).Scan(&exists); qerr != nil {
			err = qerr
		} else if exists == 0 {
			err = ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("store: use passkey of %s: %w", userID, err)
	}
	return nil
}

// RenamePasskey changes the name of the user's passkey id. Its error wraps
// ErrNotFound when the user has no such passkey.
func (db *DB) RenamePasskey(ctx context.Context, userID string, id []byte, name string) error {
	if err := checkPasskeyName(name); err != nil {
		return fmt.Errorf("store: rename passkey of %s: %w", userID, err)
	}
	key, err := db.userKey(ctx, userID)
	if err != nil {
		return fmt.Errorf("store: rename passkey of %s: %w", userID, err)
	}
	sealed, err := key.sealString(colPasskeyName, name)
	if err != nil {
		return fmt.Errorf("store: rename passkey of %s: %w", userID, err)
	}
	if err := db.execOne(ctx, ErrNotFound, `UPDATE passkeys SET name = $3 WHERE user_id = $1 AND id = $2`, userID, id, sealed); err != nil {
		return fmt.Errorf("store: rename passkey of %s: %w", userID, err)
	}
	return nil
}

// DeletePasskey deletes the user's passkey id. Its error wraps ErrNotFound
// when the user has no such passkey (another user's is not touched).
func (db *DB) DeletePasskey(ctx context.Context, userID string, id []byte) error {
	if err := db.execOne(ctx, ErrNotFound, `DELETE FROM passkeys WHERE user_id = $1 AND id = $2`, userID, id); err != nil {
		return fmt.Errorf("store: delete passkey of %s: %w", userID, err)
	}
	return nil
}

// DeletePasskeys deletes all the user's passkeys (an administrator's reset
// of the second factors) and returns how many there were.
func (db *DB) DeletePasskeys(ctx context.Context, userID string) (int, error) {
	var n int64
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM passkeys WHERE user_id = $1`, userID)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: delete passkeys of %s: %w", userID, err)
	}
	return int(n), nil
}

// UseChallenge records that a WebAuthn ceremony with the challenge whose
// SHA-256 is hash has been answered, until expires (after which the
// ceremony's signed state is refused anyway). It fails with an error
// wrapping ErrReplay if it was recorded before: a challenge is good once,
// even for concurrent requests on several nodes of the region. Expired
// records are purged now and then on the way.
func (db *DB) UseChallenge(ctx context.Context, hash [32]byte, expires time.Time) error {
	if hash == [32]byte{} {
		return errors.New("store: use challenge: hash: zero")
	}
	now := time.Now().UTC()
	// One call in 32 purges: often enough to keep the table at a few
	// minutes of ceremonies, rarely enough not to make every login
	// contend for the same rows.
	purge := randByte()%32 == 0
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if purge {
			if _, err := tx.ExecContext(ctx, `DELETE FROM passkey_challenges WHERE expires_at <= $1`, db.d.timeValue(now)); err != nil {
				return err
			}
		}
		return execTx(ctx, tx, ErrReplay, `INSERT INTO passkey_challenges (hash, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			hash[:], db.d.timeValue(expires.UTC().Truncate(time.Microsecond)))
	})
	if err != nil {
		return fmt.Errorf("store: use challenge: %w", bare(err, ErrReplay))
	}
	return nil
}

func randByte() byte {
	var b [1]byte
	_, _ = rand.Read(b[:])
	return b[0]
}
