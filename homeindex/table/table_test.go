package table

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// keyOf builds a key from its two halves as the table splits it: k0 is bytes
// 0..7 (its top segBits bits choose the segment), k1 bytes 8..15.
func keyOf(k0, k1 uint64) Key {
	var k Key
	binary.LittleEndian.PutUint64(k[:8], k0)
	binary.LittleEndian.PutUint64(k[8:], k1)
	return k
}

// keyGen generates keys for a test.
type keyGen func(r *rand.Rand) Key

var keyGens = map[string]keyGen{
	// uniformly random keys, as in production
	"random": func(r *rand.Rand) Key { return keyOf(r.Uint64(), r.Uint64()) },
	// a small universe that includes the all-zero key and other extremes
	"tiny": func(r *rand.Rand) Key {
		x := []uint64{0, 1, 1 << 63, ^uint64(0), 1 << segShift, lowMask}
		return keyOf(x[r.IntN(len(x))], x[r.IntN(len(x))])
	},
	// every key in one segment
	"one-segment": func(r *rand.Rand) Key { return keyOf(7<<segShift|r.Uint64()&lowMask, r.Uint64()) },
	// one segment, and all keys share k1, hence their first bucket
	"same-k1": func(r *rand.Rand) Key { return keyOf(3<<segShift|r.Uint64()&lowMask, 42) },
	// one segment, and keys share k1 and the high bits of the rest, hence
	// both buckets until the segment is large: forces the stash
	"same-buckets": func(r *rand.Rand) Key { return keyOf(5<<segShift|r.Uint64()&0xff, 1<<63|r.Uint64()&0xff) },
	// one segment, one tag and one k1: every lookup finds a matching tag
	// and k1 in the wrong key
	"same-tag-k1": func(r *rand.Rand) Key { return keyOf(9<<segShift|r.Uint64()&lowMask&^tagMask|0x1234, 77) },
	// one segment and one tag: tags match keys with another k1
	"same-tag": func(r *rand.Rand) Key { return keyOf(11<<segShift|r.Uint64()&lowMask&^tagMask|0x4321, r.Uint64()) },
	// a few segments, k1 from a narrow range (close buckets)
	"narrow": func(r *rand.Rand) Key { return keyOf(uint64(r.IntN(3))<<segShift|r.Uint64()&lowMask, r.Uint64()>>40) },
}

// model is a Table together with the map it must agree with.
type model struct {
	t *testing.T
	m map[Key]Value
	h *Table
}

func newModel(t *testing.T, sizeHint int) *model {
	return &model{t: t, m: map[Key]Value{}, h: New(sizeHint)}
}

func (m *model) put(k Key, v Value) {
	m.h.Put(k, v)
	v.Owner &= ownerMask
	m.m[k] = v
}

func (m *model) del(k Key) {
	_, want := m.m[k]
	if got := m.h.Delete(k); got != want {
		m.t.Fatalf("Delete(%x) = %v, want %v", k, got, want)
	}
	delete(m.m, k)
}

func (m *model) get(k Key) {
	want, wantOK := m.m[k]
	if got, ok := m.h.Get(k); ok != wantOK || got != want {
		m.t.Fatalf("Get(%x) = %+v, %v; want %+v, %v", k, got, ok, want, wantOK)
	}
	checkLookup(m.t, m.h, k)
}

// checkLookup verifies that lookup (assembly on amd64) and lookupGo agree
// on k exactly, and that a fast-path answer is Get's.
func checkLookup(t *testing.T, h *Table, k Key) {
	t.Helper()
	k0, k1 := binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])
	sg := &h.segs[k0>>segShift]
	var got, want [4]uint64
	var st, wst int
	got[0], got[1], got[2], st = lookup(sg, k0, k1)
	want[0], want[1], want[2], wst = lookupGo(sg, k0, k1)
	got[3], want[3] = uint64(st), uint64(wst)
	if got != want {
		t.Fatalf("lookup(%x) = %x, lookupGo = %x", k, got, want)
	}
	if st != probeSlow {
		v, ok := h.getSlow(k)
		if ok != (st == probeHit) || decodeValue(got[0], got[1], got[2]) != v {
			t.Fatalf("lookup(%x) = %x, getSlow = %+v, %v", k, got, v, ok)
		}
	}
}

// check verifies that the table holds exactly the model's entries.
func (m *model) check() {
	m.t.Helper()
	if m.h.Len() != len(m.m) {
		m.t.Fatalf("Len() = %d, want %d", m.h.Len(), len(m.m))
	}
	for k := range m.m {
		m.get(k)
	}
	checkView(m.t, m.h.Snapshot(), m.m, true)
	checkInvariants(m.t, m.h)
}

// checkView verifies that v holds exactly want, and releases it if asked.
func checkView(t *testing.T, v *View, want map[Key]Value, release bool) {
	t.Helper()
	if v.Len() != len(want) {
		t.Fatalf("View.Len() = %d, want %d", v.Len(), len(want))
	}
	seen := make(map[Key]bool, len(want))
	v.Range(func(k Key, got Value) bool {
		if seen[k] {
			t.Fatalf("Range: key %x twice", k)
		}
		seen[k] = true
		if w, ok := want[k]; !ok || w != got {
			t.Fatalf("Range: %x = %+v, want %+v (present %v)", k, got, w, ok)
		}
		return true
	})
	if len(seen) != len(want) {
		t.Fatalf("Range visited %d entries, want %d", len(seen), len(want))
	}
	if release {
		v.Release()
	}
}

// checkEntry verifies that a directory entry's copy of its body's geometry
// and chunk pointers is the body's.
func checkEntry(t *testing.T, sg *segment, b *body) {
	t.Helper()
	g := sg.geom.Load()
	if len(b.chunks) > fastChunks {
		if g != 0 {
			t.Fatalf("body of %d chunks: geom = %#x, want 0 (slow path)", len(b.chunks), g)
		}
		return
	}
	want := uint64(b.nb)<<32 | uint64(b.shift)<<8
	if b.noStash {
		want |= 1
	}
	if g != want {
		t.Fatalf("geom = %#x, want %#x", g, want)
	}
	for i := range fastChunks {
		var c unsafe.Pointer
		if i < len(b.chunks) {
			c = b.chunks[i]
		}
		if sg.chunks[i] != c {
			t.Fatalf("entry chunk %d = %p, want %p", i, sg.chunks[i], c)
		}
	}
}

// checkInvariants verifies the internal bookkeeping of a quiescent table.
func checkInvariants(t *testing.T, h *Table) {
	t.Helper()
	mem := 0
	for seg := range h.segs {
		b := h.segs[seg].body.Load()
		if b.refs != 0 {
			t.Fatalf("segment %d: refs = %d with no views", seg, b.refs)
		}
		if h.segs[seg].seq.Load()&1 != 0 {
			t.Fatalf("segment %d: odd seq", seg)
		}
		checkEntry(t, &h.segs[seg], b)
		n := 0
		for i := range b.nbk {
			c := b.bucket(i)
			for s := range bucketSlots {
				if !c.occupied(s) {
					if c[0]>>(laneBits*s)&laneMask != 0 || c[1+3*s] != 0 || c[2+3*s] != 0 || c[3+3*s] != 0 || c[verHiWord]>>(laneBits*s)&laneMask != 0 {
						t.Fatalf("segment %d: empty slot %d/%d not zeroed", seg, i, s)
					}
					continue
				}
				n++
				lo, k1, _ := c.slot(s)
				if lo > lowMask || c[2+3*s]>>restBits > 0xffff {
					t.Fatalf("segment %d: slot %d/%d: bad key bits", seg, i, s)
				}
				if i1, i2 := b.buckets(lo, k1); i < b.nb && i != i1 && i != i2 {
					t.Fatalf("segment %d: key in bucket %d, not one of its buckets %d, %d", seg, i, i1, i2)
				}
			}
		}
		if n != b.count {
			t.Fatalf("segment %d: count = %d, slots used = %d", seg, b.count, n)
		}
		if b != emptyBody && b.count > b.maxCnt+b.stashLen()*bucketSlots {
			t.Fatalf("segment %d: count %d over limit %d", seg, b.count, b.maxCnt)
		}
		if b != emptyBody {
			mem += b.memBytes()
		}
	}
	if got := h.MemoryBytes() - int(unsafe.Sizeof(h.segs)); got != mem {
		t.Fatalf("MemoryBytes() counts %d slab bytes, want %d", got, mem)
	}
}

func TestAgainstMap(t *testing.T) {
	tests := []struct {
		keys     string
		sizeHint int
		n        int // keys per growth phase
	}{
		{"random", 0, 8000},
		{"random", 20000, 8000},
		{"tiny", 0, 50},
		{"one-segment", 0, 3000},
		{"same-k1", 0, 500},
		{"same-buckets", 0, 300},
		{"same-tag-k1", 0, 500},
		{"same-tag", 0, 500},
		{"narrow", 0, 2000},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/hint=%d", tc.keys, tc.sizeHint), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(tc.n)))
			gen := keyGens[tc.keys]
			m := newModel(t, tc.sizeHint)
			keys := func() Key {
				if len(m.m) > 0 && r.IntN(3) == 0 { // often an existing key
					for k := range m.m {
						return k
					}
				}
				return gen(r)
			}
			val := func() Value {
				return Value{Region: uint16(r.Uint32()), Version: r.Uint32(), Owner: r.Uint64()}
			}
			m.put(Key{}, val()) // the all-zero key
			m.check()
			// Grow through many sizes.
			for range tc.n {
				m.put(gen(r), val())
			}
			m.check()
			// Random mix of operations.
			for range tc.n {
				switch k := keys(); r.IntN(4) {
				case 0, 1:
					m.put(k, val())
				case 2:
					m.del(k)
				default:
					m.get(k)
				}
			}
			m.check()
			// Delete most, then grow again.
			for k := range m.m {
				if r.IntN(8) != 0 {
					m.del(k)
				}
			}
			m.check()
			for range tc.n {
				m.put(gen(r), val())
			}
			m.check()
			// Delete everything.
			for k := range m.m {
				m.del(k)
			}
			m.check()
			// (A pre-sized segment that never held a key keeps its slots.)
			if m.h.Len() != 0 || tc.sizeHint == 0 && m.h.MemoryBytes() != int(unsafe.Sizeof(m.h.segs)) {
				t.Fatalf("empty table: Len %d, MemoryBytes %d", m.h.Len(), m.h.MemoryBytes())
			}
			m.get(Key{})
			m.put(Key{}, val())
			m.check()
		})
	}
}

// TestLookupSeqlock checks that lookup gives up (probeSlow) while its
// segment is being written (odd seq) and for an entry without geometry.
func TestLookupSeqlock(t *testing.T) {
	h := New(0)
	k := keyOf(5<<segShift|12345, 678)
	h.Put(k, Value{Region: 3, Version: 9, Owner: 1})
	k0, k1 := binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])
	sg := &h.segs[5]
	if _, _, _, st := lookup(sg, k0, k1); st != probeHit {
		t.Fatalf("lookup of a stored key: status %d, want hit", st)
	}
	if _, _, _, st := lookup(sg, k0+1, k1); st != probeMiss {
		t.Fatalf("lookup of an absent key: status %d, want miss", st)
	}
	sg.seq.Add(1)
	for _, kk := range [][2]uint64{{k0, k1}, {k0 + 1, k1}} {
		for name, f := range map[string]func(*segment, uint64, uint64) (uint64, uint64, uint64, int){"lookup": lookup, "lookupGo": lookupGo} {
			if _, _, _, st := f(sg, kk[0], kk[1]); st != probeSlow {
				t.Fatalf("%s during a write: status %d, want slow", name, st)
			}
		}
	}
	sg.seq.Add(1)
	g := sg.geom.Swap(0)
	if _, _, _, st := lookup(sg, k0, k1); st != probeSlow {
		t.Fatalf("lookup with geometry 0: status %d, want slow", st)
	}
	sg.geom.Store(g)
	if v, ok := h.Get(k); !ok || v.Region != 3 {
		t.Fatalf("Get after the checks = %+v, %v", v, ok)
	}
}

func TestOwnerMasked(t *testing.T) {
	tests := []struct {
		owner, want uint64
	}{
		{0, 0},
		{1<<OwnerBits - 1, 1<<OwnerBits - 1},
		{1 << OwnerBits, 0},
		{^uint64(0), 1<<OwnerBits - 1},
		{0xdead_beef_cafe_f00d, 0xbeef_cafe_f00d},
	}
	h := New(0)
	for i, tc := range tests {
		k := keyOf(uint64(i), uint64(i))
		v := Value{Region: 0xffff, Version: 0xffff_ffff, Owner: tc.owner}
		h.Put(k, v)
		got, ok := h.Get(k)
		want := Value{Region: 0xffff, Version: 0xffff_ffff, Owner: tc.want}
		if !ok || got != want {
			t.Errorf("Put(Owner %#x): Get = %+v, %v; want %+v", tc.owner, got, ok, want)
		}
		h.Snapshot().Range(func(rk Key, rv Value) bool {
			if rk == k && rv != want {
				t.Errorf("Put(Owner %#x): Range gives %+v; want %+v", tc.owner, rv, want)
			}
			return true
		})
	}
}

func TestZeroKeyAndEmptyTable(t *testing.T) {
	h := New(0)
	if _, ok := h.Get(Key{}); ok {
		t.Fatal("empty table has the zero key")
	}
	if h.Delete(Key{}) {
		t.Fatal("Delete on an empty table reported true")
	}
	if h.Len() != 0 {
		t.Fatalf("Len = %d", h.Len())
	}
	v := h.Snapshot()
	if v.Len() != 0 {
		t.Fatalf("View.Len = %d", v.Len())
	}
	v.Range(func(Key, Value) bool { t.Fatal("Range on an empty view called fn"); return false })
	v.Release()
	v.Release() // harmless
	h.Put(Key{}, Value{})
	if got, ok := h.Get(Key{}); !ok || got != (Value{}) {
		t.Fatalf("Get(zero) = %+v, %v", got, ok)
	}
	if !h.Delete(Key{}) || h.Delete(Key{}) {
		t.Fatal("Delete(zero) twice did not report true, false")
	}
}

func TestRangeStops(t *testing.T) {
	h := New(0)
	for i := range 100 {
		h.Put(keyOf(mix64(uint64(i)), uint64(i)), Value{})
	}
	v := h.Snapshot()
	defer v.Release()
	n := 0
	v.Range(func(Key, Value) bool { n++; return n < 10 })
	if n != 10 {
		t.Fatalf("Range called fn %d times after it returned false at 10", n)
	}
}

func TestSnapshotIsolation(t *testing.T) {
	tests := []struct {
		name string
		n    int
		keys string
	}{
		{"random", 10000, "random"},
		{"one-segment", 2000, "one-segment"},
		{"same-buckets", 200, "same-buckets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(2, 3))
			gen := keyGens[tc.keys]
			m := newModel(t, 0)
			for i := range tc.n {
				m.put(gen(r), Value{Version: uint32(i)})
			}
			copyOf := func(src map[Key]Value) map[Key]Value {
				dst := make(map[Key]Value, len(src))
				for k, v := range src {
					dst[k] = v
				}
				return dst
			}
			mutate := func() {
				i := 0
				for k := range m.m {
					switch i % 4 {
					case 0:
						m.del(k)
					case 1:
						m.put(k, Value{Region: 9, Version: uint32(i), Owner: uint64(i)})
					}
					i++
				}
				for range tc.n / 4 {
					m.put(gen(r), Value{Region: 7})
				}
			}
			v1, want1 := m.h.Snapshot(), copyOf(m.m)
			mutate()
			checkView(t, v1, want1, false)
			v2, want2 := m.h.Snapshot(), copyOf(m.m)
			mutate()
			v3, want3 := m.h.Snapshot(), copyOf(m.m)
			mutate()
			checkView(t, v1, want1, false)
			checkView(t, v2, want2, true) // release the middle one
			mutate()
			checkView(t, v1, want1, true)
			checkView(t, v3, want3, false)
			mutate()
			checkView(t, v3, want3, true)
			m.check()
		})
	}
}

// TestSnapshotCopyOnWrite checks that a view shares the table's segments
// until they are written, and that Release makes in-place writes possible
// again.
func TestSnapshotCopyOnWrite(t *testing.T) {
	h := New(0)
	for i := range 30000 {
		h.Put(benchKey(seedHit, uint64(i)), benchValue(uint64(i)))
	}
	// A key of segment 0 that is present, and fits without growth.
	var k Key
	var seg uint64
	for i := uint64(0); ; i++ {
		k = benchKey(seedHit, i)
		if seg, _, _ = split(k); seg == 0 {
			break
		}
	}
	before := h.segs[seg].body.Load()
	mem := h.MemoryBytes()

	v := h.Snapshot()
	h.Put(k, Value{Region: 1})
	after := h.segs[seg].body.Load()
	if after == before {
		t.Fatal("write to a segment shared with a view modified it in place")
	}
	if h.MemoryBytes() != mem {
		t.Fatalf("copy of a segment changed MemoryBytes from %d to %d", mem, h.MemoryBytes())
	}
	for i := range h.segs {
		if i != int(seg) && h.segs[i].body.Load() != v.bodies[i] {
			t.Fatalf("segment %d was copied although not written", i)
		}
	}
	h.Put(k, Value{Region: 2}) // the copy is private: in place
	if h.segs[seg].body.Load() != after {
		t.Fatal("second write after a snapshot copied the segment again")
	}
	v.Release()
	other := h.segs[seg^1].body.Load()
	for i := uint64(0); ; i++ {
		k2 := benchKey(seedHit, i)
		if s, _, _ := split(k2); s == seg^1 {
			h.Put(k2, Value{Region: 3})
			break
		}
	}
	if h.segs[seg^1].body.Load() != other {
		t.Fatal("write after Release copied the segment")
	}
}

// TestConcurrent runs readers, a writer, and snapshot takers at once (run it
// with -race). Readers check that stable keys are always found, that every
// value they see is one the writer stored (no torn reads), and that views
// are consistent.
func TestConcurrent(t *testing.T) {
	const (
		stable  = 5000
		churn   = 5000
		rounds  = 6
		readers = 3
	)
	stableKey := func(i int) Key { return benchKey(10, uint64(i)) }
	churnKey := func(i int) Key { return benchKey(11, uint64(i)) }
	// Every value the writer stores is self-consistent: Owner and Region
	// are functions of Version.
	valueOf := func(ver uint32) Value {
		return Value{Region: uint16(ver * 7), Version: ver, Owner: mix64(uint64(ver)) & ownerMask}
	}
	consistent := func(v Value) bool { return v == valueOf(v.Version) }

	h := New(0)
	for i := range stable {
		h.Put(stableKey(i), valueOf(uint32(i)))
	}

	var done atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for g := range readers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 99))
			for !done.Load() {
				i := r.IntN(stable)
				v, ok := h.Get(stableKey(i))
				if !ok || !consistent(v) {
					fail(fmt.Errorf("Get(stable %d) = %+v, %v", i, v, ok))
					return
				}
				if v, ok := h.Get(churnKey(r.IntN(churn))); ok && !consistent(v) {
					fail(fmt.Errorf("Get(churn) = %+v: torn", v))
					return
				}
				if h.Len() < stable {
					fail(fmt.Errorf("Len() = %d < %d", h.Len(), stable))
					return
				}
			}
		})
	}
	// Views are taken, ranged and released by their own goroutine, as
	// the Raft snapshot persister does, while the writer writes.
	views := make(chan *View)
	wg.Go(func() {
		for v := range views {
			n, nStable := 0, 0
			v.Range(func(k Key, val Value) bool {
				n++
				if !consistent(val) {
					fail(fmt.Errorf("Range: torn value %+v", val))
				}
				return true
			})
			v.Range(func(k Key, val Value) bool {
				if int(val.Version) < stable && k == stableKey(int(val.Version)) {
					nStable++
				}
				return true
			})
			if n != v.Len() || nStable != stable {
				fail(fmt.Errorf("view: %d entries (Len %d), %d stable", n, v.Len(), nStable))
			}
			v.Release()
		}
	})
	ver := uint32(stable)
	for range rounds {
		for i := range churn {
			h.Put(churnKey(i), valueOf(ver))
			ver++
			if i%1000 == 0 {
				views <- h.Snapshot()
			}
		}
		for i := range stable {
			if i%3 == 0 {
				h.Put(stableKey(i), valueOf(uint32(i))) // rewrite in place
			}
		}
		for i := range churn {
			h.Delete(churnKey(i))
			if i%1000 == 0 {
				views <- h.Snapshot()
			}
		}
	}
	close(views)
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if h.Len() != stable {
		t.Fatalf("Len() = %d, want %d", h.Len(), stable)
	}
	checkInvariants(t, h)
}

// TestLargeSegment fills one segment past the chunk pointers a directory
// entry holds, so that its lookups take the slow path, then empties it
// again.
func TestLargeSegment(t *testing.T) {
	h := New(0)
	const n = 8000
	key := func(i int) Key {
		k := benchKey(12, uint64(i))
		k[7] = 0x05 // segment 0x05x: the top 12 bits of the first word
		k[6] &= 0x0f
		return k
	}
	for i := range n {
		h.Put(key(i), benchValue(uint64(i)))
	}
	k0 := key(0)
	seg := binary.LittleEndian.Uint64(k0[:8]) >> segShift
	if b := h.segs[seg].body.Load(); len(b.chunks) <= fastChunks {
		t.Fatalf("segment holds %d chunks; the test needs more than %d", len(b.chunks), fastChunks)
	}
	for i := range n {
		if v, ok := h.Get(key(i)); !ok || v != benchValue(uint64(i)) {
			t.Fatalf("Get(%d) = %+v, %v", i, v, ok)
		}
	}
	if _, ok := h.Get(key(n)); ok {
		t.Fatal("Get found a key never stored")
	}
	checkInvariants(t, h)
	for i := range n {
		h.Delete(key(i))
	}
	if h.Len() != 0 {
		t.Fatalf("Len() = %d after deleting everything", h.Len())
	}
	checkInvariants(t, h)
}

func TestMemoryBytesAndSizeHint(t *testing.T) {
	tests := []struct {
		sizeHint, n int
	}{
		{0, 0},
		{0, 20000},
		{20000, 20000},
		{1000, 20000},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("hint=%d/n=%d", tc.sizeHint, tc.n), func(t *testing.T) {
			h := New(tc.sizeHint)
			if tc.sizeHint >= numSegs && h.MemoryBytes() < tc.sizeHint*slotBytes {
				t.Fatalf("New(%d) holds only %d bytes", tc.sizeHint, h.MemoryBytes())
			}
			for i := range tc.n {
				h.Put(benchKey(seedHit, uint64(i)), benchValue(uint64(i)))
			}
			if h.Len() != tc.n {
				t.Fatalf("Len() = %d, want %d", h.Len(), tc.n)
			}
			checkInvariants(t, h)
			if tc.n > 0 {
				per := float64(h.MemoryBytes()-int(unsafe.Sizeof(h.segs))) / float64(tc.n)
				t.Logf("%.1f slab bytes per entry", per)
			}
		})
	}
}

// TestBodySizing checks that bodies use all of the memory the allocator
// gives them.
func TestBodySizing(t *testing.T) {
	for _, want := range []int{1, 4, 5, 100, 1000, 2500, 2700, 10000} {
		b := newBody(nil, want, 0)
		if b.slots() < want {
			t.Errorf("newBody(%d) has %d slots", want, b.slots())
		}
		if b.nb != b.nbk || b.mem != b.nbk*bucketBytes || b.maxCnt == 0 {
			t.Errorf("newBody(%d): nb %d, nbk %d, mem %d", want, b.nb, b.nbk, b.mem)
		}
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	h := New(0)
	for i := range 1000 {
		h.Put(benchKey(seedHit, uint64(i)), benchValue(uint64(i)))
	}
	k, miss := benchKey(seedHit, 7), benchKey(seedMiss, 7)
	if n := testing.AllocsPerRun(100, func() { h.Get(k); h.Get(miss) }); n != 0 {
		t.Fatalf("Get allocates %v times", n)
	}
}

// TestArenaReuse fills one segment (large chunks, so from the arena),
// empties and refills it many times, holding a View across some of the
// churn: the view keeps its entries, the table agrees with the model
// throughout, and the arena reuses freed chunks instead of growing.
func TestArenaReuse(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	gen := keyGens["one-segment"]
	m := newModel(t, 0)
	fillTo := func(n int) {
		for len(m.m) < n {
			m.put(gen(r), Value{Region: uint16(r.Uint32()), Version: r.Uint32(), Owner: r.Uint64()})
		}
	}
	fillTo(20000)
	m.check()
	if m.h.arena.usedBytes() == 0 {
		t.Fatal("a segment of 20000 entries took nothing from the arena")
	}
	first := m.h.arena.mappedBytes()
	for round := range 6 {
		var v *View
		var want map[Key]Value
		if round%2 == 0 {
			v = m.h.Snapshot()
			want = maps.Clone(m.m)
		}
		for k := range m.m {
			if r.IntN(4) != 0 {
				m.del(k)
			}
		}
		fillTo(20000)
		if v != nil {
			checkView(t, v, want, true)
		}
		m.check()
	}
	// Six rounds of churn, half of them with a view holding the old
	// bodies: at most twice the first arena.
	if got := m.h.arena.mappedBytes(); got > 2*first {
		t.Fatalf("arena grew from %d to %d bytes over the churn", first, got)
	}
}

// TestArenaReleased checks that the slabs of a table that is garbage
// collected are unmapped.
func TestArenaReleased(t *testing.T) {
	h := New(0)
	r := rand.New(rand.NewPCG(8, 8))
	gen := keyGens["one-segment"]
	for range 5000 {
		h.Put(gen(r), Value{Region: 1})
	}
	a := h.arena
	if a.mappedBytes() == 0 {
		t.Fatal("the table has no arena slabs")
	}
	h = nil
	for range 100 {
		runtime.GC()
		if a.mappedBytes() == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("arena still maps %d bytes after the table was collected", a.mappedBytes())
}
