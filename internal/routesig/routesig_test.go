package routesig

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	testKey  = bytes.Repeat([]byte("k"), 32)
	otherKey = bytes.Repeat([]byte("o"), 32)
	t0       = time.UnixMilli(1_760_000_000_000)
)

func newPair(t testing.TB, window time.Duration) (*Signer, *Verifier) {
	t.Helper()
	s, err := NewSigner(testKey, "router-1")
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(testKey, "eu-west", window)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func sign(s *Signer, method, path, region string, now time.Time) string {
	return string(s.AppendHeader(nil, method, path, region, now))
}

func TestRoundTrip(t *testing.T) {
	s, v := newPair(t, 0)
	h := sign(s, "POST", "/oauth2/token?x=1", "eu-west", t0)
	if !strings.HasPrefix(h, "v1;r=eu-west;t=1760000000000;n=router-1.") {
		t.Fatalf("unexpected header %q", h)
	}
	if err := v.Verify(h, "POST", "/oauth2/token?x=1", t0.Add(time.Second)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Successive headers carry distinct nonces.
	h2 := sign(s, "POST", "/oauth2/token?x=1", "eu-west", t0)
	if h == h2 {
		t.Fatal("two headers are identical")
	}
	if err := v.Verify(h2, "POST", "/oauth2/token?x=1", t0); err != nil {
		t.Fatalf("Verify second: %v", err)
	}
	// AppendHeader appends.
	if got := string(s.AppendHeader([]byte("x:"), "GET", "/", "eu-west", t0)); !strings.HasPrefix(got, "x:v1;") {
		t.Fatalf("AppendHeader did not append: %q", got)
	}
}

func TestRestartedSignerUsesFreshNonces(t *testing.T) {
	s1, v := newPair(t, 0)
	s2, err := NewSigner(testKey, "router-1") // same router ID, counter restarts
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(sign(s1, "GET", "/", "eu-west", t0), "GET", "/", t0); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(sign(s2, "GET", "/", "eu-west", t0), "GET", "/", t0); err != nil {
		t.Fatalf("restarted signer's first nonce refused: %v", err)
	}
}

func TestVerifyErrors(t *testing.T) {
	s, v := newPair(t, 30*time.Second)
	other, err := NewSigner(otherKey, "router-1")
	if err != nil {
		t.Fatal(err)
	}
	good := func() string { return sign(s, "GET", "/users/me", "eu-west", t0) }
	replace := func(old, new string) string {
		h := good()
		if !strings.Contains(h, old) {
			panic("no " + old + " in " + h)
		}
		return strings.Replace(h, old, new, 1)
	}
	flipSig := func() string {
		h := []byte(good())
		i := len(h) - 5
		if h[i] == 'A' {
			h[i] = 'B'
		} else {
			h[i] = 'A'
		}
		return string(h)
	}

	tests := []struct {
		name         string
		value        string
		method, path string
		now          time.Time
		want         error
	}{
		{"missing", "", "GET", "/users/me", t0, ErrMissing},
		{"garbage", "hello world", "GET", "/users/me", t0, ErrMalformed},
		{"other version", replace("v1;", "v2;"), "GET", "/users/me", t0, ErrMalformed},
		{"truncated", good()[:40], "GET", "/users/me", t0, ErrMalformed},
		{"truncated signature", good()[:len(good())-1], "GET", "/users/me", t0, ErrMalformed},
		{"extra field", good() + ";x=1", "GET", "/users/me", t0, ErrMalformed},
		{"reordered", "v1;t=1;r=eu-west;n=a;s=" + strings.Repeat("A", 43), "GET", "/", t0, ErrMalformed},
		{"leading zero timestamp", replace(";t=1", ";t=01"), "GET", "/users/me", t0, ErrMalformed},
		{"bad region chars", replace("r=eu-west", "r=eu west"), "GET", "/users/me", t0, ErrMalformed},
		{"newline in path", good(), "GET", "/users/me\n", t0, ErrMalformed},
		{"empty method", good(), "", "/users/me", t0, ErrMalformed},
		{"tampered method", good(), "POST", "/users/me", t0, ErrBadSignature},
		{"tampered path", good(), "GET", "/users/you", t0, ErrBadSignature},
		{"tampered region", replace("r=eu-west", "r=us-east"), "GET", "/users/me", t0, ErrBadSignature},
		{"tampered timestamp", replace(";t=1760000000000", ";t=1760000000001"), "GET", "/users/me", t0, ErrBadSignature},
		{"tampered nonce", replace("n=router-1.", "n=router-2."), "GET", "/users/me", t0, ErrBadSignature},
		{"tampered signature", flipSig(), "GET", "/users/me", t0, ErrBadSignature},
		{"other key", sign(other, "GET", "/users/me", "eu-west", t0), "GET", "/users/me", t0, ErrBadSignature},
		{"stale past", good(), "GET", "/users/me", t0.Add(30*time.Second + time.Millisecond), ErrStale},
		{"stale future", good(), "GET", "/users/me", t0.Add(-30*time.Second - time.Millisecond), ErrStale},
		{"edge of window", good(), "GET", "/users/me", t0.Add(30 * time.Second), nil},
		{"wrong region", sign(s, "GET", "/users/me", "us-east", t0), "GET", "/users/me", t0, ErrWrongRegion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(tt.value, tt.method, tt.path, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Verify(%q) = %v, want %v", tt.value, err, tt.want)
			}
		})
	}
}

func TestWrongRegionError(t *testing.T) {
	s, v := newPair(t, 0)
	err := v.Verify(sign(s, "GET", "/", "us-east", t0), "GET", "/", t0)
	var wre *WrongRegionError
	if !errors.As(err, &wre) || wre.Region != "us-east" {
		t.Fatalf("err = %#v, want *WrongRegionError{us-east}", err)
	}
	if !errors.Is(err, ErrWrongRegion) {
		t.Fatal("errors.Is(err, ErrWrongRegion) = false")
	}
}

func TestReplay(t *testing.T) {
	s, v := newPair(t, 30*time.Second)
	h := sign(s, "GET", "/", "eu-west", t0)
	if err := v.Verify(h, "GET", "/", t0); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(h, "GET", "/", t0.Add(time.Second)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: err = %v, want ErrReplay", err)
	}
}

func TestForgedHeadersDoNotFillCache(t *testing.T) {
	_, v := newPair(t, 0)
	other, _ := NewSigner(otherKey, "router-1")
	for i := 0; i < 100; i++ {
		if err := v.Verify(sign(other, "GET", "/", "eu-west", t0), "GET", "/", t0); !errors.Is(err, ErrBadSignature) {
			t.Fatal(err)
		}
	}
	if n := v.replay.len(); n != 0 {
		t.Fatalf("replay cache holds %d nonces after forged headers", n)
	}
}

// A header signed by a router whose clock runs a full window ahead stays
// replay-protected until its timestamp goes stale, across rotations.
func TestReplayAcrossRotations(t *testing.T) {
	const w = 30 * time.Second
	s, v := newPair(t, w)
	period := 2 * w
	// Arrive just before a rotation boundary, signed a window in the future.
	arrive := time.Unix(0, (t0.UnixNano()/int64(period)+1)*int64(period)-int64(time.Millisecond))
	h := sign(s, "GET", "/", "eu-west", arrive.Add(w))
	if err := v.Verify(h, "GET", "/", arrive); err != nil {
		t.Fatal(err)
	}
	for d := time.Duration(0); d <= 2*w; d += w / 4 {
		now := arrive.Add(d)
		if err := v.Verify(h, "GET", "/", now); !errors.Is(err, ErrReplay) {
			t.Fatalf("at +%v: err = %v, want ErrReplay", d, err)
		}
	}
	if err := v.Verify(h, "GET", "/", arrive.Add(2*w+time.Millisecond)); !errors.Is(err, ErrStale) {
		t.Fatalf("after 2 windows: err = %v, want ErrStale", err)
	}
}

func TestGenerationRotation(t *testing.T) {
	const w = 10 * time.Second
	_, v := newPair(t, w)
	c := &v.replay
	base := time.Unix(0, (t0.UnixNano()/int64(2*w))*int64(2*w)) // start of an epoch
	if err := c.add("a", base); err != nil {
		t.Fatal(err)
	}
	// Same epoch and next epoch: still remembered (current, then previous).
	for _, d := range []time.Duration{2*w - 1, 2 * w, 4*w - 1} {
		if err := c.add("a", base.Add(d)); !errors.Is(err, ErrReplay) {
			t.Fatalf("at +%v: err = %v, want ErrReplay", d, err)
		}
	}
	// Two rotations later it is forgotten.
	if err := c.add("a", base.Add(4*w)); err != nil {
		t.Fatalf("at +4w: err = %v, want nil", err)
	}
	// A jump over several epochs clears both generations.
	if err := c.add("b", base.Add(4*w)); err != nil {
		t.Fatal(err)
	}
	if err := c.add("c", base.Add(100*w)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := c.add(n, base.Add(100*w)); err != nil {
			t.Fatalf("%s after jump: err = %v, want nil", n, err)
		}
	}
	// Older times (out-of-order callers) do not rotate back.
	if err := c.add("c", base.Add(4*w)); !errors.Is(err, ErrReplay) {
		t.Fatalf("older time: err = %v, want ErrReplay", err)
	}
}

func TestReplayCacheBounded(t *testing.T) {
	v, err := newVerifier(testKey, "eu-west", time.Second, 2*replayShards*4) // 4 per shard and generation
	if err != nil {
		t.Fatal(err)
	}
	busy := 0
	for i := 0; i < 10_000; i++ {
		if err := v.replay.add(fmt.Sprint("n", i), t0); errors.Is(err, ErrBusy) {
			busy++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n := v.replay.len(); n > 2*replayShards*4 {
		t.Fatalf("cache holds %d nonces, bound is %d", n, 2*replayShards*4)
	}
	if busy == 0 {
		t.Fatal("no ErrBusy under flood")
	}
	// After rotation there is room again.
	if err := v.replay.add("fresh", t0.Add(10*time.Second)); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}

func TestConcurrentVerify(t *testing.T) {
	s, v := newPair(t, 0)
	const workers, per = 16, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				h := sign(s, "GET", "/x", "eu-west", t0)
				if err := v.Verify(h, "GET", "/x", t0); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// One header replayed by many goroutines at once: exactly one succeeds.
	shared := sign(s, "PUT", "/y", "eu-west", t0)
	var ok, replays atomic.Int32
	start := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			switch err := v.Verify(shared, "PUT", "/y", t0); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrReplay):
				replays.Add(1)
			default:
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ok.Load() != 1 || replays.Load() != workers-1 {
		t.Fatalf("shared nonce: %d successes, %d replays; want 1 and %d", ok.Load(), replays.Load(), workers-1)
	}
}

func TestConstructorErrors(t *testing.T) {
	long := strings.Repeat("a", 65)
	tests := []struct {
		name string
		err  func() error
		want string
	}{
		{"signer short key", func() error { _, err := NewSigner(make([]byte, 31), "r"); return err }, "key"},
		{"signer empty id", func() error { _, err := NewSigner(testKey, ""); return err }, "router ID"},
		{"signer bad id", func() error { _, err := NewSigner(testKey, "a;b"); return err }, "router ID"},
		{"signer long id", func() error { _, err := NewSigner(testKey, long); return err }, "router ID"},
		{"verifier short key", func() error { _, err := NewVerifier(nil, "eu", 0); return err }, "key"},
		{"verifier bad region", func() error { _, err := NewVerifier(testKey, "eu west", 0); return err }, "region"},
		{"verifier negative window", func() error { _, err := NewVerifier(testKey, "eu", -time.Second); return err }, "window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %q", err, tt.want)
			}
		})
	}
	if err := CheckRegion("eu-west-1"); err != nil {
		t.Fatal(err)
	}
}

func TestSignAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	s, _ := newPair(t, 0)
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = s.AppendHeader(buf[:0], "GET", "/users/me", "eu-west", t0) }); n != 0 {
		t.Errorf("AppendHeader: %v allocs/op, want 0", n)
	}
}

func FuzzVerify(f *testing.F) {
	s, err := NewSigner(testKey, "router-1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sign(s, "GET", "/", "eu-west", t0), "GET", "/", int64(0))
	f.Add(sign(s, "POST", "/a?b=c", "us-east", t0), "POST", "/a?b=c", int64(1000))
	f.Add("v1;r=;t=;n=;s=", "", "", int64(0))
	f.Add("v1;r=eu-west;t=999999999999999;n=x;s="+strings.Repeat("_", 43), "GET", "/\n", int64(-1))
	f.Fuzz(func(t *testing.T, value, method, path string, offsetMS int64) {
		v, err := NewVerifier(testKey, "eu-west", 0)
		if err != nil {
			t.Fatal(err)
		}
		err = v.Verify(value, method, path, t0.Add(time.Duration(offsetMS)*time.Millisecond))
		if err == nil && !strings.HasPrefix(value, "v1;r=eu-west;") {
			t.Fatalf("accepted %q", value)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	s, _ := newPair(b, 0)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.AppendHeader(buf[:0], "GET", "/oauth2/authorize?client_id=abc", "eu-west", t0)
	}
}

func BenchmarkVerify(b *testing.B) {
	s, v := newPair(b, 0)
	// Pre-sign distinct headers so that every Verify takes the success path.
	hs := make([]string, 1<<16)
	for i := range hs {
		hs[i] = sign(s, "GET", "/oauth2/authorize?client_id=abc", "eu-west", t0)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(hs) { // re-sign outside the timer when we run out
			b.StopTimer()
			v, _ = NewVerifier(testKey, "eu-west", 0)
			i = 0
			b.StartTimer()
		}
		if err := v.Verify(hs[i], "GET", "/oauth2/authorize?client_id=abc", t0); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	s, v := newPair(b, 0)
	hs := make([]string, 1<<20)
	for i := range hs {
		hs[i] = sign(s, "GET", "/", "eu-west", t0)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			if i >= int64(len(hs)) {
				b.Error("ran out of pre-signed headers")
				return
			}
			if err := v.Verify(hs[i], "GET", "/", t0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestIdentifierBinding(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	s, _ := NewSigner(key, "r1")
	v, _ := NewVerifier(key, "eu-west", 0)
	t0 := time.Unix(1_800_000_000, 0)
	id := [IdentLen]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	h := string(s.AppendHeaderFor(nil, "POST", "/signup", "eu-west", &id, t0))
	if !strings.Contains(h, ";k=0102030405060708090a0b0c0d0e0f10;") {
		t.Fatalf("header %q lacks the identifier hash", h)
	}
	r, err := v.VerifyRoute(h, "POST", "/signup", t0)
	if err != nil || !r.HasIdent || r.Ident != id || r.Region != "eu-west" {
		t.Fatalf("VerifyRoute: %+v %v", r, err)
	}
	// Another identifier hash, or none, breaks the signature.
	other := strings.Replace(h, ";k=01", ";k=ff", 1)
	if _, err := v.VerifyRoute(other, "POST", "/signup", t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered k: %v", err)
	}
	i := strings.Index(h, ";k=")
	stripped := h[:i] + h[i+3+2*IdentLen:]
	if _, err := v.VerifyRoute(stripped, "POST", "/signup", t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("k removed: %v", err)
	}
	if _, err := v.VerifyRoute(strings.Replace(h, ";k=01", ";k=1", 1), "POST", "/signup", t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short k: %v", err)
	}
	// Without an identifier, the route says so.
	r, err = v.VerifyRoute(string(s.AppendHeader(nil, "GET", "/", "eu-west", t0)), "GET", "/", t0)
	if err != nil || r.HasIdent {
		t.Fatalf("no identifier: %+v %v", r, err)
	}
}
