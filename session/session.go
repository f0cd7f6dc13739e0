package session

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// Session is a logged-in user's session. It must hold identifiers only:
// UserID is the opaque, region-prefixed user id, never an email or name.
type Session struct {
	ID        string
	UserID    string
	Home      string // the user's home region id
	CreatedAt time.Time
	ExpiresAt time.Time
	// RememberedDevice: the login skipped the second factor because the
	// browser is a device the user asked to be remembered (the session's
	// amr is then "pwd" alone).
	RememberedDevice bool
}

// Errors callers can test for with errors.Is.
var (
	// ErrNotFound: no session with that id, or it has expired.
	ErrNotFound = errors.New("session: not found")
	// ErrExpired: Put of a session whose ExpiresAt has passed.
	ErrExpired = errors.New("session: already expired")
)

// Store keeps sessions until they expire. Get of an expired session returns
// ErrNotFound; Delete of a missing one is not an error, so logout is
// idempotent.
type Store interface {
	Put(ctx context.Context, s Session) error
	Get(ctx context.Context, id string) (Session, error)
	Delete(ctx context.Context, id string) error
}

// idBytes of randomness: 256 bits, beyond guessing.
const idBytes = 32

// NewID returns a new session id: 32 random bytes, base64url without padding
// (43 characters, safe in URLs and cookies).
func NewID() (string, error) {
	b := make([]byte, idBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("session: new id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// check validates s before a store keeps it, at time now.
func check(s Session, now time.Time) error {
	switch {
	case s.ID == "":
		return errors.New("session: put: id: empty")
	case s.UserID == "":
		return errors.New("session: put: user id: empty")
	case s.ExpiresAt.IsZero():
		return errors.New("session: put: expires at: zero")
	case !now.Before(s.ExpiresAt):
		return ErrExpired
	}
	return nil
}

// expired reports whether s has ended at time now.
func expired(s Session, now time.Time) bool { return !now.Before(s.ExpiresAt) }
