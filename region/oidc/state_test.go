package oidc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/domicile/domicile/internal/testenv"
)

// stateBackend makes a new, empty State.
type stateBackend struct {
	name string
	new  func(t *testing.T) State
}

func stateBackends() []stateBackend {
	return []stateBackend{
		{"memory", func(t *testing.T) State {
			m := NewMemoryState()
			t.Cleanup(func() { m.Close() })
			return m
		}},
		{"redis", func(t *testing.T) State {
			rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
			prefix := testenv.RedisPrefix(t)
			t.Cleanup(func() { rc.Close() })
			return NewRedisState(rc, prefix)
		}},
	}
}

// TestState is the conformance suite every State passes.
func TestState(t *testing.T) {
	for _, b := range stateBackends() {
		t.Run(b.name, func(t *testing.T) {
			t.Run("codes are single use", func(t *testing.T) { testCodes(t, b.new(t)) })
			t.Run("refresh rotation and reuse", func(t *testing.T) { testRefresh(t, b.new(t)) })
			t.Run("concurrent rotation: one wins, the family dies", func(t *testing.T) { testConcurrentRotation(t, b.new(t)) })
			t.Run("revocations", func(t *testing.T) { testRevocations(t, b.new(t)) })
			t.Run("sessions", func(t *testing.T) { testSessions(t, b.new(t)) })
			t.Run("expiry", func(t *testing.T) { testStateExpiry(t, b.new(t)) })
		})
	}
}

func testGrant(fid string) Grant {
	return Grant{ClientID: "app", RedirectURI: "https://app/cb", Scopes: []string{"openid", "offline_access"}, Nonce: "n",
		Challenge: "c", Subject: "eu-west.u1", SessionID: "sid-1", AuthTime: 1700000000, AMR: []string{"pwd"},
		Family: fid, FamilyExpiry: time.Now().Add(time.Hour).Unix()}
}

func testFamily(fid string) Family {
	return Family{ID: fid, ClientID: "app", Subject: "eu-west.u1", SessionID: "sid-1", Scopes: []string{"openid", "offline_access"},
		AuthTime: 1700000000, AMR: []string{"pwd"}, Expiry: time.Now().Add(time.Hour).Unix()}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func testCodes(t *testing.T, s State) {
	ctx := context.Background()
	g := testGrant("fam-1")
	must(t, s.PutCode(ctx, "eu-west.code1", g, time.Minute))
	got, used, err := s.PeekCode(ctx, "eu-west.code1")
	if err != nil || used || fmt.Sprint(got) != fmt.Sprint(g) {
		t.Fatalf("PeekCode = %+v %v %v, want %+v unused", got, used, err, g)
	}
	_, _, err = s.PeekCode(ctx, "eu-west.other")
	wantErr(t, "PeekCode(unknown)", err, ErrNotFound)
	_, err = s.UseCode(ctx, "eu-west.other")
	wantErr(t, "UseCode(unknown)", err, ErrNotFound)

	// Many at once: exactly one use succeeds.
	const n = 16
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			g2, err := s.UseCode(ctx, "eu-west.code1")
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrCodeUsed):
				if g2.Family != "fam-1" {
					t.Errorf("a refused use got grant %+v, want the code's (to revoke its family)", g2)
				}
			default:
				t.Errorf("UseCode: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d of %d concurrent uses succeeded, want 1", ok.Load(), n)
	}
	if _, used, err := s.PeekCode(ctx, "eu-west.code1"); err != nil || !used {
		t.Fatalf("PeekCode after use = used %v, %v; want used", used, err)
	}
}

func testRefresh(t *testing.T, s State) {
	ctx := context.Background()
	f := testFamily("fam-r")
	must(t, s.StartFamily(ctx, f, "eu-west.rt1"))
	got, err := s.Refresh(ctx, "eu-west.rt1")
	if err != nil || got.ID != "fam-r" || got.ClientID != "app" || fmt.Sprint(got.AMR) != "[pwd]" {
		t.Fatalf("Refresh(rt1) = %+v, %v", got, err)
	}
	_, err = s.Refresh(ctx, "eu-west.nothing")
	wantErr(t, "Refresh(unknown)", err, ErrNotFound)

	must(t, s.Rotate(ctx, "fam-r", "eu-west.rt1", "eu-west.rt2"))
	if _, err := s.Refresh(ctx, "eu-west.rt2"); err != nil {
		t.Fatalf("Refresh(rt2): %v", err)
	}
	if f2, cur, err := s.PeekRefresh(ctx, "eu-west.rt1"); err != nil || cur || f2.ID != "fam-r" {
		t.Fatalf("PeekRefresh(old rt1) = %v %v %v, want the family, not current", f2.ID, cur, err)
	}
	// Peeking changed nothing: rt2 still works.
	if _, cur, err := s.PeekRefresh(ctx, "eu-west.rt2"); err != nil || !cur {
		t.Fatalf("PeekRefresh(rt2) = current %v, %v", cur, err)
	}
	// Reuse of rt1: the family is revoked, rt2 with it, and its access
	// tokens.
	_, err = s.Refresh(ctx, "eu-west.rt1")
	wantErr(t, "Refresh(rotated rt1)", err, ErrReused)
	_, err = s.Refresh(ctx, "eu-west.rt2")
	wantErr(t, "Refresh(rt2 after reuse)", err, ErrRevoked)
	err = s.Rotate(ctx, "fam-r", "eu-west.rt2", "eu-west.rt3")
	wantErr(t, "Rotate after reuse", err, ErrRevoked)
	if r, err := s.AccessTokenRevoked(ctx, "fam-r.x", "fam-r"); err != nil || !r {
		t.Fatalf("access token of the reused family: revoked %v, %v", r, err)
	}

	// A rotation from a token that is no longer current is a reuse too.
	f2 := testFamily("fam-s")
	must(t, s.StartFamily(ctx, f2, "eu-west.s1"))
	must(t, s.Rotate(ctx, "fam-s", "eu-west.s1", "eu-west.s2"))
	wantErr(t, "Rotate(from s1 again)", s.Rotate(ctx, "fam-s", "eu-west.s1", "eu-west.s3"), ErrReused)
	_, err = s.Refresh(ctx, "eu-west.s2")
	wantErr(t, "Refresh(s2)", err, ErrRevoked)
	wantErr(t, "Rotate(unknown family)", s.Rotate(ctx, "fam-none", "a", "b"), ErrNotFound)
}

func testConcurrentRotation(t *testing.T, s State) {
	ctx := context.Background()
	must(t, s.StartFamily(ctx, testFamily("fam-c"), "eu-west.c0"))
	const n = 12
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := s.Refresh(ctx, "eu-west.c0"); err != nil {
				return // another rotation already won and this saw the reuse
			}
			err := s.Rotate(ctx, "fam-c", "eu-west.c0", fmt.Sprintf("eu-west.c1-%d", i))
			if err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrReused) && !errors.Is(err, ErrRevoked) {
				t.Errorf("Rotate: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() > 1 {
		t.Fatalf("%d concurrent rotations of one token succeeded, want at most 1", ok.Load())
	}
}

func testRevocations(t *testing.T, s State) {
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	if r, err := s.AccessTokenRevoked(ctx, "jti-1", ""); err != nil || r {
		t.Fatalf("fresh jti revoked %v, %v", r, err)
	}
	must(t, s.RevokeAccessToken(ctx, "jti-1", exp))
	if r, err := s.AccessTokenRevoked(ctx, "jti-1", ""); err != nil || !r {
		t.Fatalf("revoked jti: %v, %v", r, err)
	}
	must(t, s.RevokeAccessToken(ctx, "jti-old", time.Now().Add(-time.Minute))) // expired: a no-op
	// A family revoked before it exists (a code reused while its first
	// exchange is still running) is born revoked.
	must(t, s.RevokeFamily(ctx, "fam-later", time.Now().Add(time.Hour)))
	must(t, s.StartFamily(ctx, testFamily("fam-later"), "eu-west.l1"))
	_, err := s.Refresh(ctx, "eu-west.l1")
	wantErr(t, "Refresh(family revoked before it started)", err, ErrRevoked)
	if r, _ := s.AccessTokenRevoked(ctx, "fam-later.abc", "fam-later"); !r {
		t.Fatal("an access token of a revoked family is not revoked")
	}
	if r, _ := s.AccessTokenRevoked(ctx, "fam-other.abc", "fam-other"); r {
		t.Fatal("an access token of another family is revoked")
	}
}

func testSessions(t *testing.T, s State) {
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	must(t, s.StartFamily(ctx, testFamily("fam-s1"), "eu-west.t1"))
	must(t, s.StartFamily(ctx, testFamily("fam-s2"), "eu-west.t2"))
	must(t, s.BindSession(ctx, "sid-A", "app", "fam-s1", until))
	must(t, s.BindSession(ctx, "sid-A", "other", "fam-s2", until))
	must(t, s.BindSession(ctx, "sid-A", "app", "", until))
	must(t, s.BindSession(ctx, "sid-B", "third", "", until))
	clients, err := s.EndSession(ctx, "sid-A")
	if err != nil || fmt.Sprint(clients) != "[app other]" {
		t.Fatalf("EndSession = %v, %v; want [app other]", clients, err)
	}
	for _, tok := range []string{"eu-west.t1", "eu-west.t2"} {
		_, err := s.Refresh(ctx, tok)
		wantErr(t, "Refresh after the session ended", err, ErrRevoked)
	}
	if clients, err := s.EndSession(ctx, "sid-A"); err != nil || len(clients) != 0 {
		t.Fatalf("EndSession again = %v, %v; want nothing", clients, err)
	}
	if clients, err := s.EndSession(ctx, "sid-B"); err != nil || fmt.Sprint(clients) != "[third]" {
		t.Fatalf("EndSession(sid-B) = %v, %v", clients, err)
	}
}

func testStateExpiry(t *testing.T, s State) {
	ctx := context.Background()
	must(t, s.PutCode(ctx, "eu-west.short", testGrant("f"), 50*time.Millisecond))
	f := testFamily("fam-e")
	f.Expiry = time.Now().Add(1100 * time.Millisecond).Unix()
	must(t, s.StartFamily(ctx, f, "eu-west.e1"))
	waitFor(t, 3*time.Second, func() bool {
		_, _, err := s.PeekCode(ctx, "eu-west.short")
		return errors.Is(err, ErrNotFound)
	})
	waitFor(t, 4*time.Second, func() bool {
		_, err := s.Refresh(ctx, "eu-west.e1")
		return errors.Is(err, ErrNotFound)
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
