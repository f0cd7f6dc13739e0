package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"
)

// A remembered device: a browser in which the user gave a second factor
// and asked not to be asked again for a while. The browser holds a random
// device id (a bearer secret, in a cookie); the store keeps, under the
// id's hash, whose device it is and until when. Like sessions, devices
// live in the home region's store (Redis in production, Memory in dev).

// Device is a remembered device. ID is the secret the browser holds; it
// is set by the caller of PutDevice and never returned by the store
// (Handle, the hex SHA-256 of ID, names a device in lists and forms).
type Device struct {
	ID        string
	Handle    string
	UserID    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// DeviceStore keeps remembered devices until they expire. Device of an
// expired or unknown id returns ErrNotFound; deleting a missing device is
// not an error.
type DeviceStore interface {
	PutDevice(ctx context.Context, d Device) error
	Device(ctx context.Context, id string) (Device, error)
	UserDevices(ctx context.Context, userID string) ([]Device, error)
	// DeleteDevice forgets the device named by handle if it is userID's.
	DeleteDevice(ctx context.Context, userID, handle string) error
	// DeleteUserDevices forgets every device of userID and returns how
	// many there were.
	DeleteUserDevices(ctx context.Context, userID string) (int, error)
}

// DeviceHandle is the public name of a device id: hex(SHA-256(id)).
func DeviceHandle(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func checkDevice(d Device, now time.Time) error {
	switch {
	case d.ID == "":
		return errors.New("session: put device: id: empty")
	case d.UserID == "":
		return errors.New("session: put device: user id: empty")
	case !now.Before(d.ExpiresAt):
		return ErrExpired
	}
	return nil
}

func sortDevices(ds []Device) {
	slices.SortFunc(ds, func(a, b Device) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Handle, b.Handle)
	})
}
