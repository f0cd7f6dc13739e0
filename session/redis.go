package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store on a Redis server: the home region's, in production.
//
// A session lives under prefix + hex(SHA-256(id)) with a TTL that ends it at
// ExpiresAt, and its value does not contain the id: whoever reads the keys or
// values (a dump, a replica, MONITOR) cannot present any of them as a session.
type Redis struct {
	client *redis.Client
	prefix string
	now    func() time.Time // time.Now, replaced in tests
}

var (
	_ Store       = (*Redis)(nil)
	_ DeviceStore = (*Redis)(nil)
)

// NewRedis returns a store that keeps sessions in client under keys starting
// with prefix (e.g. "domicile:eu-west:session:"). The caller owns client.
func NewRedis(client *redis.Client, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix, now: time.Now}
}

// record is what is stored: a Session without its id.
type record struct {
	UserID    string    `json:"uid"`
	Home      string    `json:"home"`
	CreatedAt time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
	// Remembered: Session.RememberedDevice.
	Remembered bool `json:"rd,omitempty"`
}

func (r *Redis) key(id string) string {
	sum := sha256.Sum256([]byte(id))
	return r.prefix + hex.EncodeToString(sum[:])
}

// Put stores s until its ExpiresAt, replacing any session with the same id.
// Errors never include the session id, which is a bearer secret.
func (r *Redis) Put(ctx context.Context, s Session) error {
	now := r.now()
	if err := check(s, now); err != nil {
		return err
	}
	ttl := s.ExpiresAt.Sub(now)
	if ttl < time.Millisecond { // Redis's TTL resolution
		return ErrExpired
	}
	value, err := json.Marshal(record{UserID: s.UserID, Home: s.Home, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, Remembered: s.RememberedDevice})
	if err != nil {
		return fmt.Errorf("session: put: %w", err)
	}
	if err := r.client.Set(ctx, r.key(s.ID), value, ttl).Err(); err != nil {
		return fmt.Errorf("session: put: redis: %w", err)
	}
	return nil
}

// Get returns the session with the given id, or ErrNotFound.
func (r *Redis) Get(ctx context.Context, id string) (Session, error) {
	value, err := r.client.Get(ctx, r.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("session: get: redis: %w", err)
	}
	var rec record
	if err := json.Unmarshal(value, &rec); err != nil {
		return Session{}, fmt.Errorf("session: get: decode: %w", err)
	}
	// Redis expires keys on its own clock; do not hand out a session this
	// node's clock says has ended.
	if expired(Session{ExpiresAt: rec.ExpiresAt}, r.now()) {
		return Session{}, ErrNotFound
	}
	return Session{ID: id, UserID: rec.UserID, Home: rec.Home, CreatedAt: rec.CreatedAt, ExpiresAt: rec.ExpiresAt, RememberedDevice: rec.Remembered}, nil
}

// Delete removes the session with the given id, if there is one.
func (r *Redis) Delete(ctx context.Context, id string) error {
	if err := r.client.Del(ctx, r.key(id)).Err(); err != nil {
		return fmt.Errorf("session: delete: redis: %w", err)
	}
	return nil
}
