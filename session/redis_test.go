package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/testenv"
)

// TestRedisKeepsNoUsableID: what Redis holds (keys and values) never contains
// a session id, only its SHA-256, so a dump cannot be replayed.
func TestRedisKeepsNoUsableID(t *testing.T) {
	ctx := context.Background()
	client := newRedisClient(t)
	prefix := testenv.RedisPrefix(t)
	r := NewRedis(client, prefix)

	ids := make([]string, 5)
	for i := range ids {
		id, err := NewID()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
		now := time.Now()
		if err := r.Put(ctx, Session{ID: id, UserID: "eu-west:u1", Home: "eu-west", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := client.Keys(ctx, prefix+"*").Result() // a handful of keys under a test prefix
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(ids) {
		t.Fatalf("%d keys under the prefix, want %d", len(keys), len(ids))
	}
	for _, id := range ids {
		sum := sha256.Sum256([]byte(id))
		wantKey := prefix + hex.EncodeToString(sum[:])
		value, err := client.Get(ctx, wantKey).Result()
		if err != nil {
			t.Fatalf("key prefix+hex(sha256(id)): %v", err)
		}
		for _, k := range keys {
			if strings.Contains(k, id) {
				t.Errorf("key %q contains a session id", k)
			}
		}
		if strings.Contains(value, id) {
			t.Errorf("value %q contains the session id", value)
		}
		if !strings.Contains(value, "eu-west:u1") {
			t.Errorf("value %q does not hold the user id", value)
		}
	}
}

func TestRedisTTL(t *testing.T) {
	ctx := context.Background()
	client := newRedisClient(t)
	prefix := testenv.RedisPrefix(t)
	r := NewRedis(client, prefix)
	tests := []struct {
		name string
		ttl  time.Duration
	}{
		{"an hour", time.Hour},
		{"a week", 7 * 24 * time.Hour},
		{"under a second", 800 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewID()
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Put(ctx, Session{ID: id, UserID: "u", ExpiresAt: time.Now().Add(tt.ttl)}); err != nil {
				t.Fatal(err)
			}
			got, err := client.PTTL(ctx, r.key(id)).Result()
			if err != nil {
				t.Fatal(err)
			}
			// The TTL is ExpiresAt - now, less the time the round trip took.
			if got <= 0 || got > tt.ttl || got < tt.ttl-5*time.Second {
				t.Fatalf("PTTL = %v, want just under %v", got, tt.ttl)
			}
		})
	}
}

// TestRedisExpiresOnTheServer: Redis itself drops the session at ExpiresAt,
// so a store never fills with ended sessions.
func TestRedisExpiresOnTheServer(t *testing.T) {
	ctx := context.Background()
	client := newRedisClient(t)
	r := NewRedis(client, testenv.RedisPrefix(t))
	id, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, Session{ID: id, UserID: "u", ExpiresAt: time.Now().Add(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "Redis kept the session's key past its TTL", func() bool {
		n, err := client.Exists(ctx, r.key(id)).Result()
		return err == nil && n == 0
	})
	if _, err := r.Get(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
}

// TestRedisErrorsHideTheID: a failing Redis must not put the id in the error.
func TestRedisErrorsHideTheID(t *testing.T) {
	ctx := context.Background()
	client := newRedisClient(t)
	r := NewRedis(client, testenv.RedisPrefix(t))
	client.Close() // every command now fails
	id, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	errs := []error{
		r.Put(ctx, Session{ID: id, UserID: "u", ExpiresAt: time.Now().Add(time.Hour)}),
		func() error { _, err := r.Get(ctx, id); return err }(),
		r.Delete(ctx, id),
	}
	for i, err := range errs {
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("call %d on a closed client = %v, want a Redis error", i, err)
			continue
		}
		if strings.Contains(err.Error(), id) {
			t.Errorf("error %q contains the session id", err)
		}
	}
}
