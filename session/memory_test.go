package session

import (
	"context"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/testenv"
)

func (m *Memory) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

func TestMemorySweep(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	m := newMemoryStore(t, clock)
	now := clock.Now()
	for i, ttl := range []time.Duration{time.Minute, 2 * time.Minute, time.Hour} {
		s := Session{ID: string(rune('a' + i)), UserID: "u", ExpiresAt: now.Add(ttl)}
		if err := m.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		advance     time.Duration
		wantDropped int
		wantLeft    int
	}{
		{30 * time.Second, 0, 3},
		{30 * time.Second, 1, 2}, // the 1-minute session ends exactly now
		{time.Minute, 1, 1},
		{time.Minute, 0, 1},
		{time.Hour, 1, 0},
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		if got := m.sweep(); got != tt.wantDropped {
			t.Errorf("at +%v: sweep dropped %d, want %d", clock.Now().Sub(now), got, tt.wantDropped)
		}
		if got := m.count(); got != tt.wantLeft {
			t.Errorf("at +%v: %d sessions left, want %d", clock.Now().Sub(now), got, tt.wantLeft)
		}
	}
}

func TestMemoryGetDropsExpired(t *testing.T) {
	clock := newFakeClock()
	m := newMemoryStore(t, clock)
	if err := m.Put(context.Background(), Session{ID: "a", UserID: "u", ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := m.Get(context.Background(), "a"); err != ErrNotFound {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	if n := m.count(); n != 0 {
		t.Fatalf("%d sessions kept after Get found them expired, want 0", n)
	}
}

func TestMemorySweeperRunsAndStops(t *testing.T) {
	clock := newFakeClock()
	m := newMemory(time.Millisecond, clock.Now)
	t.Cleanup(func() { m.Close() })
	if err := m.Put(context.Background(), Session{ID: "a", UserID: "u", ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	testenv.WaitFor(t, 5*time.Second, "the background sweeper did not drop the expired session", func() bool { return m.count() == 0 })

	for range 2 { // Close is idempotent
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-m.done:
	default:
		t.Fatal("sweeper still running after Close")
	}
	// Still usable after Close.
	if err := m.Put(context.Background(), Session{ID: "b", UserID: "u", ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
}

func TestNewMemoryDefaults(t *testing.T) {
	m := NewMemory()
	defer m.Close()
	s := Session{ID: "a", UserID: "u", ExpiresAt: time.Now().Add(time.Minute)}
	if err := m.Put(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Get(context.Background(), "a"); err != nil || got != s {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, s)
	}
}
