package table

import (
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
)

// Slot layout.
//
// A body's slots live in one []uint64 slab, grouped in blocks of blkSlots
// slots. A block holds, in this order:
//
//	blkSlots words  k1    key bytes 8..15 (little endian); the hash that
//	                      places the key; emptyK1 in an empty slot
//	blkSlots words  w0    key bytes 0..7 with the segment bits replaced by
//	                      occBit; 0 in an empty slot (so an all-zero key is
//	                      still distinguishable from an empty slot)
//	blkSlots words  meta  owner (low 48 bits) | region << 48
//	blkSlots/2 words      versions, two uint32 per word (even slot in the
//	                      low half)
//
// which is 7/2 words = 28 bytes per slot. A lookup scans consecutive k1
// words (one or two cache lines) and then reads w0, meta and the version of
// a single slot, all within the same 448-byte block.
const (
	blkShift  = 4
	blkSlots  = 1 << blkShift
	blkMask   = blkSlots - 1
	blkWords  = blkSlots * 7 / 2
	offW0     = blkSlots
	offMeta   = 2 * blkSlots
	offVer    = 3 * blkSlots
	slotBytes = blkWords * 8 / blkSlots // 28

	emptyK1 = math.MaxUint64
)

// Load policy.
const (
	// maxLoadNum/256 is the highest fraction of a body's home positions
	// that may be occupied before it grows (~0.95).
	maxLoadNum = 243
	// minLoadNum/256 is the fraction of home positions below which a body
	// shrinks on Delete (~0.5); it shrinks to a load of ~shrinkToNum/256.
	minLoadNum  = 128
	shrinkToNum = 205
	// A body grows by a factor drawn from [growMin, growMin+growSpread),
	// different for every segment and size, so that the segments of a
	// table do not grow in lockstep and the table's overall load stays
	// near the middle of the band (maxLoad/growth, maxLoad] at every size.
	growMin    = 1.03
	growSpread = 0.06
)

// body is one immutable-shape open-addressing table: a segment's current
// slot arrays, or an old version of them kept alive by a View.
//
// Layout invariant ("ordered linear probing", i.e. Robin Hood hashing with
// ties broken by key): a key's home position is fastrange(k1, m); every
// occupied slot i holds a key whose home is <= i with no empty slot between
// its home and i; and the occupied slots are sorted by k1 (hence also by
// home). There is no wrap-around: the last n-m slots are an overflow area
// for keys whose home is near the end. A lookup therefore skips slots whose
// k1 is smaller than the key's and stops at the first larger k1 or at an
// empty slot (whose k1 is the maximum).
//
// slab, n, m and maxCnt never change after the body is published. The slab's
// contents are modified in place only by the writer, only while the body is
// not shared with a View (refs == 0), only with atomic stores and only
// inside the owning segment's odd seq window. count and refs are accessed
// by the writer only (under Table.wmu).
type body struct {
	slab   []uint64
	n      int // number of slots (a multiple of blkSlots)
	m      int // number of home positions; n-m overflow slots follow
	maxCnt int // grow before count would exceed this

	count int // occupied slots (writer only)
	refs  int // Views referencing this body (writer only)
}

// emptyBody is the body of a segment that holds nothing. It has no slots,
// is never written, and its refs are never counted.
var emptyBody = &body{}

// fastrange maps a uniformly random 64-bit value onto [0, m), monotonically.
func fastrange(x uint64, m int) int {
	hi, _ := bits.Mul64(x, uint64(m))
	return int(hi)
}

// k1Index returns the slab index of slot i's k1 word; w0, meta are at fixed
// offsets from it.
func k1Index(i int) int { return (i>>blkShift)*blkWords + i&blkMask }

// verIndex returns the slab index of the word holding slot i's version and
// the shift of the version inside it.
func verIndex(i int) (int, uint) {
	return (i>>blkShift)*blkWords + offVer + (i&blkMask)>>1, uint(i&1) * 32
}

// packMeta packs the owner fingerprint (masked) and region into one word.
func packMeta(v Value) uint64 { return v.Owner&ownerMask | uint64(v.Region)<<OwnerBits }

// unpackValue reverses packMeta and adds the version.
func unpackValue(meta uint64, ver uint32) Value {
	return Value{Region: uint16(meta >> OwnerBits), Version: ver, Owner: meta & ownerMask}
}

// overflowFor is the default size of the overflow area of a body of n slots.
func overflowFor(n int) int { return min(max(n/16, 2), 32) }

// newBody allocates an empty body of at least want slots with at least ovf
// overflow slots. The slab is sized to what the allocator really hands out
// (its size class or page multiple), and every whole block of it is used.
func newBody(want, ovf int) *body {
	blocks := (max(want, blkSlots) + blkMask) >> blkShift
	slab := slices.Grow([]uint64(nil), blocks*blkWords)
	slab = slab[:cap(slab)]
	n := len(slab) / blkWords * blkSlots
	ovf = min(max(ovf, overflowFor(n)), n-1)
	b := &body{slab: slab, n: n, m: n - ovf, maxCnt: (n - overflowFor(n)) * maxLoadNum / 256}
	for i := 0; i < n; i += blkSlots {
		k := k1Index(i)
		for j := k; j < k+blkSlots; j++ {
			slab[j] = emptyK1
		}
	}
	return b
}

// memBytes is the size of the body's slab allocation.
func (b *body) memBytes() int { return cap(b.slab) * 8 }

// get looks k up on behalf of a concurrent reader: every load is atomic, and
// the loop terminates even if the slab is being modified, but the result is
// only meaningful if the segment's seq did not change meanwhile.
func (b *body) get(k1, w0 uint64) (Value, bool) {
	s := b.slab
	n := b.n
	for i := fastrange(k1, b.m); i < n; i++ {
		base := (i >> blkShift) * blkWords
		j := i & blkMask
		x := atomic.LoadUint64(&s[base+j])
		if x < k1 {
			continue
		}
		if x > k1 {
			break
		}
		y := atomic.LoadUint64(&s[base+offW0+j])
		if y == w0 {
			meta := atomic.LoadUint64(&s[base+offMeta+j])
			vw := atomic.LoadUint64(&s[base+offVer+j>>1])
			return unpackValue(meta, uint32(vw>>(uint(j&1)*32))), true
		}
		if y == 0 { // empty slot (k1 == emptyK1 == key's k1)
			break
		}
	}
	return Value{}, false
}

// locate is the writer's lookup. It returns the slot holding the key and
// true, or the slot before which the key would be inserted (possibly n)
// and false.
func (b *body) locate(k1, w0 uint64) (int, bool) {
	s := b.slab
	i := fastrange(k1, b.m)
	for ; i < b.n; i++ {
		k := k1Index(i)
		x := s[k]
		if x < k1 {
			continue
		}
		if x > k1 {
			return i, false
		}
		y := s[k+offW0]
		if y == w0 {
			return i, true
		}
		if y == 0 {
			return i, false
		}
	}
	return i, false
}

// occupied reports whether slot i holds a key.
func (b *body) occupied(i int) bool { return b.slab[k1Index(i)+offW0] != 0 }

// slot returns the raw contents of slot i (writer or immutable body only).
func (b *body) slot(i int) (k1, w0, meta uint64, ver uint32) {
	s := b.slab
	k := k1Index(i)
	vi, sh := verIndex(i)
	return s[k], s[k+offW0], s[k+offMeta], uint32(s[vi] >> sh)
}

// setVersion stores slot i's version with an atomic store of its word.
func (b *body) setVersion(i int, ver uint32) {
	vi, sh := verIndex(i)
	old := b.slab[vi] // only the writer stores to the slab
	atomic.StoreUint64(&b.slab[vi], old&^(math.MaxUint32<<sh)|uint64(ver)<<sh)
}

// setSlot overwrites slot i with atomic stores.
func (b *body) setSlot(i int, k1, w0, meta uint64, ver uint32) {
	s := b.slab
	k := k1Index(i)
	atomic.StoreUint64(&s[k], k1)
	atomic.StoreUint64(&s[k+offW0], w0)
	atomic.StoreUint64(&s[k+offMeta], meta)
	b.setVersion(i, ver)
}

// setValue overwrites the value of slot i with atomic stores.
func (b *body) setValue(i int, meta uint64, ver uint32) {
	atomic.StoreUint64(&b.slab[k1Index(i)+offMeta], meta)
	b.setVersion(i, ver)
}

// emptyFrom returns the first empty slot at or after p, or -1 if there is
// none before the end of the body.
func (b *body) emptyFrom(p int) int {
	for e := p; e < b.n; e++ {
		if !b.occupied(e) {
			return e
		}
	}
	return -1
}

// insertAt inserts a key before slot p, which must be its insertion point
// as reported by locate, shifting the occupied slots p..e-1 one place to the
// right; e must be emptyFrom(p).
func (b *body) insertAt(p, e int, k1, w0, meta uint64, ver uint32) {
	for j := e; j > p; j-- {
		ck1, cw0, cmeta, cver := b.slot(j - 1)
		b.setSlot(j, ck1, cw0, cmeta, cver)
	}
	b.setSlot(p, k1, w0, meta, ver)
	b.count++
}

// deleteAt empties slot p by backward-shift deletion: the following slots
// move one place left until an empty slot or a key at its home.
func (b *body) deleteAt(p int) {
	j := p + 1
	for ; j < b.n; j++ {
		k1, w0, meta, ver := b.slot(j)
		if w0 == 0 || fastrange(k1, b.m) >= j {
			break
		}
		b.setSlot(j-1, k1, w0, meta, ver)
	}
	b.setSlot(j-1, emptyK1, 0, 0, 0)
	b.count--
}

// clone returns an unshared copy of b.
func (b *body) clone() *body {
	nb := &body{slab: make([]uint64, len(b.slab)), n: b.n, m: b.m, maxCnt: b.maxCnt, count: b.count}
	copy(nb.slab, b.slab)
	return nb
}

// rebuild returns a new body with at least want slots holding b's keys,
// or nil if some key would have to be placed past the end of the
// overflow area (only possible with adversarial keys).
func (b *body) rebuild(want, ovf int) *body {
	nb := newBody(want, ovf)
	if b.count > nb.n {
		return nil
	}
	s, ns := b.slab, nb.slab
	next := 0
	for i := 0; i < b.n; i++ {
		k := k1Index(i)
		w0 := s[k+offW0]
		if w0 == 0 {
			continue
		}
		k1 := s[k]
		p := max(fastrange(k1, nb.m), next)
		if p >= nb.n {
			return nil
		}
		nk := k1Index(p)
		ns[nk] = k1
		ns[nk+offW0] = w0
		ns[nk+offMeta] = s[k+offMeta]
		vi, sh := verIndex(i)
		nvi, nsh := verIndex(p)
		ns[nvi] |= uint64(uint32(s[vi]>>sh)) << nsh
		next = p + 1
	}
	nb.count = b.count
	return nb
}

// resize returns a new body of at least want slots holding b's keys,
// enlarging the overflow area (and if need be the body) until they fit.
func (b *body) resize(want, ovf int) *body {
	for {
		if nb := b.rebuild(want, ovf); nb != nil {
			return nb
		}
		ovf = 2 * max(ovf, overflowFor(want))
		if ovf >= want/2 {
			want *= 2
		}
	}
}

// growTarget is the number of slots a body of segment seg should grow to so
// that it can take at least one more key.
func (b *body) growTarget(seg uint64) int {
	// A per-(segment, size) pseudo-random growth factor.
	h := mix64(seg<<32 ^ uint64(b.n))
	g := growMin + growSpread*float64(h>>11)/(1<<53)
	want := max(int(float64(b.n)*g), b.n+blkSlots)
	need := (b.count+1)*256/maxLoadNum + 1
	return max(want, need+overflowFor(need))
}

// shrinkTarget is the number of slots a body holding count keys shrinks to.
func shrinkTarget(count int) int {
	want := count*256/shrinkToNum + 1
	return want + overflowFor(want)
}

// mix64 is a 64-bit finalizer (splitmix64).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
