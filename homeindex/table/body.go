package table

import (
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
)

// Bucket layout.
//
// A body is an array of buckets of bucketSlots slots. Slot s of a bucket
// is the three words 3s (k1: key bytes 8..15, little endian), 3s+1 (w0: key
// bytes 0..7 with the segment bits replaced by occBit; 0 in an empty slot,
// so an all-zero key is still distinguishable from an empty slot) and 3s+2
// (meta: owner fingerprint | region<<48); the versions of slots 0,1 and 2,3
// share words verWord and verWord+1 (even slot in the low half). That is 14
// words, 28 bytes per slot.
//
// A bucket spans at most three cache lines; the four k1 words and the last
// word of a bucket lie on all of them, so the loads a lookup issues up front
// fetch every line it can need, in parallel.
const (
	bucketSlots = 4
	bucketWords = 3*bucketSlots + bucketSlots/2
	verWord     = 3 * bucketSlots
	slotBytes   = bucketWords * 8 / bucketSlots // 28
)

// bucket is bucketSlots slots; see the layout above.
type bucket [bucketWords]uint64

// Load policy.
const (
	// maxLoadNum/256 (~0.95) is the highest fraction of a body's slots
	// that may be occupied before it grows.
	maxLoadNum = 243
	// If no cuckoo path is found for a new key while the body is at
	// least stashBelowNum/256 full, the body grows; below that (only
	// possible with adversarial keys) the key goes to the stash.
	stashBelowNum = 192
	// minLoadNum/256 (~0.5) is the load below which a body shrinks on
	// Delete, to a load of ~shrinkToNum/256.
	minLoadNum  = 128
	shrinkToNum = 205
	// A body grows by a factor drawn from [growMin, growMin+growSpread),
	// different for every segment and size, so that the segments of a
	// table do not grow in lockstep and the table's overall load stays
	// near the middle of the band (maxLoad/growth, maxLoad] at every size.
	growMin    = 1.03
	growSpread = 0.06
	// maxSearch bounds the number of buckets a cuckoo insertion visits.
	maxSearch = 512
)

// body is one segment's slot array: its current one, or an old version kept
// alive by a View.
//
// Every key has two candidate buckets among the first nb, chosen by
// fastrange of k1 and of the other 52 key bits, and lives in one of them
// (bucketized cuckoo hashing), or, only with adversarial keys that no
// arrangement of the buckets can hold, in one of the stash buckets after
// them. A lookup therefore examines at most two buckets.
//
// bk, nb and maxCnt never change after the body is published. The slots are
// modified in place only by the writer, only while the body is not shared
// with a View (refs == 0), only with atomic stores and only inside the
// owning segment's odd seq window. count and refs are accessed by the writer
// only (under Table.wmu).
type body struct {
	bk     []bucket // nb main buckets, then the stash
	nb     int
	maxCnt int // grow before count would exceed this

	count int // occupied slots (writer only)
	refs  int // Views referencing this body (writer only)
}

// emptyBody is the body of a segment that holds nothing: one empty bucket
// that is never written. Its refs are never counted.
var emptyBody = &body{bk: make([]bucket, 1), nb: 1}

// fastrange maps a uniformly random 64-bit value onto [0, n).
func fastrange(x uint64, n int) int {
	hi, _ := bits.Mul64(x, uint64(n))
	return int(hi)
}

// packMeta packs the owner fingerprint (masked) and the region into a word.
func packMeta(v Value) uint64 { return v.Owner&ownerMask | uint64(v.Region)<<OwnerBits }

// unpackValue reverses packMeta and adds the version.
func unpackValue(meta uint64, ver uint32) Value {
	return Value{Region: uint16(meta >> OwnerBits), Version: ver, Owner: meta & ownerMask}
}

// newBody allocates an empty body of at least want main slots and stash
// stash buckets. The bucket array is sized to what the allocator really
// hands out (its size class or page multiple), and all of it is used.
func newBody(want, stash int) *body {
	nb := max((want+bucketSlots-1)/bucketSlots, 1)
	bk := slices.Grow([]bucket(nil), nb+stash)
	bk = bk[:cap(bk)]
	nb = len(bk) - stash
	return &body{bk: bk, nb: nb, maxCnt: nb * bucketSlots * maxLoadNum / 256}
}

// slots is the number of main slots.
func (b *body) slots() int { return b.nb * bucketSlots }

// memBytes is the size of the body's bucket array allocation (none for the
// shared emptyBody).
func (b *body) memBytes() int {
	if b == emptyBody {
		return 0
	}
	return cap(b.bk) * bucketWords * 8
}

// buckets returns the two candidate buckets of a key.
func (b *body) buckets(k1, w0 uint64) (int, int) {
	return fastrange(k1, b.nb), fastrange(w0<<segBits, b.nb)
}

// get looks a key up on behalf of a concurrent reader: every load is
// atomic, and the result is only meaningful if the segment's seq did not
// change meanwhile.
//
// The common case is branch-free until the end: a lookup misses the cache,
// and a mispredicted branch that depends on the missing data would stop the
// processor from overlapping the next lookups' misses with this one's.
func (b *body) get(k1, w0 uint64) (Value, bool) {
	bk := b.bk
	i1, i2 := b.buckets(k1, w0)
	p, q := &bk[i1], &bk[i2]
	// Fetch the buckets' last cache lines too (the k1 loads below cover
	// the others).
	atomic.LoadUint64(&p[bucketWords-1])
	atomic.LoadUint64(&q[bucketWords-1])
	// Bit j of m: slot j&3 of bucket p (j < 4) or q (j >= 4) has k1.
	m := b2u(atomic.LoadUint64(&p[0]) == k1) |
		b2u(atomic.LoadUint64(&p[3]) == k1)<<1 |
		b2u(atomic.LoadUint64(&p[6]) == k1)<<2 |
		b2u(atomic.LoadUint64(&p[9]) == k1)<<3 |
		b2u(atomic.LoadUint64(&q[0]) == k1)<<4 |
		b2u(atomic.LoadUint64(&q[3]) == k1)<<5 |
		b2u(atomic.LoadUint64(&q[6]) == k1)<<6 |
		b2u(atomic.LoadUint64(&q[9]) == k1)<<7
	if m != 0 {
		j := bits.TrailingZeros(m)
		c := &bk[i1^(i1^i2)&-(j>>2)]
		s := j & (bucketSlots - 1)
		if atomic.LoadUint64(&c[3*s+1]) == w0 {
			vw := atomic.LoadUint64(&c[verWord+s>>1])
			return unpackValue(atomic.LoadUint64(&c[3*s+2]), uint32(vw>>(uint(s&1)*32))), true
		}
	} else if len(bk) == b.nb {
		return Value{}, false
	}
	// Two keys with the same k1, or a stash: examine everything.
	return b.getSlow(k1, w0)
}

// b2u converts a bool to 0 or 1 without a branch.
func b2u(b bool) uint {
	if b {
		return 1
	}
	return 0
}

// getSlow is get without shortcuts.
func (b *body) getSlow(k1, w0 uint64) (Value, bool) {
	i, s := b.find(k1, w0)
	if i < 0 {
		return Value{}, false
	}
	c := &b.bk[i]
	vw := atomic.LoadUint64(&c[verWord+s>>1])
	return unpackValue(atomic.LoadUint64(&c[3*s+2]), uint32(vw>>(uint(s&1)*32))), true
}

// find returns the bucket and slot holding a key, or -1, -1.
func (b *body) find(k1, w0 uint64) (int, int) {
	i1, i2 := b.buckets(k1, w0)
	if s := b.bk[i1].find(k1, w0); s >= 0 {
		return i1, s
	}
	if s := b.bk[i2].find(k1, w0); s >= 0 {
		return i2, s
	}
	for i := b.nb; i < len(b.bk); i++ {
		if s := b.bk[i].find(k1, w0); s >= 0 {
			return i, s
		}
	}
	return -1, -1
}

// find returns the slot of the bucket holding a key, or -1.
func (c *bucket) find(k1, w0 uint64) int {
	for s := range bucketSlots {
		if atomic.LoadUint64(&c[3*s]) == k1 && atomic.LoadUint64(&c[3*s+1]) == w0 {
			return s
		}
	}
	return -1
}

// free returns an empty slot of the bucket, or -1 (writer only).
func (c *bucket) free() int {
	for s := range bucketSlots {
		if c[3*s+1] == 0 {
			return s
		}
	}
	return -1
}

// slot returns the contents of a slot (writer, or immutable body).
func (c *bucket) slot(s int) (k1, w0, meta uint64, ver uint32) {
	return c[3*s], c[3*s+1], c[3*s+2], uint32(c[verWord+s>>1] >> (uint(s&1) * 32))
}

// set overwrites a slot: with atomic stores if the body may be visible to
// readers (shared), else with plain ones.
func (c *bucket) set(s int, k1, w0, meta uint64, ver uint32, shared bool) {
	vi, sh := verWord+s>>1, uint(s&1)*32
	vw := c[vi]&^(math.MaxUint32<<sh) | uint64(ver)<<sh
	if shared {
		atomic.StoreUint64(&c[3*s], k1)
		atomic.StoreUint64(&c[3*s+1], w0)
		atomic.StoreUint64(&c[3*s+2], meta)
		atomic.StoreUint64(&c[vi], vw)
	} else {
		c[3*s], c[3*s+1], c[3*s+2], c[vi] = k1, w0, meta, vw
	}
}

// setValue overwrites the value of a slot (see set).
func (c *bucket) setValue(s int, meta uint64, ver uint32, shared bool) {
	k1, w0, _, _ := c.slot(s)
	c.set(s, k1, w0, meta, ver, shared)
}

// clear empties a slot of an unpublished body.
func (b *body) clear(i, s int) {
	b.bk[i].set(s, 0, 0, 0, 0, false)
	b.count--
}

// searchNode is a bucket visited by the cuckoo path search: the key in slot
// slot of node parent's bucket can move to it.
type searchNode struct {
	bucket int32
	parent int16
	slot   int8
}

// placer finds room for new keys. It is the writer's scratch space, reused
// across insertions so that they do not allocate.
type placer struct {
	nodes []searchNode

	// The plan found by the last successful call to plan: move the key
	// of the path ending at node end (slot endSlot of its bucket) to slot
	// dstSlot of bucket dst, shift the keys along the path, and store the
	// new key in the vacated slot of the path's root. end < 0 means: store
	// the new key directly at (dst, dstSlot).
	end, endSlot int
	dst, dstSlot int
}

// plan looks for room for a key that is not in b: a free slot in one of its
// buckets, or a path of at most a few cuckoo moves (breadth-first search)
// ending in a free slot. It reports whether it found one; b is not changed.
func (pl *placer) plan(b *body, k1, w0 uint64) bool {
	i1, i2 := b.buckets(k1, w0)
	s1, s2 := b.bk[i1].free(), b.bk[i2].free()
	if s1 >= 0 || s2 >= 0 {
		pl.end = -1
		if s1 >= 0 && (s2 < 0 || b.bk[i1].used() <= b.bk[i2].used()) {
			pl.dst, pl.dstSlot = i1, s1
		} else {
			pl.dst, pl.dstSlot = i2, s2
		}
		return true
	}
	nodes := append(pl.nodes[:0], searchNode{bucket: int32(i1), parent: -1, slot: -1})
	if i2 != i1 {
		nodes = append(nodes, searchNode{bucket: int32(i2), parent: -1, slot: -1})
	}
	defer pl.keep(&nodes)
	for n := 0; n < len(nodes); n++ {
		cur := int(nodes[n].bucket)
		c := &b.bk[cur]
		for s := range bucketSlots {
			a1, a2 := b.buckets(c[3*s], c[3*s+1])
			alt := a1
			if alt == cur {
				alt = a2
			}
			if alt == cur || pl.onPath(nodes, n, alt) {
				continue
			}
			if t := b.bk[alt].free(); t >= 0 {
				pl.end, pl.endSlot, pl.dst, pl.dstSlot = n, s, alt, t
				return true
			}
			if len(nodes) < maxSearch {
				nodes = append(nodes, searchNode{bucket: int32(alt), parent: int16(n), slot: int8(s)})
			}
		}
	}
	return false
}

// keep keeps the search's node array for reuse.
func (pl *placer) keep(nodes *[]searchNode) { pl.nodes = *nodes }

// onPath reports whether bucket i is on the path from a root to node n.
func (pl *placer) onPath(nodes []searchNode, n, i int) bool {
	for ; n >= 0; n = int(nodes[n].parent) {
		if int(nodes[n].bucket) == i {
			return true
		}
	}
	return false
}

// apply carries out the last plan for b and stores the key.
func (pl *placer) apply(b *body, k1, w0, meta uint64, ver uint32, shared bool) {
	di, ds := pl.dst, pl.dstSlot
	if pl.end >= 0 {
		// Move the keys along the path, last first, each into the slot
		// vacated by the previous move.
		si, ss := int(pl.nodes[pl.end].bucket), pl.endSlot
		for n := pl.end; ; {
			mk1, mw0, mmeta, mver := b.bk[si].slot(ss)
			b.bk[di].set(ds, mk1, mw0, mmeta, mver, shared)
			di, ds = si, ss
			par := int(pl.nodes[n].parent)
			if par < 0 {
				break
			}
			si, ss = int(pl.nodes[par].bucket), int(pl.nodes[n].slot)
			n = par
		}
	}
	b.bk[di].set(ds, k1, w0, meta, ver, shared)
	b.count++
}

// used returns the number of occupied slots of the bucket (writer only).
func (c *bucket) used() int {
	n := 0
	for s := range bucketSlots {
		if c[3*s+1] != 0 {
			n++
		}
	}
	return n
}

// stashFree returns a free stash slot, or -1, -1.
func (b *body) stashFree() (int, int) {
	for i := b.nb; i < len(b.bk); i++ {
		if s := b.bk[i].free(); s >= 0 {
			return i, s
		}
	}
	return -1, -1
}

// add stores a key that is not in the unpublished body b (plain stores),
// in its buckets if possible, else in the stash. It reports false if there
// was no room at all.
func (b *body) add(pl *placer, k1, w0, meta uint64, ver uint32) bool {
	if pl.plan(b, k1, w0) {
		pl.apply(b, k1, w0, meta, ver, false)
		return true
	}
	if i, s := b.stashFree(); i >= 0 {
		b.bk[i].set(s, k1, w0, meta, ver, false)
		b.count++
		return true
	}
	return false
}

// stashLen is the number of stash buckets.
func (b *body) stashLen() int { return len(b.bk) - b.nb }

// rebuildWith returns a new, unpublished body of at least want main slots
// holding b's keys and the given new one, with at least stash stash
// buckets (more if that is what it takes).
func (b *body) rebuildWith(pl *placer, want, stash int, k1, w0, meta uint64, ver uint32) *body {
	nb := b.rebuild(pl, want, stash)
	for !nb.add(pl, k1, w0, meta, ver) {
		nb = b.rebuild(pl, want, 2*nb.stashLen()+1)
	}
	return nb
}

// clone returns an unshared copy of b.
func (b *body) clone() *body {
	nb := &body{bk: make([]bucket, len(b.bk)), nb: b.nb, maxCnt: b.maxCnt, count: b.count}
	copy(nb.bk, b.bk)
	return nb
}

// rebuild returns a new, unpublished body of at least want main slots
// holding b's keys, with as many stash buckets as it takes (normally none).
func (b *body) rebuild(pl *placer, want, stash int) *body {
	for {
		if nb := b.rebuildInto(pl, newBody(want, stash)); nb != nil {
			return nb
		}
		stash = 2*stash + 1
	}
}

// rebuildInto adds b's keys to nb and returns it, or nil if they did not
// fit.
func (b *body) rebuildInto(pl *placer, nb *body) *body {
	for i := range b.bk {
		c := &b.bk[i]
		for s := range bucketSlots {
			k1, w0, meta, ver := c.slot(s)
			if w0 != 0 && !nb.add(pl, k1, w0, meta, ver) {
				return nil
			}
		}
	}
	return nb
}

// growTarget is the number of main slots a body of segment seg should grow
// to so that it can take at least one more key.
func (b *body) growTarget(seg uint64) int {
	// A per-(segment, size) pseudo-random growth factor.
	h := mix64(seg<<32 ^ uint64(b.nb))
	g := growMin + growSpread*float64(h>>11)/(1<<53)
	n := b.slots()
	want := max(int(float64(n)*g), n+bucketSlots)
	return max(want, (b.count+1)*256/maxLoadNum+1)
}

// shrinkTarget is the number of main slots a body holding count keys
// shrinks to.
func shrinkTarget(count int) int { return count*256/shrinkToNum + 1 }

// mix64 is a 64-bit finalizer (splitmix64).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
