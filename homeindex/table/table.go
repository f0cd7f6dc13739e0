// Package table is the in-memory home index replica held by every router:
// a hash table from 16-byte keyed hashes of user identifiers to a home
// region, built for many concurrent readers, a single writer (the Raft
// FSM), cheap point-in-time snapshots and about 30 bytes per entry.
//
// # Design
//
// The table is a fixed directory of 4096 segments chosen by the top 12 bits
// of the key's first 8 bytes. Each segment points to a body: an
// open-addressing table with linear probing kept in key order (Robin Hood
// hashing with ties broken by key), whose home position is fastrange of the
// key's last 8 bytes, so a lookup scans a few consecutive words and stops at
// the first larger key. Deletion shifts the following keys back (no
// tombstones). A body grows by a small, per-segment pseudo-random factor
// (3-9%) when ~95% of its home positions are in use, so the table stays
// ~88-95% full at every size and a rehash only ever touches one small
// segment. Slots are 28 bytes: the two key words, a word packing the 48-bit
// owner fingerprint and the region, and half a word for the version.
//
// Readers take no locks: each segment has a sequence counter that the writer
// makes odd while it modifies the segment's body in place; a reader loads
// the counter, the body pointer and the slots it needs (all with atomic
// loads, so the race detector sees no race), and retries if the counter was
// odd or changed. Growth, shrinking and copy-on-write build a new body and
// publish it with one atomic pointer store; the old body is never modified
// again.
//
// A View references the bodies current when it was taken and counts itself
// in each of them; the writer never modifies a referenced body in place but
// first copies it (copy-on-write per segment), so taking a View costs
// O(segments) and memory grows only with the segments written while Views
// are held.
package table

import (
	"encoding/binary"
	"math"
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
// word. Those bits are implied by the segment, so the stored first word
// replaces them with occBit, which makes it non-zero for every key (zero
// marks an empty slot).
const (
	segBits  = 12
	numSegs  = 1 << segBits
	segShift = 64 - segBits
	lowMask  = 1<<segShift - 1
	occBit   = 1 << 63
)

// spinsBeforeYield is how many times a reader retries a segment that is
// being written before it starts yielding the processor between attempts.
const spinsBeforeYield = 64

// segment is one directory entry.
type segment struct {
	// seq is odd while the writer modifies body in place.
	seq atomic.Uint64
	// body is the segment's current slot arrays; never nil.
	body atomic.Pointer[body]
}

// Table is a hash table from Key to Value. Get and Len may be called
// concurrently with each other, with one writer (Put or Delete) and with
// Snapshot and View methods. Put and Delete must be serialised by the
// caller.
type Table struct {
	segs  [numSegs]segment
	count atomic.Int64 // number of entries
	mem   atomic.Int64 // bytes of the current bodies' slabs

	// wmu serialises the writer with Snapshot and View.Release, which
	// may run on other goroutines, and guards every body's count and refs
	// and pl.
	wmu sync.Mutex
	pl  placer
}

// New returns an empty table. sizeHint is the number of entries expected;
// if it is positive the table is pre-sized for about that many, otherwise
// it starts with no slots at all and grows as needed.
func New(sizeHint int) *Table {
	t := &Table{}
	per := float64(sizeHint) / numSegs
	for i := range t.segs {
		b := emptyBody
		if per >= 1 {
			b = newBody(int(per+3*math.Sqrt(per)+1)*256/maxLoadNum+1, 0)
			t.mem.Add(int64(b.memBytes()))
		}
		t.segs[i].body.Store(b)
	}
	return t
}

// split returns the key's segment, stored first word and second word.
func split(k Key) (seg uint64, w0, k1 uint64) {
	k0 := binary.LittleEndian.Uint64(k[:8])
	return k0 >> segShift, k0&lowMask | occBit, binary.LittleEndian.Uint64(k[8:])
}

// join reverses split.
func join(seg, w0, k1 uint64) Key {
	var k Key
	binary.LittleEndian.PutUint64(k[:8], w0&lowMask|seg<<segShift)
	binary.LittleEndian.PutUint64(k[8:], k1)
	return k
}

// Get returns the value stored for k and whether there is one. It does not
// allocate or block, and is safe concurrently with everything else.
func (t *Table) Get(k Key) (Value, bool) {
	seg, w0, k1 := split(k)
	sg := &t.segs[seg]
	for spins := 0; ; spins++ {
		seq := sg.seq.Load()
		v, ok := sg.body.Load().get(k1, w0)
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
	seg, w0, k1 := split(k)
	meta, ver := packMeta(v), v.Version
	t.wmu.Lock()
	defer t.wmu.Unlock()
	sg := &t.segs[seg]
	b := sg.body.Load()
	if i, s := b.find(k1, w0); i >= 0 {
		if b.refs > 0 {
			nb := b.clone()
			nb.bk[i].setValue(s, meta, ver, false)
			t.replace(sg, b, nb)
			return
		}
		sg.seq.Add(1)
		b.bk[i].setValue(s, meta, ver, true)
		sg.seq.Add(1)
		return
	}
	t.count.Add(1)
	pl := &t.pl
	if b.count < b.maxCnt {
		if pl.plan(b, k1, w0) {
			if b.refs > 0 {
				nb := b.clone()
				pl.apply(nb, k1, w0, meta, ver, false)
				t.replace(sg, b, nb)
				return
			}
			sg.seq.Add(1)
			pl.apply(b, k1, w0, meta, ver, true)
			sg.seq.Add(1)
			return
		}
		if b.count < b.slots()*stashBelowNum/256 {
			// No cuckoo path although the body is far from full: only
			// possible with adversarial keys. Use the stash.
			if i, s := b.stashFree(); i >= 0 {
				if b.refs > 0 {
					nb := b.clone()
					nb.bk[i].set(s, k1, w0, meta, ver, false)
					nb.count++
					t.replace(sg, b, nb)
					return
				}
				sg.seq.Add(1)
				b.bk[i].set(s, k1, w0, meta, ver, true)
				b.count++
				sg.seq.Add(1)
				return
			}
			t.replace(sg, b, b.rebuildWith(pl, b.slots(), 2*b.stashLen()+1, k1, w0, meta, ver))
			return
		}
	}
	t.replace(sg, b, b.rebuildWith(pl, b.growTarget(seg), 0, k1, w0, meta, ver))
}

// Delete removes k and reports whether it was present. Calls to Put and
// Delete must be serialised.
func (t *Table) Delete(k Key) bool {
	seg, w0, k1 := split(k)
	t.wmu.Lock()
	defer t.wmu.Unlock()
	sg := &t.segs[seg]
	b := sg.body.Load()
	i, s := b.find(k1, w0)
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
		nb := b.rebuild(&t.pl, target, 0)
		nb.clear(nb.find(k1, w0))
		t.replace(sg, b, nb)
	case b.refs > 0:
		nb := b.clone()
		nb.clear(i, s)
		t.replace(sg, b, nb)
	default:
		sg.seq.Add(1)
		b.bk[i].set(s, 0, 0, 0, 0, true)
		b.count--
		sg.seq.Add(1)
	}
	return true
}

// replace publishes nb as the body of sg in place of old.
func (t *Table) replace(sg *segment, old, nb *body) {
	sg.body.Store(nb)
	t.mem.Add(int64(nb.memBytes() - old.memBytes()))
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
// fn returns false. fn may call methods of the table (including Put and
// Delete) but must not call v.Release.
func (v *View) Range(fn func(k Key, v Value) bool) {
	for seg, b := range v.bodies {
		for i := range b.bk {
			c := &b.bk[i]
			for s := range bucketSlots {
				k1, w0, meta, ver := c.slot(s)
				if w0 != 0 && !fn(join(uint64(seg), w0, k1), unpackValue(meta, ver)) {
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
		if b != emptyBody {
			b.refs--
		}
	}
	v.bodies = nil
}
