package ratelimit

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Unix(1_760_000_000, 0)

func newLimiter(t testing.TB, c Config) *Limiter {
	t.Helper()
	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func key(i int) [16]byte {
	var k [16]byte
	binary.LittleEndian.PutUint64(k[:], uint64(i))
	return k
}

func TestBurstThenRefuse(t *testing.T) {
	l := newLimiter(t, Config{Rate: 2, Burst: 5}) // one token every 500ms
	k := key(1)
	for i := 0; i < 5; i++ {
		if ok, ra := l.Allow(k, t0); !ok || ra != 0 {
			t.Fatalf("request %d: ok=%v retryAfter=%v, want allowed", i, ok, ra)
		}
	}
	ok, ra := l.Allow(k, t0)
	if ok || ra != 500*time.Millisecond {
		t.Fatalf("after burst: ok=%v retryAfter=%v, want refused with 500ms", ok, ra)
	}
	// Refusals do not consume tokens: retryAfter only shrinks with time.
	if ok, ra := l.Allow(k, t0.Add(200*time.Millisecond)); ok || ra != 300*time.Millisecond {
		t.Fatalf("at +200ms: ok=%v retryAfter=%v, want refused with 300ms", ok, ra)
	}
	if ok, _ := l.Allow(k, t0.Add(500*time.Millisecond)); !ok {
		t.Fatal("at +500ms: refused, want allowed")
	}
	if ok, ra := l.Allow(k, t0.Add(500*time.Millisecond)); ok || ra != 500*time.Millisecond {
		t.Fatalf("at +500ms again: ok=%v retryAfter=%v, want refused with 500ms", ok, ra)
	}
}

func TestRefill(t *testing.T) {
	l := newLimiter(t, Config{Rate: 1, Burst: 3})
	k := key(1)
	for i := 0; i < 3; i++ {
		l.Allow(k, t0)
	}
	tests := []struct {
		at      time.Duration
		allowed int // requests that should pass at this time
	}{
		{0, 0},
		{time.Second, 1},
		{3 * time.Second, 2}, // two more seconds, two more tokens
		{time.Hour, 3},       // refill caps at Burst
		{time.Hour + 500*time.Millisecond, 0},
	}
	for _, tt := range tests {
		now := t0.Add(tt.at)
		n := 0
		for {
			ok, _ := l.Allow(k, now)
			if !ok {
				break
			}
			n++
		}
		if n != tt.allowed {
			t.Errorf("at +%v: %d allowed, want %d", tt.at, n, tt.allowed)
		}
	}
}

func TestIndependentKeys(t *testing.T) {
	l := newLimiter(t, Config{Rate: 1, Burst: 1})
	if ok, _ := l.Allow(key(1), t0); !ok {
		t.Fatal("key 1 refused")
	}
	if ok, _ := l.Allow(key(1), t0); ok {
		t.Fatal("key 1 allowed twice")
	}
	if ok, _ := l.Allow(key(2), t0); !ok {
		t.Fatal("key 2 refused because of key 1")
	}
}

func TestConcurrent(t *testing.T) {
	const burst, workers, per = 100, 8, 50
	l := newLimiter(t, Config{Rate: 1e-3, Burst: burst})
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if ok, _ := l.Allow(key(7), t0); ok { // all on one key
					allowed.Add(1)
				}
				l.Allow(key(1000+w*per+i), t0) // and distinct keys
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != burst {
		t.Fatalf("shared key: %d allowed, want exactly %d", n, burst)
	}
	if n := l.Len(); n != 1+workers*per {
		t.Fatalf("Len = %d, want %d", n, 1+workers*per)
	}
}

func TestMemoryBounded(t *testing.T) {
	const maxKeys = 1024
	l := newLimiter(t, Config{Rate: 1, Burst: 2, MaxKeys: maxKeys})
	// A heavy client keeps being limited while a flood of distinct keys
	// (10x MaxKeys) comes in at the same instant.
	heavy := key(-1)
	l.Allow(heavy, t0)
	l.Allow(heavy, t0)
	for i := 0; i < 10*maxKeys; i++ {
		l.Allow(key(i), t0)
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after %d keys: Len = %d > MaxKeys %d", i+1, n, maxKeys)
		}
	}
	// Later, when buckets have refilled, new keys evict full buckets.
	later := t0.Add(time.Hour)
	for i := 0; i < 10*maxKeys; i++ {
		if ok, _ := l.Allow(key(1_000_000+i), later); !ok {
			t.Fatal("fresh key refused")
		}
	}
	if n := l.Len(); n > maxKeys {
		t.Fatalf("Len = %d > MaxKeys %d", n, maxKeys)
	}
}

func TestEvictsFullBucketsFirst(t *testing.T) {
	l := newLimiter(t, Config{Rate: 1, Burst: 2, MaxKeys: numShards * 4})
	// Fill every shard with buckets that will be full one second later...
	for i := 0; l.Len() < numShards*4; i++ {
		l.Allow(key(i), t0)
	}
	// ...except for a client that drained its bucket just now.
	now := t0.Add(2 * time.Second)
	drained := key(-1)
	l.Allow(drained, now)
	l.Allow(drained, now)
	for i := 0; i < 1000; i++ {
		l.Allow(key(1_000_000+i), now)
	}
	if ok, _ := l.Allow(drained, now); ok {
		t.Fatal("drained client's bucket was evicted before full ones")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		c    Config
		want string
	}{
		{Config{Rate: 0, Burst: 1}, "rate"},
		{Config{Rate: -1, Burst: 1}, "rate"},
		{Config{Rate: 1e12, Burst: 1}, "rate"},
		{Config{Rate: 1, Burst: 0}, "burst"},
		{Config{Rate: 1e-9, Burst: 1 << 40}, "burst"},
		{Config{Rate: 1, Burst: 1, MaxKeys: -1}, "max keys"},
	}
	for _, tt := range tests {
		_, err := New(tt.c)
		if err == nil || !strings.Contains(err.Error(), "ratelimit: "+tt.want+":") {
			t.Errorf("New(%+v) = %v, want error naming %q", tt.c, err, tt.want)
		}
	}
	if _, err := New(Config{Rate: 0.1, Burst: 10}); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestKeyIP(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:eeee:dddd:cccc", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"fe80::1%eth0", "fe80::2", true},
	}
	for _, tt := range tests {
		ka, kb := KeyIP(netip.MustParseAddr(tt.a)), KeyIP(netip.MustParseAddr(tt.b))
		if (ka == kb) != tt.same {
			t.Errorf("KeyIP(%s) == KeyIP(%s): %v, want %v", tt.a, tt.b, ka == kb, tt.same)
		}
	}
	if got, want := KeyIP(netip.MustParseAddr("192.0.2.1")), netip.MustParseAddr("::ffff:192.0.2.1").As16(); got != want {
		t.Errorf("IPv4 key = %x, want %x", got, want)
	}
	if KeyIP(netip.Addr{}) != [16]byte{} {
		t.Error("zero Addr: want zero key")
	}
}

func TestKeyString(t *testing.T) {
	a, b := KeyString("user", "alice"), KeyString("user", "alice")
	if a != b {
		t.Error("not deterministic")
	}
	distinct := [][2]string{{"user", "alice"}, {"client", "alice"}, {"user", "bob"}, {"usera", "lice"}, {"", "useralice"}}
	seen := map[[16]byte][2]string{}
	for _, p := range distinct {
		k := KeyString(p[0], p[1])
		if q, ok := seen[k]; ok {
			t.Errorf("KeyString%q == KeyString%q", p, q)
		}
		seen[k] = p
	}
}

func TestAllowAllocs(t *testing.T) {
	l := newLimiter(t, Config{Rate: 1, Burst: 10})
	keys := make([][16]byte, 1000)
	for i := range keys {
		keys[i] = KeyIP(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
		l.Allow(keys[i], t0) // grow the maps first
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() { l.Allow(keys[i%len(keys)], t0); i++ }); n != 0 {
		t.Errorf("Allow: %v allocs/op, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { KeyString("user", "alice@example.com") }); n != 0 {
		t.Errorf("KeyString: %v allocs/op, want 0", n)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := newLimiter(b, Config{Rate: 10, Burst: 20})
	keys := make([][16]byte, 4096)
	for i := range keys {
		keys[i] = KeyIP(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	now := t0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(keys[i&(len(keys)-1)], now)
		i++
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := newLimiter(b, Config{Rate: 10, Burst: 20})
	keys := make([][16]byte, 4096)
	for i := range keys {
		keys[i] = KeyIP(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	var id atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(id.Add(1)) * 1000
		for pb.Next() {
			l.Allow(keys[i&(len(keys)-1)], t0)
			i++
		}
	})
}

func BenchmarkAllowEvicting(b *testing.B) {
	l := newLimiter(b, Config{Rate: 1, Burst: 5, MaxKeys: 1 << 14})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(key(i), t0) // every key new: each Allow evicts
		i++
	}
}

func BenchmarkKeyString(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		KeyString("user", "alice@example.com")
	}
}
