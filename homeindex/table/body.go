package table

import (
	"math/bits"
	"slices"
	"sync/atomic"
	"unsafe"
)

// Bucket layout.
//
// A body's slots are grouped in buckets of bucketSlots slots, 14 words each,
// i.e. 28 bytes per slot. Inside a segment a key is identified by lo, the low 52
// bits of its first word (the other 12 are the segment number), and k1, its
// second word. A bucket holds:
//
//	word 0          the tag word: lane s (bits 16s..16s+15) is laneOcc | the
//	                low tagBits bits of slot s's lo, or 0 if slot s is empty
//	word 1+3s       slot s's k1
//	word 2+3s       the other restBits bits of slot s's lo | region << restBits
//	word 3+3s       owner (48 bits) | the low 16 bits of the version << 48
//	word 13         lane s: the high 16 bits of slot s's version
//
// A lookup compares its tag with all four lanes of each of its two buckets
// with a few word operations, then reads the one slot whose tag matches.
// A bucket spans at most three cache lines, and words 0, 7 and 13 lie on
// all of them, so a lookup loads those first: the processor fetches every
// line the lookup can need at once instead of one after the other.
const (
	bucketSlots = 4
	bucketWords = 14
	bucketBytes = bucketWords * 8
	slotBytes   = bucketBytes / bucketSlots // 28
	verHiWord   = bucketWords - 1
	midWord     = 7

	laneBits  = 16
	laneMask  = 1<<laneBits - 1
	tagBits   = laneBits - 1
	tagMask   = 1<<tagBits - 1
	laneOcc   = 1 << tagBits
	lanesOne  = 0x0001_0001_0001_0001 // 1 in every lane
	lanesHigh = laneOcc * lanesOne    // the top bit of every lane

	restBits = segShift - tagBits // 37
	restMask = 1<<restBits - 1
	verShift = 64 - 16 // the low half of the version, in the owner word
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

// Buckets are allocated in chunks of 2^shift buckets, of one of two sizes
// that are exactly allocator size classes: 16 buckets (1792 bytes) for
// bodies of fewer than 128 buckets, 128 buckets (14336 bytes) for larger
// ones. The last chunk may be partial; it is rounded up to its size class
// and all of it used. A body can thus have about any number of buckets for
// the memory it takes, and grow in small steps at every size: one
// contiguous array would be rounded to the allocator's size classes or to
// whole 8 KiB pages, up to 25% more memory at some table sizes. The chunk
// table of a body of up to inlineChunks chunks lives in the body itself;
// lookups read a copy of its first chunk pointers in the directory entry.
const (
	smallChunkShift = 4
	largeChunkShift = 7
	inlineChunks    = 8
)

// body is one segment's slot array: its current one, or an old version kept
// alive by a View.
//
// Every key has two candidate buckets among the first nb, chosen by
// fastrange of k1 and of lo, and lives in one of them (bucketized cuckoo
// hashing), or, only with adversarial keys that no arrangement of the
// buckets can hold, in one of the stash buckets after them. A lookup
// therefore examines at most two buckets (and the stash, if any).
//
// Everything but count and refs is immutable once the body is published,
// except the slots: they are modified in place only by the writer, only
// while the body is not shared with a View (refs == 0), only with atomic
// stores and only inside the owning segment's odd seq window. count and
// refs are accessed by the writer only (under Table.wmu).
type body struct {
	nb      int
	cmask   uint32                       // 1<<shift - 1
	shift   uint8                        // chunk i holds buckets [i<<shift, (i+1)<<shift)
	noStash bool                         // nbk == nb
	inline  [inlineChunks]unsafe.Pointer // chunks' array, if it fits

	chunks []unsafe.Pointer
	nbk    int // buckets: nb main ones, then the stash
	maxCnt int // grow before count would exceed this
	mem    int // bytes allocated for the chunks

	count   int  // occupied slots (writer only)
	refs    int  // Views referencing this body (writer only)
	retired bool // no longer its segment's body (writer only)
}

// emptyBody is the body of a segment that holds nothing: one empty bucket
// that is never written (its maxCnt of 0 makes the first Put replace it).
// Its refs are never counted.
var emptyBody = func() *body {
	b := newBody(nil, 0, 0)
	b.maxCnt = 0
	return b
}()

// fastrange maps a uniformly random 64-bit value onto [0, n).
func fastrange(x uint64, n int) int {
	hi, _ := bits.Mul64(x, uint64(n))
	return int(hi)
}

// newBody allocates from a an empty body of at least want main slots and
// stash stash buckets; the rounding of the last chunk to whole allocation
// units becomes more main buckets.
func newBody(a *arena, want, stash int) *body {
	n := max((want+bucketSlots-1)/bucketSlots, 1) + stash
	b := &body{shift: smallChunkShift}
	if n >= 1<<largeChunkShift {
		b.shift = largeChunkShift
	}
	b.cmask = 1<<b.shift - 1
	full, rest := n>>b.shift, n&int(b.cmask)
	b.chunks = b.inline[:0]
	if full >= inlineChunks {
		b.chunks = make([]unsafe.Pointer, 0, full+1)
	}
	for range full {
		b.addChunk(a.alloc(1<<b.shift), 1<<b.shift)
	}
	if rest > 0 {
		// Rounded up to its Go heap size class, where it is allocated
		// (the arena holds only full chunks).
		n := min(cap(slices.Grow([]bucket(nil), rest)), 1<<b.shift)
		b.addChunk(a.alloc(n), n)
	}
	b.nb = b.nbk - stash
	b.noStash = stash == 0
	b.maxCnt = b.slots() * maxLoadNum / 256
	return b
}

// addChunk appends a chunk of n buckets to a body under construction.
func (b *body) addChunk(c unsafe.Pointer, n int) {
	b.chunks = append(b.chunks, c)
	b.nbk += n
	b.mem += n * bucketBytes
}

// chunkLen is the number of buckets of chunk i.
func (b *body) chunkLen(i int) int { return min(b.nbk-i<<b.shift, 1<<b.shift) }

// retire is called when b stops being its segment's body: its chunks go
// back to a now, or when the last View holding it is released (unref).
func (b *body) retire(a *arena) {
	if b == emptyBody {
		return
	}
	b.retired = true
	b.freeIfUnused(a)
}

// unref is called when a View holding b is released.
func (b *body) unref(a *arena) {
	if b == emptyBody {
		return
	}
	b.refs--
	b.freeIfUnused(a)
}

// freeIfUnused frees b's chunks once it is retired and no View holds it.
func (b *body) freeIfUnused(a *arena) {
	if b.retired && b.refs == 0 {
		b.freeChunks(a)
	}
}

// freeChunks returns b's chunks to a, once: b must be unreachable for the
// writer and every View. Readers may still hold b (and read its chunks'
// new contents, which their seqlock check then rejects), so b keeps its
// chunk pointers.
func (b *body) freeChunks(a *arena) {
	for _, c := range b.chunks {
		a.freeChunk(c)
	}
}

// bucket returns bucket i, which must be < b.nbk.
func (b *body) bucket(i int) *bucket {
	if uint(i) >= uint(b.nbk) {
		panic("table: bucket index out of range")
	}
	return (*bucket)(unsafe.Add(b.chunks[i>>b.shift], (i&int(b.cmask))*bucketBytes))
}

// slots is the number of main slots.
func (b *body) slots() int { return b.nb * bucketSlots }

// stashLen is the number of stash buckets.
func (b *body) stashLen() int { return b.nbk - b.nb }

// memBytes is the size of the body's chunks (none for the shared
// emptyBody).
func (b *body) memBytes() int {
	if b == emptyBody {
		return 0
	}
	return b.mem
}

// buckets returns the two candidate buckets of a key.
func (b *body) buckets(lo, k1 uint64) (int, int) {
	return fastrange(k1, b.nb), fastrange(lo<<segBits, b.nb)
}

// word atomically loads the word at byte offset off from p, which must lie
// inside p's allocation.
func word(p unsafe.Pointer, off uintptr) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Add(p, off)))
}

// find returns the bucket and slot holding a key, or -1, -1. It uses atomic
// loads, so readers may call it (under the seqlock) as well as the writer.
func (b *body) find(lo, k1 uint64) (int, int) {
	i1, i2 := b.buckets(lo, k1)
	c1, c2 := b.bucket(i1), b.bucket(i2)
	// Load both tag words before looking at either, so that their cache
	// misses overlap.
	t1, t2 := atomic.LoadUint64(&c1[0]), atomic.LoadUint64(&c2[0])
	if s := c1.find(t1, lo, k1); s >= 0 {
		return i1, s
	}
	if s := c2.find(t2, lo, k1); s >= 0 {
		return i2, s
	}
	for i := b.nb; i < b.nbk; i++ {
		c := b.bucket(i)
		if s := c.find(atomic.LoadUint64(&c[0]), lo, k1); s >= 0 {
			return i, s
		}
	}
	return -1, -1
}

// find returns the slot of the bucket holding a key, or -1, given the
// bucket's tag word (atomic loads).
func (c *bucket) find(tags, lo, k1 uint64) int {
	lane := lo&tagMask | laneOcc
	for s := range bucketSlots {
		if tags>>(laneBits*s)&laneMask == lane &&
			atomic.LoadUint64(&c[1+3*s]) == k1 &&
			atomic.LoadUint64(&c[2+3*s])&restMask == lo>>tagBits {
			return s
		}
	}
	return -1
}

// load returns the value of slot s with atomic loads (for readers).
func (c *bucket) load(s int) Value {
	return decodeValue(atomic.LoadUint64(&c[2+3*s]), atomic.LoadUint64(&c[3+3*s]),
		atomic.LoadUint64(&c[verHiWord])>>(laneBits*s))
}

// decodeValue assembles a value from a slot's rest word, owner word, and
// version lane (in the low bits of hi).
func decodeValue(rest, own, hi uint64) Value {
	return Value{Region: uint16(rest >> restBits), Version: uint32(own>>verShift) | uint32(hi)<<16, Owner: own & ownerMask}
}

// occupied reports whether slot s holds a key (writer, or immutable body).
func (c *bucket) occupied(s int) bool { return c[0]>>(laneBits*s)&laneOcc != 0 }

// free returns an empty slot of the bucket, or -1 (writer only).
func (c *bucket) free() int {
	for s := range bucketSlots {
		if !c.occupied(s) {
			return s
		}
	}
	return -1
}

// used returns the number of occupied slots of the bucket (writer only).
func (c *bucket) used() int {
	return bits.OnesCount64(c[0] & lanesHigh)
}

// slot returns the key and value of an occupied slot (writer, or immutable
// body).
func (c *bucket) slot(s int) (lo, k1 uint64, v Value) {
	rest := c[2+3*s]
	lo = (rest&restMask)<<tagBits | c[0]>>(laneBits*s)&tagMask
	return lo, c[1+3*s], decodeValue(rest, c[3+3*s], c[verHiWord]>>(laneBits*s))
}

// set stores a key and its value (owner already masked) in slot s: with
// atomic stores if the body may be visible to readers (shared), else with
// plain ones.
func (c *bucket) set(s int, lo, k1 uint64, v Value, shared bool) {
	sh := uint(laneBits * s)
	tags := c[0]&^(laneMask<<sh) | (lo&tagMask|laneOcc)<<sh
	rest := lo>>tagBits | uint64(v.Region)<<restBits
	own := v.Owner | uint64(v.Version)<<verShift
	hi := c[verHiWord]&^(laneMask<<sh) | uint64(v.Version>>16)<<sh
	c.store(s, tags, k1, rest, own, hi, shared)
}

// clear empties slot s (see set).
func (c *bucket) clear(s int, shared bool) {
	sh := uint(laneBits * s)
	c.store(s, c[0]&^(laneMask<<sh), 0, 0, 0, c[verHiWord]&^(laneMask<<sh), shared)
}

// store writes the words of slot s.
func (c *bucket) store(s int, tags, k1, rest, own, hi uint64, shared bool) {
	if shared {
		atomic.StoreUint64(&c[0], tags)
		atomic.StoreUint64(&c[1+3*s], k1)
		atomic.StoreUint64(&c[2+3*s], rest)
		atomic.StoreUint64(&c[3+3*s], own)
		atomic.StoreUint64(&c[verHiWord], hi)
	} else {
		c[0], c[1+3*s], c[2+3*s], c[3+3*s], c[verHiWord] = tags, k1, rest, own, hi
	}
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
	// in slot endSlot of node end's bucket to slot dstSlot of bucket
	// dst, shift the keys along the path from the root to node end, and
	// store the new key in the vacated slot of the root. end < 0 means:
	// store the new key directly at (dst, dstSlot).
	end, endSlot int
	dst, dstSlot int
}

// plan looks for room for a key that is not in b: a free slot in one of its
// buckets (the emptier one), or else the shortest path of cuckoo moves
// (breadth-first search) that ends in a free slot. It reports whether it
// found one; b is not changed.
func (pl *placer) plan(b *body, lo, k1 uint64) bool {
	i1, i2 := b.buckets(lo, k1)
	c1, c2 := b.bucket(i1), b.bucket(i2)
	s1, s2 := c1.free(), c2.free()
	if s1 >= 0 || s2 >= 0 {
		pl.end = -1
		if s1 >= 0 && (s2 < 0 || c1.used() <= c2.used()) {
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
	found := false
search:
	for n := 0; n < len(nodes); n++ {
		cur := int(nodes[n].bucket)
		c := b.bucket(cur)
		for s := range bucketSlots {
			lo, k1, _ := c.slot(s)
			a1, a2 := b.buckets(lo, k1)
			alt := a1
			if alt == cur {
				alt = a2
			}
			if alt == cur || onPath(nodes, n, alt) {
				continue
			}
			if t := b.bucket(alt).free(); t >= 0 {
				pl.end, pl.endSlot, pl.dst, pl.dstSlot = n, s, alt, t
				found = true
				break search
			}
			if len(nodes) < maxSearch {
				nodes = append(nodes, searchNode{bucket: int32(alt), parent: int16(n), slot: int8(s)})
			}
		}
	}
	pl.nodes = nodes
	return found
}

// onPath reports whether bucket i is on the search path from a root to
// node n. (A path must not visit a bucket twice, or its moves would
// overwrite each other.)
func onPath(nodes []searchNode, n, i int) bool {
	for ; n >= 0; n = int(nodes[n].parent) {
		if int(nodes[n].bucket) == i {
			return true
		}
	}
	return false
}

// apply carries out the last plan for b and stores the key.
func (pl *placer) apply(b *body, lo, k1 uint64, v Value, shared bool) {
	di, ds := pl.dst, pl.dstSlot
	if pl.end >= 0 {
		// Move the keys along the path, last first, each into the slot
		// vacated by the previous move.
		si, ss := int(pl.nodes[pl.end].bucket), pl.endSlot
		for n := pl.end; ; {
			mlo, mk1, mv := b.bucket(si).slot(ss)
			b.bucket(di).set(ds, mlo, mk1, mv, shared)
			di, ds = si, ss
			par := int(pl.nodes[n].parent)
			if par < 0 {
				break
			}
			si, ss = int(pl.nodes[par].bucket), int(pl.nodes[n].slot)
			n = par
		}
	}
	b.bucket(di).set(ds, lo, k1, v, shared)
	b.count++
}

// stashFree returns a free stash slot, or -1, -1.
func (b *body) stashFree() (int, int) {
	for i := b.nb; i < b.nbk; i++ {
		if s := b.bucket(i).free(); s >= 0 {
			return i, s
		}
	}
	return -1, -1
}

// add stores a key that is not in the unpublished body b (plain stores),
// in its buckets if possible, else in the stash. It reports false if there
// was no room at all.
func (b *body) add(pl *placer, lo, k1 uint64, v Value) bool {
	if pl.plan(b, lo, k1) {
		pl.apply(b, lo, k1, v, false)
		return true
	}
	if i, s := b.stashFree(); i >= 0 {
		b.bucket(i).set(s, lo, k1, v, false)
		b.count++
		return true
	}
	return false
}

// clone returns an unshared copy of b, allocated from a.
func (b *body) clone(a *arena) *body {
	nb := *b
	nb.refs = 0
	nb.retired = false
	if len(b.chunks) > inlineChunks {
		nb.chunks = make([]unsafe.Pointer, len(b.chunks))
	} else {
		nb.chunks = nb.inline[:len(b.chunks)]
	}
	for i, c := range b.chunks {
		n := b.chunkLen(i)
		d := a.alloc(n)
		copy(unsafe.Slice((*bucket)(d), n), unsafe.Slice((*bucket)(c), n))
		nb.chunks[i] = d
	}
	return &nb
}

// rebuild returns a new, unpublished body of at least want main slots
// holding b's keys, with at least stash stash buckets (more if that is what
// it takes; normally none are needed).
func (b *body) rebuild(a *arena, pl *placer, want, stash int) *body {
	for {
		nb := newBody(a, want, stash)
		if b.rebuildInto(pl, nb) != nil {
			return nb
		}
		nb.freeChunks(a)
		stash = 2*stash + 1
	}
}

// rebuildInto adds b's keys to nb and returns it, or nil if they did not
// fit.
func (b *body) rebuildInto(pl *placer, nb *body) *body {
	for i := range b.nbk {
		c := b.bucket(i)
		for s := range bucketSlots {
			if !c.occupied(s) {
				continue
			}
			if lo, k1, v := c.slot(s); !nb.add(pl, lo, k1, v) {
				return nil
			}
		}
	}
	return nb
}

// rebuildWith is rebuild followed by adding a new key.
func (b *body) rebuildWith(a *arena, pl *placer, want, stash int, lo, k1 uint64, v Value) *body {
	nb := b.rebuild(a, pl, want, stash)
	for !nb.add(pl, lo, k1, v) {
		stash := 2*nb.stashLen() + 1
		nb.freeChunks(a)
		nb = b.rebuild(a, pl, want, stash)
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
