package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/domicile/domicile/internal/sqltx"
)

// User is an account as the region stores it. Email, Name, PasswordHash and
// Attributes are stored encrypted with the user's data key (see the package
// documentation); the store returns them decrypted.
type User struct {
	ID string
	// Email is normalised (see NormalizeEmail) by CreateUser.
	Email        string
	Name         string // display name, optional
	PasswordHash string
	// Attributes is the progressive profile: attributes added over time
	// with UpdateProfile (see ProfileUpdate for the limits). Nil when
	// there are none.
	Attributes    map[string]string
	EmailVerified bool
	Disabled      bool
	// CreatedAt is kept to the microsecond, in UTC; CreateUser sets it to
	// now when it is zero.
	CreatedAt time.Time
}

// Users is the part of the store that manages accounts. Depend on it rather
// than on *DB where that is all a caller needs.
type Users interface {
	CreateUser(ctx context.Context, u User) error
	UserByEmail(ctx context.Context, email string) (User, error)
	DeleteUser(ctx context.Context, id string) error
	CountUsers(ctx context.Context) (int, error)
}

var _ Users = (*DB)(nil)

// Limits on personal data.
const (
	// MaxNameBytes bounds User.Name.
	MaxNameBytes = 1024
	// MaxAttributes bounds the number of attributes a user has.
	MaxAttributes = 64
	// MaxAttributeKey bounds an attribute's key, made of [a-z0-9_].
	MaxAttributeKey = 64
	// MaxAttributeValue bounds an attribute's value, in bytes.
	MaxAttributeValue = 1024
)

// Column names, which are also the additional data of their ciphertexts.
const (
	colEmail        = "email"
	colName         = "name"
	colPasswordHash = "password_hash"
	colAttributes   = "attributes"
)

// NormalizeEmail returns the form of an email address the store keeps and
// looks up: surrounding space removed, lower case, so that one mailbox is one
// account however it is typed.
func NormalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// CreateUser stores u, creating its data key. Its error wraps ErrDuplicate
// when a user with the same id or (normalised) email exists.
func (db *DB) CreateUser(ctx context.Context, u User) error {
	u.Email = NormalizeEmail(u.Email)
	switch {
	case u.ID == "":
		return errors.New("store: create user: id: empty")
	case u.Email == "":
		return fmt.Errorf("store: create user %s: email: empty", u.ID)
	case u.PasswordHash == "":
		return fmt.Errorf("store: create user %s: password hash: empty", u.ID)
	}
	if err := checkName(u.Name); err != nil {
		return fmt.Errorf("store: create user %s: %w", u.ID, err)
	}
	if err := checkAttributes(u.Attributes); err != nil {
		return fmt.Errorf("store: create user %s: %w", u.ID, err)
	}
	if len(u.Attributes) > MaxAttributes {
		return fmt.Errorf("store: create user %s: attributes: more than %d", u.ID, MaxAttributes)
	}
	u.Attributes = withoutEmpty(u.Attributes)
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	u.CreatedAt = u.CreatedAt.UTC().Truncate(time.Microsecond)

	// The key first: its primary key makes the id unique across
	// concurrent sign-ups, and a row never exists without its key.
	key, err := db.newUserKey(ctx, u.ID)
	if err != nil {
		return fmt.Errorf("store: create user %s: %w", u.ID, err)
	}
	r, err := db.sealUser(key, u)
	if err == nil {
		// ON CONFLICT DO NOTHING rather than catching each driver's
		// unique-violation error: the same statement works on all three
		// backends and leaves a PostgreSQL transaction usable.
		err = db.execOne(ctx, ErrDuplicate,
			`INSERT INTO users (id, email_hash, email, name, password_hash, attributes, email_verified, disabled, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`, r.args(db.d)...)
	}
	if err != nil {
		if derr := db.discardNewKey(ctx, u.ID); derr != nil {
			err = errors.Join(err, derr)
		}
		// The email is personal data: it stays out of error messages.
		return fmt.Errorf("store: create user %s: %w", u.ID, err)
	}
	return nil
}

// UserByEmail returns the user with the given email (normalised first),
// decrypted. Its error wraps ErrNotFound when there is none.
func (db *DB) UserByEmail(ctx context.Context, email string) (User, error) {
	email = NormalizeEmail(email)
	u, err := db.loadUser(ctx, "email_hash", db.seal.emailHash(email))
	if err != nil {
		return User{}, fmt.Errorf("store: user by email: %w", err)
	}
	// The blind index is not authenticated: a row whose email_hash was
	// copied from another user's must not answer for that user's email.
	if u.Email != email {
		return User{}, fmt.Errorf("store: user by email: user %s: email index does not match the stored email", u.ID)
	}
	return u, nil
}

// UserByID returns the user with the given id, decrypted. Its error wraps
// ErrNotFound when there is none.
func (db *DB) UserByID(ctx context.Context, id string) (User, error) {
	u, err := db.loadUser(ctx, "id", id)
	if err != nil {
		return User{}, fmt.Errorf("store: user by id %s: %w", id, err)
	}
	return u, nil
}

// loadUser reads and decrypts the user whose column equals value.
func (db *DB) loadUser(ctx context.Context, column string, value any) (User, error) {
	r, err := scanUserRow(db.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE `+column+` = $1`, value))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, err
	}
	key, err := db.userKey(ctx, r.id)
	if err != nil {
		// ErrNotFound: deleted between the two reads.
		return User{}, fmt.Errorf("user %s: %w", r.id, err)
	}
	u, err := r.open(key)
	if err != nil {
		return User{}, fmt.Errorf("user %s: %w", r.id, err)
	}
	return u, nil
}

// DeleteUser erases the user with the given id: in one transaction it
// deletes their rows from every table that holds their data (users, tokens,
// login_failures, totp, recovery_codes, consent_records, passkeys), then it
// deletes their data key from the key store, so that any copy of their
// rows taken before (a backup, a replica, a dump) can no longer be
// decrypted. On SQLite it then checkpoints both files' WALs so that no
// earlier page image lingers (secure_delete has zeroed the deleted content
// in the pages themselves).
//
// Audit entries about the user are kept: they hold ids, never personal data
// (see AppendAudit), and the chain must stay verifiable.
//
// If the rows were deleted but the key could not be, the error says so;
// calling DeleteUser again finishes the job (it deletes a key left behind
// by an earlier call even when the rows are already gone). Its error wraps
// ErrNotFound when there was neither a user nor a key.
func (db *DB) DeleteUser(ctx context.Context, id string) error {
	var deleted bool
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM tokens WHERE user_id = $1`,
			`DELETE FROM login_failures WHERE user_id = $1`,
			`DELETE FROM totp WHERE user_id = $1`,
			`DELETE FROM recovery_codes WHERE user_id = $1`,
			`DELETE FROM consent_records WHERE user_id = $1`,
			`DELETE FROM passkeys WHERE user_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = $1`, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		deleted = n > 0
		return err
	})
	if err != nil {
		return fmt.Errorf("store: delete user %s: %w", id, err)
	}
	shredded, err := db.keys.delete(ctx, id)
	if err != nil {
		return fmt.Errorf("store: delete user %s: rows deleted but the data key was not (call DeleteUser again): %w", id, err)
	}
	db.scrub(ctx)
	if !deleted && !shredded {
		return fmt.Errorf("store: delete user %s: %w", id, ErrNotFound)
	}
	return nil
}

// CountUsers returns the number of users in the region.
func (db *DB) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := db.db.QueryRowContext(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count users: %w", err)
	}
	return n, nil
}

// ProfileUpdate is a change to a user's profile. Nil or empty fields leave
// the profile as it is.
type ProfileUpdate struct {
	// Name, when not nil, replaces the display name (at most MaxNameBytes).
	Name *string
	// Attributes sets each key to its value; an empty value removes the
	// key. Keys are 1 to MaxAttributeKey characters of [a-z0-9_], values
	// valid UTF-8 of at most MaxAttributeValue bytes, and a user has at
	// most MaxAttributes attributes afterwards.
	Attributes map[string]string
}

// UpdateProfile applies up to the user's profile. Its error wraps
// ErrNotFound when there is no such user.
func (db *DB) UpdateProfile(ctx context.Context, id string, up ProfileUpdate) error {
	if up.Name != nil {
		if err := checkName(*up.Name); err != nil {
			return fmt.Errorf("store: update profile %s: %w", id, err)
		}
	}
	if err := checkAttributes(up.Attributes); err != nil {
		return fmt.Errorf("store: update profile %s: %w", id, err)
	}
	if up.Name == nil && len(up.Attributes) == 0 {
		return nil
	}
	key, err := db.userKey(ctx, id)
	if err != nil {
		return fmt.Errorf("store: update profile %s: %w", id, err)
	}
	err = db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var sealedAttrs []byte
		err := tx.QueryRowContext(ctx, `SELECT attributes FROM users WHERE id = $1`+db.d.forUpdate, id).Scan(&sealedAttrs)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if up.Name != nil {
			name, err := key.sealString(colName, *up.Name)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE users SET name = $2 WHERE id = $1`, id, name); err != nil {
				return err
			}
		}
		if len(up.Attributes) == 0 {
			return nil
		}
		attrs, err := openAttributes(key, sealedAttrs)
		if err != nil {
			return err
		}
		if attrs == nil {
			attrs = map[string]string{}
		}
		for k, v := range up.Attributes {
			if v == "" {
				delete(attrs, k)
			} else {
				attrs[k] = v
			}
		}
		if len(attrs) > MaxAttributes {
			return fmt.Errorf("attributes: %d, more than %d", len(attrs), MaxAttributes)
		}
		sealedAttrs, err = sealAttributes(key, attrs)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE users SET attributes = $2 WHERE id = $1`, id, sealedAttrs)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("store: update profile %s: %w", id, err)
	}
	return nil
}

// SetPasswordHash replaces the user's password hash (stored encrypted). Its
// error wraps ErrNotFound when there is no such user.
func (db *DB) SetPasswordHash(ctx context.Context, id, hash string) error {
	if hash == "" {
		return fmt.Errorf("store: set password hash %s: empty", id)
	}
	key, err := db.userKey(ctx, id)
	if err != nil {
		return fmt.Errorf("store: set password hash %s: %w", id, err)
	}
	sealed, err := key.sealString(colPasswordHash, hash)
	if err != nil {
		return fmt.Errorf("store: set password hash %s: %w", id, err)
	}
	if err := db.execOne(ctx, ErrNotFound, `UPDATE users SET password_hash = $2 WHERE id = $1`, id, sealed); err != nil {
		return fmt.Errorf("store: set password hash %s: %w", id, err)
	}
	return nil
}

// SetEmailVerified records whether the user proved they own their email.
// Its error wraps ErrNotFound when there is no such user.
func (db *DB) SetEmailVerified(ctx context.Context, id string, verified bool) error {
	if err := db.execOne(ctx, ErrNotFound, `UPDATE users SET email_verified = $2 WHERE id = $1`, id, verified); err != nil {
		return fmt.Errorf("store: set email verified %s: %w", id, err)
	}
	return nil
}

// SetDisabled disables or re-enables the user's account. Its error wraps
// ErrNotFound when there is no such user.
func (db *DB) SetDisabled(ctx context.Context, id string, disabled bool) error {
	if err := db.execOne(ctx, ErrNotFound, `UPDATE users SET disabled = $2 WHERE id = $1`, id, disabled); err != nil {
		return fmt.Errorf("store: set disabled %s: %w", id, err)
	}
	return nil
}

func checkName(name string) error {
	if len(name) > MaxNameBytes {
		return fmt.Errorf("name: longer than %d bytes", MaxNameBytes)
	}
	if !utf8.ValidString(name) {
		return errors.New("name: not valid UTF-8")
	}
	return nil
}

// checkAttributes checks each key and value of attrs (not their number,
// which the caller checks after merging).
func checkAttributes(attrs map[string]string) error {
	if len(attrs) > 4*MaxAttributes { // a bound on the work, before merging
		return fmt.Errorf("attributes: more than %d", MaxAttributes)
	}
	for k, v := range attrs {
		if !validAttributeKey(k) {
			return fmt.Errorf("attributes: key %q: want 1 to %d characters of [a-z0-9_]", truncate(k, MaxAttributeKey), MaxAttributeKey)
		}
		if len(v) > MaxAttributeValue {
			return fmt.Errorf("attributes: %s: value longer than %d bytes", k, MaxAttributeValue)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("attributes: %s: value not valid UTF-8", k)
		}
	}
	return nil
}

func validAttributeKey(k string) bool {
	if k == "" || len(k) > MaxAttributeKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// withoutEmpty returns attrs without its empty values, nil if none remain.
func withoutEmpty(attrs map[string]string) map[string]string {
	out := maps.Clone(attrs)
	maps.DeleteFunc(out, func(_, v string) bool { return v == "" })
	if len(out) == 0 {
		return nil
	}
	return out
}

// userRow is a users row as stored: personal data sealed.
type userRow struct {
	id                        string
	emailHash                 []byte
	email, name, passwordHash []byte
	attributes                []byte // nil: none
	emailVerified, disabled   bool
	created                   timeScanner
}

const userColumns = `id, email_hash, email, name, password_hash, attributes, email_verified, disabled, created_at`

func scanUserRow(row interface{ Scan(...any) error }) (userRow, error) {
	var r userRow
	err := row.Scan(&r.id, &r.emailHash, &r.email, &r.name, &r.passwordHash, &r.attributes, &r.emailVerified, &r.disabled, &r.created)
	return r, err
}

// args returns the row's values in userColumns order.
func (r userRow) args(d *dialect) []any {
	return []any{r.id, r.emailHash, r.email, r.name, r.passwordHash, r.attributes, r.emailVerified, r.disabled, d.timeValue(r.created.t)}
}

// sealUser encrypts u's personal data with key.
func (db *DB) sealUser(key dataKey, u User) (userRow, error) {
	r := userRow{id: u.ID, emailHash: db.seal.emailHash(u.Email), emailVerified: u.EmailVerified, disabled: u.Disabled, created: timeScanner{u.CreatedAt}}
	var err error
	if r.email, err = key.sealString(colEmail, u.Email); err != nil {
		return userRow{}, err
	}
	if r.name, err = key.sealString(colName, u.Name); err != nil {
		return userRow{}, err
	}
	if r.passwordHash, err = key.sealString(colPasswordHash, u.PasswordHash); err != nil {
		return userRow{}, err
	}
	if r.attributes, err = sealAttributes(key, u.Attributes); err != nil {
		return userRow{}, err
	}
	return r, nil
}

// open decrypts the row with key.
func (r userRow) open(key dataKey) (User, error) {
	u := User{ID: r.id, EmailVerified: r.emailVerified, Disabled: r.disabled, CreatedAt: r.created.t}
	var err error
	if u.Email, err = key.openString(colEmail, r.email); err != nil {
		return User{}, err
	}
	if u.Name, err = key.openString(colName, r.name); err != nil {
		return User{}, err
	}
	if u.PasswordHash, err = key.openString(colPasswordHash, r.passwordHash); err != nil {
		return User{}, err
	}
	if u.Attributes, err = openAttributes(key, r.attributes); err != nil {
		return User{}, err
	}
	return u, nil
}

// sealAttributes encrypts attrs as a JSON object; none is stored as NULL.
func sealAttributes(key dataKey, attrs map[string]string) ([]byte, error) {
	if len(attrs) == 0 {
		return nil, nil
	}
	js, err := json.Marshal(attrs)
	if err != nil {
		return nil, fmt.Errorf("encode attributes: %w", err)
	}
	return key.seal(colAttributes, js)
}

func openAttributes(key dataKey, sealed []byte) (map[string]string, error) {
	if sealed == nil {
		return nil, nil
	}
	js, err := key.open(colAttributes, sealed)
	if err != nil {
		return nil, err
	}
	var attrs map[string]string
	if err := json.Unmarshal(js, &attrs); err != nil {
		return nil, fmt.Errorf("decode attributes: %w", err)
	}
	if len(attrs) == 0 {
		return nil, nil
	}
	return attrs, nil
}

// timeScanner reads a timestamp as either dialect stores it: a time from
// PostgreSQL and CockroachDB, Unix microseconds from SQLite.
type timeScanner struct{ t time.Time }

func (s *timeScanner) Scan(v any) error {
	switch v := v.(type) {
	case time.Time:
		s.t = v.UTC()
	case int64:
		s.t = time.UnixMicro(v).UTC()
	default:
		return fmt.Errorf("store: timestamp: unexpected %T", v)
	}
	return nil
}

// execTx runs one statement in tx and returns none if it touched no row.
func execTx(ctx context.Context, tx *sql.Tx, none error, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return none
	}
	return nil
}

// execOne runs one statement in a retried transaction and returns none
// (bare, not wrapped by sqltx) if it touched no row.
func (db *DB) execOne(ctx context.Context, none error, query string, args ...any) error {
	return execOne(ctx, db.tx, none, query, args...)
}

func execOne(ctx context.Context, run *sqltx.Runner, none error, query string, args ...any) error {
	err := run.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execTx(ctx, tx, none, query, args...)
	})
	if errors.Is(err, none) {
		return none
	}
	return err
}

// ListUsers returns up to limit users (decrypted) whose ids sort after
// after, in id order: a page of the region's users for the admin API.
func (db *DB) ListUsers(ctx context.Context, after string, limit int) ([]User, error) {
	if limit <= 0 || limit > 1000 {
		return nil, fmt.Errorf("store: list users: limit %d: want 1 to 1000", limit)
	}
	rows, err := db.db.QueryContext(ctx, `SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: list users: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	out := make([]User, 0, len(ids))
	for _, id := range ids {
		u, err := db.loadUser(ctx, "id", id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("store: list users: %w", err)
		}
		out = append(out, u)
	}
	return out, nil
}
