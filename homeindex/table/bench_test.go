package table

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// benchKey returns the i-th key of the stream with the given seed: uniformly
// random, deterministic, and generated without holding the keys in memory.
func benchKey(seed, i uint64) Key {
	var k Key
	x := mix64(seed<<40 ^ i)
	y := mix64(x ^ 0x9e3779b97f4a7c15)
	for j := range 8 {
		k[j] = byte(x >> (8 * j))
		k[8+j] = byte(y >> (8 * j))
	}
	return k
}

// benchValue is the value stored for the i-th key.
func benchValue(i uint64) Value {
	return Value{Region: uint16(i % 7), Version: uint32(i), Owner: mix64(i) & ownerMask}
}

const (
	seedHit  = 1
	seedMiss = 2
)

// fill returns a table made with New(0) holding the first n keys of seedHit.
func fill(n int) *Table {
	t := New(0)
	for i := range uint64(n) {
		t.Put(benchKey(seedHit, i), benchValue(i))
	}
	return t
}

var (
	table10MOnce sync.Once
	table10M     *Table
)

// get10M returns the shared 10M-entry table, building it on first use.
func get10M(b *testing.B) *Table {
	if testing.Short() {
		b.Skip("10M-entry table skipped in -short mode")
	}
	table10MOnce.Do(func() { table10M = fill(10_000_000) })
	return table10M
}

// probeKeys returns lookup keys: the first of every n keys of seed, in a
// random order, at most 1<<20 of them.
func probeKeys(seed uint64, n int) []Key {
	cnt := min(n, 1<<20)
	keys := make([]Key, cnt)
	for i := range keys {
		keys[i] = benchKey(seed, mix64(uint64(i)^0xabcdef)%uint64(n))
	}
	return keys
}

func benchGets(b *testing.B, t *Table, keys []Key, wantOK bool) {
	mask := len(keys) - 1
	if len(keys)&mask != 0 {
		b.Fatalf("probe key count %d is not a power of two", len(keys))
	}
	b.ReportAllocs()
	b.ResetTimer()
	found := 0
	for i := range b.N {
		if _, ok := t.Get(keys[i&mask]); ok {
			found++
		}
	}
	if want := map[bool]int{true: b.N, false: 0}[wantOK]; found != want {
		b.Fatalf("%d of %d lookups found their key, want %d", found, b.N, want)
	}
}

func BenchmarkGet(b *testing.B) {
	b.Run("10M-hit", func(b *testing.B) {
		t := get10M(b)
		benchGets(b, t, probeKeys(seedHit, 10_000_000), true)
	})
	b.Run("10M-miss", func(b *testing.B) {
		t := get10M(b)
		benchGets(b, t, probeKeys(seedMiss, 10_000_000), false)
	})
	small := fill(100_000)
	b.Run("100k-hit", func(b *testing.B) {
		benchGets(b, small, probeKeys(seedHit, 65536), true)
	})
	b.Run("100k-miss", func(b *testing.B) {
		benchGets(b, small, probeKeys(seedMiss, 65536), false)
	})
}

// BenchmarkPut inserts b.N new keys into a table that starts empty (New(0)),
// so it includes every growth step.
func BenchmarkPut(b *testing.B) {
	b.ReportAllocs()
	t := New(0)
	var i uint64
	for b.Loop() {
		t.Put(benchKey(seedHit, i), benchValue(i))
		i++
	}
	b.ReportMetric(float64(t.MemoryBytes())/float64(max(t.Len(), 1)), "mem-B/entry")
}

// BenchmarkSnapshotRange10M takes a view of the 10M-entry table and ranges
// over all of it.
func BenchmarkSnapshotRange10M(b *testing.B) {
	t := get10M(b)
	b.ReportAllocs()
	for b.Loop() {
		v := t.Snapshot()
		n := 0
		v.Range(func(Key, Value) bool { n++; return true })
		v.Release()
		if n != 10_000_000 {
			b.Fatalf("ranged over %d entries", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e7, "ns/entry")
}

// heapAlloc returns HeapAlloc after a full GC.
func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemory10M measures the memory held by a table made with New(0)
// and filled with 10M random keys: the Go heap it holds (HeapAlloc after a
// GC, before and after) plus its arena's slabs up to their last touched
// 2 MiB page (outside the heap); MemoryBytes counts the buckets in use. The
// arena's share of huge pages is from /proc/self/smaps (Linux).
func BenchmarkMemory10M(b *testing.B) {
	if testing.Short() {
		b.Skip("10M-entry table skipped in -short mode")
	}
	const n = 10_000_000
	var heap, arena, slab, huge float64
	for b.Loop() {
		before := heapAlloc()
		t := fill(n)
		after := heapAlloc()
		heap = (float64(after) - float64(before)) / n
		arena = float64(t.arena.usedBytes()) / n
		slab = float64(t.MemoryBytes()) / float64(t.Len())
		huge = float64(arenaHugeBytes(t.arena)) / float64(t.arena.usedBytes())
		runtime.KeepAlive(t)
	}
	b.ReportMetric(heap+arena, "B/entry")
	b.ReportMetric(heap, "heap-B/entry")
	b.ReportMetric(arena, "arena-B/entry")
	b.ReportMetric(slab, "MemoryBytes/entry")
	b.ReportMetric(huge, "huge-page-share")
}

// BenchmarkRandomLoad is a baseline for BenchmarkGet/10M, measured in the
// same run: random loads from an array as large as the 10M-entry table,
// independent from one iteration to the next as consecutive lookups are.
// "one" loads one word per iteration; "two" loads two words in different
// places, as a lookup reads its two candidate buckets; "chain" is the
// latency of one such load.
func BenchmarkRandomLoad(b *testing.B) {
	words := 300 << 20 / 8
	a := make([]uint64, words)
	for i := range a {
		a[i] = uint64(i)
	}
	idx := make([]uint32, 1<<20)
	for i := range idx {
		idx[i] = uint32(mix64(uint64(i)) % uint64(words))
	}
	b.Run("one", func(b *testing.B) {
		var s uint64
		for i := range b.N {
			s += a[idx[i&(1<<20-1)]]
		}
		sink = s
	})
	// chain: each load's address is the previous load's value (a random
	// cycle through every cache line of the array): the latency of one
	// memory access that misses the caches and the TLB, which a lookup
	// pays at least once.
	b.Run("chain", func(b *testing.B) {
		lines := uint32(words / 8)
		next := make([]uint32, lines)
		for i := range next {
			next[i] = uint32(i)
		}
		// Sattolo's shuffle: one cycle through all the lines.
		for i := lines - 1; i > 0; i-- {
			j := uint32(mix64(uint64(i)) % uint64(i))
			next[i], next[j] = next[j], next[i]
		}
		for i := range lines {
			a[uint64(i)*8] = uint64(next[i]) * 8
		}
		next = nil
		j := uint64(0)
		b.ResetTimer()
		for range b.N {
			j = a[j]
		}
		sink = j
	})
	b.Run("two", func(b *testing.B) {
		var s uint64
		for i := range b.N {
			j := idx[i&(1<<20-1)]
			s += a[j] + a[(j*7+12345)%uint32(words)]
		}
		sink = s
	})
}

// sink keeps the compiler from dropping the loads above.
var sink uint64

// arenaHugeBytes returns how many bytes of a's slabs are backed by huge
// pages, from the AnonHugePages lines of /proc/self/smaps (0 if unknown).
func arenaHugeBytes(a *arena) int64 {
	f, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	var total int64
	in := false
	for line := range strings.Lines(string(f)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if r := strings.SplitN(fields[0], "-", 2); len(r) == 2 && !strings.HasSuffix(fields[0], ":") {
			lo, err1 := strconv.ParseUint(r[0], 16, 64)
			hi, err2 := strconv.ParseUint(r[1], 16, 64)
			in = err1 == nil && err2 == nil && a.overlaps(uintptr(lo), uintptr(hi))
			continue
		}
		if in && fields[0] == "AnonHugePages:" && len(fields) >= 2 {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			total += kb << 10
		}
	}
	return total
}
