package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/domicile/domicile/internal/testenv"
)

// fakeClock is the time both stores see in the conformance suite, so expiry
// is tested without waiting.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	// Real "now", so that Redis TTLs computed from it are sensible.
	return &fakeClock{t: time.Now()}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newMemoryStore(t *testing.T, clock *fakeClock) *Memory {
	t.Helper()
	m := newMemory(sweepInterval, clock.Now)
	t.Cleanup(func() { m.Close() })
	return m
}

func newRedisClient(t *testing.T) *redis.Client {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { client.Close() })
	return client
}

func newRedisStore(t *testing.T, clock *fakeClock) *Redis {
	t.Helper()
	r := NewRedis(newRedisClient(t), testenv.RedisPrefix(t))
	r.now = clock.Now
	return r
}

func TestStores(t *testing.T) {
	tests := []struct {
		name string
		new  func(*testing.T, *fakeClock) Store
	}{
		{"memory", func(t *testing.T, c *fakeClock) Store { return newMemoryStore(t, c) }},
		{"redis", func(t *testing.T, c *fakeClock) Store { return newRedisStore(t, c) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			testStore(t, tt.new(t, clock), clock)
		})
	}
}

// testStore is the behaviour every Store must have. Each case uses its own
// session ids, so they share one store.
func testStore(t *testing.T, s Store, clock *fakeClock) {
	ctx := context.Background()
	newSession := func(t *testing.T, ttl time.Duration) Session {
		t.Helper()
		id, err := NewID()
		if err != nil {
			t.Fatal(err)
		}
		now := clock.Now()
		return Session{ID: id, UserID: "eu-west:u-" + id[:8], Home: "eu-west", CreatedAt: now, ExpiresAt: now.Add(ttl)}
	}
	put := func(t *testing.T, sess Session) {
		t.Helper()
		if err := s.Put(ctx, sess); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	wantSession := func(t *testing.T, want Session) {
		t.Helper()
		got, err := s.Get(ctx, want.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got.ID != want.ID || got.UserID != want.UserID || got.Home != want.Home ||
			!got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
			t.Fatalf("Get = %+v, want %+v", got, want)
		}
	}
	wantNotFound := func(t *testing.T, id string) {
		t.Helper()
		got, err := s.Get(ctx, id)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get = %+v, %v; want ErrNotFound", got, err)
		}
		if got != (Session{}) {
			t.Fatalf("Get returned %+v with ErrNotFound, want the zero Session", got)
		}
	}

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"put then get", func(t *testing.T) {
			sess := newSession(t, time.Hour)
			put(t, sess)
			wantSession(t, sess)
		}},
		{"unknown id", func(t *testing.T) {
			wantNotFound(t, "no-such-session")
			wantNotFound(t, "")
		}},
		{"put replaces", func(t *testing.T) {
			sess := newSession(t, time.Hour)
			put(t, sess)
			sess.UserID, sess.ExpiresAt = "eu-west:u-other", sess.ExpiresAt.Add(time.Hour)
			put(t, sess)
			wantSession(t, sess)
		}},
		{"sessions are independent", func(t *testing.T) {
			a, b := newSession(t, time.Hour), newSession(t, time.Hour)
			put(t, a)
			put(t, b)
			if err := s.Delete(ctx, a.ID); err != nil {
				t.Fatal(err)
			}
			wantNotFound(t, a.ID)
			wantSession(t, b)
		}},
		{"delete is idempotent", func(t *testing.T) {
			sess := newSession(t, time.Hour)
			put(t, sess)
			for range 2 {
				if err := s.Delete(ctx, sess.ID); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				wantNotFound(t, sess.ID)
			}
			if err := s.Delete(ctx, "never-existed"); err != nil {
				t.Fatalf("Delete of an unknown id: %v", err)
			}
		}},
		{"expired session is not found", func(t *testing.T) {
			sess := newSession(t, time.Hour)
			put(t, sess)
			clock.Advance(time.Hour - time.Second)
			wantSession(t, sess)
			clock.Advance(time.Second) // exactly ExpiresAt: ended
			wantNotFound(t, sess.ID)
		}},
		{"put of an ended session is refused", func(t *testing.T) {
			for _, ttl := range []time.Duration{-time.Hour, -time.Nanosecond, 0} {
				sess := newSession(t, ttl)
				if err := s.Put(ctx, sess); !errors.Is(err, ErrExpired) {
					t.Errorf("Put(ttl %v) = %v, want ErrExpired", ttl, err)
				}
				wantNotFound(t, sess.ID)
			}
		}},
		{"invalid sessions are refused", func(t *testing.T) {
			valid := newSession(t, time.Hour)
			noID, noUser, noExpiry := valid, valid, valid
			noID.ID, noUser.UserID, noExpiry.ExpiresAt = "", "", time.Time{}
			for _, sess := range []Session{noID, noUser, noExpiry} {
				if err := s.Put(ctx, sess); err == nil {
					t.Errorf("Put(%+v) succeeded, want an error", sess)
				}
			}
			wantNotFound(t, valid.ID)
		}},
		{"concurrent use", func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for range 16 {
				wg.Go(func() {
					id, err := NewID()
					if err != nil {
						errs <- err
						return
					}
					now := clock.Now()
					sess := Session{ID: id, UserID: "u", Home: "eu-west", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
					if err := s.Put(ctx, sess); err != nil {
						errs <- err
						return
					}
					if got, err := s.Get(ctx, id); err != nil || got.ID != id {
						errs <- fmt.Errorf("Get = %+v, %v", got, err)
						return
					}
					if err := s.Delete(ctx, id); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id, err := NewID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 43 {
			t.Fatalf("NewID() = %q: %d characters, want 43 (32 bytes, base64url, no padding)", id, len(id))
		}
		for _, r := range id {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				t.Fatalf("NewID() = %q contains %q, not base64url", id, r)
			}
		}
		if seen[id] {
			t.Fatalf("NewID() returned %q twice", id)
		}
		seen[id] = true
	}
}
