// Package table is the in-memory home index replica held by every router:
// a hash table from 16-byte keyed hashes of user identifiers to a home
// region, built for many concurrent readers, a single writer (the Raft
// FSM), cheap point-in-time snapshots and about 31 bytes per entry.
//
// # Design
//
// The table is a fixed directory of 4096 segments chosen by the top 12 bits
// of the key's first word. Each segment points to a body: a bucketized
// cuckoo hash table whose buckets hold 4 slots of 28 bytes. A key lives in
// one of two buckets, chosen by fastrange of its second word and of the rest
// of its first word (the key is already uniformly random, so it is not
// hashed again). Each bucket starts with a word of four 16-bit lanes, each
// an occupancy bit and 15 key bits, so a lookup finds the candidate slot of
// both buckets with a few word operations and then checks one slot; the
// other 212 bits of key and value fill the rest of the slot. Insertion moves
// keys along the shortest cuckoo path (breadth-first search) when both
// buckets are full; deletion just clears the slot. A body grows by a small
// per-segment pseudo-random factor (3-9%) when 95% of its slots are in use,
// so the table stays ~88-95% full at every size and a rehash only ever
// touches one small segment. Keys that no arrangement can hold (possible
// only with adversarial keys) go to a small per-body stash.
//
// A directory entry also holds a copy of what a lookup needs of its body
// (bucket count, chunk size, the chunk pointers), so that a lookup goes from
// the directory entry straight to its two buckets: one dependent memory
// access fewer than through the body.
//
// Readers take no locks: each segment has a sequence counter that the writer
// makes odd while it modifies the segment's body in place or publishes a new
// body into the entry; a reader loads the counter, the entry's fields and
// the words it needs (all with atomic loads, so the race detector sees no
// race), checks the counter again before it follows a chunk pointer, and
// falls back to a slower retrying path if the counter was odd or changed.
// Growth, shrinking and copy-on-write build a new body and publish it; the
// old body is never modified again. Its chunks are reused once no View
// holds it (a reader still reading them sees its counter changed and
// retries).
//
// Bodies of large chunks keep those chunks in the table's arena (arena.go):
// slabs mapped outside the Go heap, backed by huge pages, from which freed
// chunks are reused. On amd64 Get's fast path is lookup_amd64.s, the same
// loads as lookupGo in fewer instructions.
//
// A View references the bodies current when it was taken and counts itself
// in each of them; the writer never modifies a referenced body in place but
// first copies it (copy-on-write per segment), so taking a View costs
// O(segments) and memory grows only with the segments written while Views
// are held.
package table

import (
	"encoding/binary"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Key is a 16-byte keyed hash (HMAC output) of a user identifier. Keys are
// assumed to be uniformly random: their bytes are used directly as the hash.
type Key = [16]byte

// Value is what the table stores for a key.
type Value struct {
	// Region is the home region's id.
	Region uint16
	// Version is the version of the entry (the low 32 bits of the Raft
	// index of its last change).
	Version uint32
	// Owner is the owner fingerprint. Only its low OwnerBits bits are
	// stored: Put masks it and Get returns the masked value.
	Owner uint64
}

// OwnerBits is the number of low bits of Value.Owner that the table stores.
const OwnerBits = 48

const ownerMask = 1<<OwnerBits - 1

// Directory geometry: the segment is the top segBits bits of the key's first
// word; inside the segment the key is its other segShift bits ("lo") and
// its second word ("k1").
const (
	segBits  = 12
	numSegs  = 1 << segBits
	segShift = 64 - segBits
	lowMask  = 1<<segShift - 1
)

// spinsBeforeYield is how many times a reader retries a segment that is
// being written before it starts yielding the processor between attempts.
const spinsBeforeYield = 64

// fastChunks is the number of chunk pointers a directory entry holds:
// lookups in a body of more chunks (a table of more than ~25M entries) take
// the slow path.
const fastChunks = 13

// segment is one directory entry: the segment's body and, for lookups, a
// copy of what they need of it (its geometry and chunk pointers), so that a
// lookup goes from the directory straight to the buckets. It is 128 bytes,
// two cache lines that the processor fetches together, and the directory is
// the Table's first field, so entries are aligned.
type segment struct {
	// seq is odd while the writer modifies the segment: its body in
	// place, or the entry itself when it publishes a new body.
	seq atomic.Uint64
	// geom is the body's nb<<32 | shift<<8 | noStash (bit 0), or 0 if
	// lookups must take the slow path (too many chunks).
	geom atomic.Uint64
	// body is the segment's current slot arrays; never nil.
	body atomic.Pointer[body]
	// chunks are body's first chunk pointers (atomic loads and stores).
	chunks [fastChunks]unsafe.Pointer
}

// The directory entry must be exactly two cache lines.
var (
	_ [unsafe.Sizeof(segment{}) - 128]byte
	_ [128 - unsafe.Sizeof(segment{})]byte
)

// publish makes b the segment's body (writer only).
func (sg *segment) publish(b *body) {
	var g uint64
	if len(b.chunks) <= fastChunks {
		g = uint64(b.nb)<<32 | uint64(b.shift)<<8
		if b.noStash {
			g |= 1
		}
	}
	sg.seq.Add(1)
	sg.geom.Store(g)
	for i := range sg.chunks {
		var c unsafe.Pointer
		if i < len(b.chunks) {
			c = b.chunks[i]
		}
		atomic.StorePointer(&sg.chunks[i], c)
	}
	sg.body.Store(b)
	sg.seq.Add(1)
}

// Table is a hash table from Key to Value. Get and Len may be called
// concurrently with each other, with one writer (Put or Delete) and with
// Snapshot and View methods. Put and Delete must be serialised by the
// caller.
type Table struct {
	segs  [numSegs]segment // first, so that entries are aligned
	count atomic.Int64     // number of entries
	mem   atomic.Int64     // bytes of the current bodies' slabs

	// wmu serialises the writer with Snapshot and View.Release, which
	// may run on other goroutines, and guards every body's count and refs
	// and pl.
	wmu sync.Mutex
	pl  placer
	// arena holds the buckets of every body of the table.
	arena *arena
}

// New returns an empty table. sizeHint is the number of entries expected;
// if it is positive the table is pre-sized for about that many, otherwise
// it starts with no slots at all and grows as needed.
func New(sizeHint int) *Table {
	t := &Table{}
	t.arena = newArena(t)
	per := float64(sizeHint) / numSegs
	for i := range t.segs {
		b := emptyBody
		if per >= 1 {
			// Room for ~10% more than the average, i.e. for all but
			// the fullest segments at large sizes.
			b = newBody(t.arena, int(per*1.1)+bucketSlots, 0)
			t.mem.Add(int64(b.memBytes()))
		}
		t.segs[i].publish(b)
	}
	return t
}

// split returns the key's segment, the rest of its first word, and its
// second word.
func split(k Key) (seg, lo, k1 uint64) {
	k0 := binary.LittleEndian.Uint64(k[:8])
	return k0 >> segShift, k0 & lowMask, binary.LittleEndian.Uint64(k[8:])
}

// join reverses split.
func join(seg, lo, k1 uint64) Key {
	var k Key
	binary.LittleEndian.PutUint64(k[:8], seg<<segShift|lo)
	binary.LittleEndian.PutUint64(k[8:], k1)
	return k
}

// Get returns the value stored for k and whether there is one. It does not
// allocate, lock or wait for the writer, and is safe concurrently with
// everything else.
//
// With the table much larger than the caches, the time of a lookup is that
// of its cache misses, and the processor overlaps the misses of
// consecutive lookups only if each lookup is short and free of branches it
// cannot predict; hence the shape of Get and probe. Anything unusual (a tag
// that matches another key, a stash, a concurrent write) goes to getSlow.
func (t *Table) Get(k Key) (Value, bool) {
	k0 := binary.LittleEndian.Uint64(k[:8])
	k1 := binary.LittleEndian.Uint64(k[8:])
	rest, own, hi, st := lookup(&t.segs[k0>>segShift], k0, k1)
	if st == probeSlow {
		return t.getSlow(k)
	}
	return decodeValue(rest, own, hi), st == probeHit
}

const ptrBytes = unsafe.Sizeof(unsafe.Pointer(nil))

// Results of lookup.
const (
	probeMiss = iota
	probeHit
	probeSlow // look again, with getSlow
)

// lookupGo is the fast path of Get: it looks for the key (k0, k1) in its
// two candidate buckets, reached through its directory entry sg, and returns
// the words of the slot holding it (for decodeValue; zeros on a miss) and
// probeHit or probeMiss, or probeSlow if the key may be elsewhere (a tag
// matched another key, or there is a stash) or the segment was being
// written. On amd64 lookup is the same in assembly (lookup_amd64.s); this
// is lookup elsewhere, and tests compare the two.
func lookupGo(sg *segment, k0, k1 uint64) (rest, own, hi uint64, st int) {
	seq := sg.seq.Load()
	g := sg.geom.Load()
	nb, sh := g>>32, uint(g>>8)&63
	h1, _ := bits.Mul64(k1, nb)
	h2, _ := bits.Mul64(k0<<segBits, nb)
	// h>>sh < fastChunks whenever g != 0.
	c1 := atomic.LoadPointer((*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(&sg.chunks), uintptr(h1>>sh)*ptrBytes)))
	c2 := atomic.LoadPointer((*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(&sg.chunks), uintptr(h2>>sh)*ptrBytes)))
	// The entry's fields are consistent only if seq did not move; check
	// before using the chunk pointers.
	if sg.seq.Load() != seq || seq&1 != 0 || g == 0 {
		return 0, 0, 0, probeSlow
	}
	cm := uint64(1)<<sh - 1
	pq := [2]*bucket{(*bucket)(unsafe.Add(c1, uintptr(h1&cm)*bucketBytes)), (*bucket)(unsafe.Add(c2, uintptr(h2&cm)*bucketBytes))}
	return probe(&pq, k0, k1, sg, seq, g&1 != 0)
}

// probe is the second half of lookupGo: pq are the two candidate buckets,
// read under the seqlock of segment sg whose counter was seq; noStash is
// that of the body holding them.
//
// It is a separate function so that the bucket pointers are plain values
// in registers: each atomic load is then a single instruction. The common
// case has no branch that depends on the loaded data except the last ones,
// which are predictable.
//
//go:noinline
func probe(pq *[2]*bucket, k0, k1 uint64, sg *segment, seq uint64, noStash bool) (rest, own, hi uint64, st int) {
	p, q := pq[0], pq[1]
	tag := (k0&tagMask | laneOcc) * lanesOne
	xp := atomic.LoadUint64(&p[0]) ^ tag
	xq := atomic.LoadUint64(&q[0]) ^ tag
	// Start fetching the buckets' other cache lines now (the slot
	// loads below depend on the tags).
	atomic.LoadUint64(&p[midWord])
	atomic.LoadUint64(&q[midWord])
	hp := atomic.LoadUint64(&p[verHiWord])
	hq := atomic.LoadUint64(&q[verHiWord])
	// The top bit of a lane of z is set if the lane is zero, i.e. the
	// slot's tag matches; lanes above such a lane may be set spuriously,
	// so only the lowest set bit counts. p's lanes are at bits 15+16s,
	// q's at 14+16s.
	z := (xp-lanesOne)&^xp&lanesHigh | ((xq-lanesOne)&^xq&lanesHigh)>>1
	if z == 0 {
		if !noStash || sg.seq.Load() != seq || seq&1 != 0 {
			return 0, 0, 0, probeSlow
		}
		return 0, 0, 0, probeMiss
	}
	tz := uint(bits.TrailingZeros64(z))
	inQ := ^tz & 1 // 1 if the lane is q's
	// The slot is words 1+3s.. of p or q (chosen without a branch).
	c, off := unsafe.Pointer(pq[inQ]), 24*uintptr(tz>>4)
	k1s := word(c, off+8)
	rest = word(c, off+16)
	own = word(c, off+24)
	if k1s != k1 || (rest^k0>>tagBits)<<(64-restBits) != 0 || sg.seq.Load() != seq || seq&1 != 0 {
		return 0, 0, 0, probeSlow
	}
	h := hp ^ (hp^hq)&-uint64(inQ)
	return rest, own, h >> (tz &^ (laneBits - 1)), probeHit
}

// getSlow is Get without shortcuts: it retries until it reads a segment
// that was not being written, and examines every candidate slot.
func (t *Table) getSlow(k Key) (Value, bool) {
	seg, lo, k1 := split(k)
	sg := &t.segs[seg]
	for spins := 0; ; spins++ {
		seq := sg.seq.Load()
		b := sg.body.Load()
		v, ok := Value{}, false
		if i, s := b.find(lo, k1); i >= 0 {
			v, ok = b.bucket(i).load(s), true
		}
		if seq&1 == 0 && sg.seq.Load() == seq {
			return v, ok
		}
		if spins >= spinsBeforeYield {
			runtime.Gosched()
		}
	}
}

// Put stores v for k, replacing any previous value. v.Owner is masked to its
// low OwnerBits bits. Calls to Put and Delete must be serialised.
func (t *Table) Put(k Key, v Value) {
	seg, lo, k1 := split(k)
	v.Owner &= ownerMask
	t.wmu.Lock()
	defer t.wmu.Unlock()
	sg := &t.segs[seg]
	b := sg.body.Load()
	if i, s := b.find(lo, k1); i >= 0 {
		if b.refs > 0 {
			nb := b.clone(t.arena)
			nb.bucket(i).set(s, lo, k1, v, false)
			t.replace(sg, b, nb)
			return
		}
		sg.seq.Add(1)
		b.bucket(i).set(s, lo, k1, v, true)
		sg.seq.Add(1)
		return
	}
	t.count.Add(1)
	pl := &t.pl
	if b.count < b.maxCnt {
		if pl.plan(b, lo, k1) {
			if b.refs > 0 {
				nb := b.clone(t.arena)
				pl.apply(nb, lo, k1, v, false)
				t.replace(sg, b, nb)
				return
			}
			sg.seq.Add(1)
			pl.apply(b, lo, k1, v, true)
			sg.seq.Add(1)
			return
		}
		if b.count < b.slots()*stashBelowNum/256 {
			// No cuckoo path although the body is far from full: only
			// possible with adversarial keys. Use the stash.
			if i, s := b.stashFree(); i >= 0 {
				if b.refs > 0 {
					nb := b.clone(t.arena)
					nb.bucket(i).set(s, lo, k1, v, false)
					nb.count++
					t.replace(sg, b, nb)
					return
				}
				sg.seq.Add(1)
				b.bucket(i).set(s, lo, k1, v, true)
				b.count++
				sg.seq.Add(1)
				return
			}
			t.replace(sg, b, b.rebuildWith(t.arena, pl, b.slots(), 2*b.stashLen()+1, lo, k1, v))
			return
		}
	}
	t.replace(sg, b, b.rebuildWith(t.arena, pl, b.growTarget(seg), 0, lo, k1, v))
}

// Delete removes k and reports whether it was present. Calls to Put and
// Delete must be serialised.
func (t *Table) Delete(k Key) bool {
	seg, lo, k1 := split(k)
	t.wmu.Lock()
	defer t.wmu.Unlock()
	sg := &t.segs[seg]
	b := sg.body.Load()
	i, s := b.find(lo, k1)
	if i < 0 {
		return false
	}
	t.count.Add(-1)
	left := b.count - 1
	switch target := shrinkTarget(left); {
	case left == 0:
		t.replace(sg, b, emptyBody)
	case left < b.slots()*minLoadNum/256 && target+target/8+bucketSlots < b.slots():
		// Shrink (the margin covers allocator rounding, so the new body
		// really is smaller).
		nb := b.rebuild(t.arena, &t.pl, target, 0)
		j, u := nb.find(lo, k1)
		nb.bucket(j).clear(u, false)
		nb.count--
		t.replace(sg, b, nb)
	case b.refs > 0:
		nb := b.clone(t.arena)
		nb.bucket(i).clear(s, false)
		nb.count--
		t.replace(sg, b, nb)
	default:
		sg.seq.Add(1)
		b.bucket(i).clear(s, true)
		sg.seq.Add(1)
		b.count--
	}
	return true
}

// replace publishes nb as the body of sg in place of old.
func (t *Table) replace(sg *segment, old, nb *body) {
	sg.publish(nb)
	t.mem.Add(int64(nb.memBytes() - old.memBytes()))
	old.retire(t.arena)
}

// Len returns the number of entries. It is safe concurrently with
// everything else.
func (t *Table) Len() int { return int(t.count.Load()) }

// MemoryBytes returns the bytes held by the table's current slot arrays (as
// allocated, i.e. including allocator rounding) plus its directory. Bodies
// kept alive only by Views are not included.
func (t *Table) MemoryBytes() int {
	return int(t.mem.Load()) + int(unsafe.Sizeof(t.segs))
}

// Snapshot returns a consistent point-in-time view of the table: writes made
// after Snapshot returns are not visible in it. Taking it costs
// O(segments); afterwards the first write to each segment copies that
// segment. Call Release when the view is no longer used so that segments can
// be written in place again. Snapshot is safe concurrently with everything
// else, and any number of views may be held at once.
func (t *Table) Snapshot() *View {
	v := &View{t: t, bodies: make([]*body, numSegs)}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	for i := range t.segs {
		b := t.segs[i].body.Load()
		if b != emptyBody {
			b.refs++
		}
		v.bodies[i] = b
	}
	v.n = t.Len()
	return v
}

// View is a read-only point-in-time view of a Table, taken by Snapshot. Its
// methods may be called from any goroutine, concurrently with the table's
// methods; Len and Range must not be called after (or concurrently with)
// Release.
type View struct {
	t      *Table
	bodies []*body // nil once released
	n      int
}

// Len returns the number of entries in the view.
func (v *View) Len() int { return v.n }

// Range calls fn for every entry of the view, in no particular order, until
// fn returns false. fn may call the table's methods (Put and Delete too, if
// the caller is the writer) but not v.Release.
func (v *View) Range(fn func(k Key, v Value) bool) {
	for seg, b := range v.bodies {
		for i := range b.nbk {
			c := b.bucket(i)
			for s := range bucketSlots {
				if !c.occupied(s) {
					continue
				}
				lo, k1, val := c.slot(s)
				if !fn(join(uint64(seg), lo, k1), val) {
					return
				}
			}
		}
	}
}

// Release tells the table that the view is no longer used. Releasing a view
// twice is harmless.
func (v *View) Release() {
	v.t.wmu.Lock()
	defer v.t.wmu.Unlock()
	for _, b := range v.bodies {
		b.unref(v.t.arena)
	}
	v.bodies = nil
}
