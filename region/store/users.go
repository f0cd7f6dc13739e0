package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// User is an account as the region stores it.
type User struct {
	ID string
	// Email is normalised (see NormalizeEmail) by CreateUser.
	Email        string
	Name         string // display name, optional
	PasswordHash string
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

// NormalizeEmail returns the form of an email address the store keeps and
// looks up: surrounding space removed, lower case, so that one mailbox is one
// account however it is typed.
func NormalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// CreateUser stores u. Its error wraps ErrDuplicate when a user with the same
// id or (normalised) email exists.
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
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	u.CreatedAt = u.CreatedAt.UTC().Truncate(time.Microsecond)

	// ON CONFLICT DO NOTHING rather than catching each driver's
	// unique-violation error: the same statement works on all three
	// backends and leaves a PostgreSQL transaction usable.
	err := db.execOne(ctx, ErrDuplicate,
		`INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		u.ID, u.Email, u.Name, u.PasswordHash, db.d.timeValue(u.CreatedAt))
	if err != nil {
		// The email is personal data: it stays out of error messages.
		return fmt.Errorf("store: create user %s: %w", u.ID, err)
	}
	return nil
}

// UserByEmail returns the user with the given email (normalised first). Its
// error wraps ErrNotFound when there is none.
func (db *DB) UserByEmail(ctx context.Context, email string) (User, error) {
	var (
		u       User
		created timeScanner
	)
	err := db.db.QueryRowContext(ctx,
		`SELECT id, email, name, password_hash, created_at FROM users WHERE email = $1`,
		NormalizeEmail(email)).Scan(&u.ID, &u.Email, &u.Name, &u.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("store: user by email: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("store: user by email: %w", err)
	}
	u.CreatedAt = created.t
	return u, nil
}

// DeleteUser removes the user with the given id. Its error wraps ErrNotFound
// when there is none.
func (db *DB) DeleteUser(ctx context.Context, id string) error {
	err := db.execOne(ctx, ErrNotFound, `DELETE FROM users WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("store: delete user %s: %w", id, err)
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

// execOne runs one statement in a retried transaction and returns none
// (bare, not wrapped by sqltx) if it touched no row.
func (db *DB) execOne(ctx context.Context, none error, query string, args ...any) error {
	err := db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
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
	})
	if errors.Is(err, none) {
		return none
	}
	return err
}
