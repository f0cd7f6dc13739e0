package table

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Bucket memory.
//
// At 10M entries a table is ~300 MB of buckets, and a lookup's two buckets
// are two random places in it. With 4 KiB pages nearly every lookup then
// misses the TLB twice, and in a virtual machine each miss is a
// two-dimensional page walk. So a table keeps its buckets in an arena of
// its own: slabs mapped outside the Go heap, 2 MiB aligned and, once the
// table is large, backed by transparent huge pages (MADV_HUGEPAGE), which
// take most of those walks away. The Go heap gives no way to ask for huge
// pages, and its chunks of a growing table end up scattered over far more
// 2 MiB regions than they fill.
//
// The arena holds chunks of one size, the large chunk of 128 buckets: a
// body's full chunks. Small bodies (below 128 buckets, a few KiB) and the
// last, partial chunk of a large body take their memory from the Go heap,
// so the arena never fragments: a chunk that is no longer used goes to the
// free list and is reused before the slab grows. At 10M entries ~90% of the
// buckets are in the arena. A body's chunks are freed when the body is
// replaced and no View holds it, when the last View holding a replaced body
// is released, or when a body built for a rebuild is abandoned. A reader may still be
// reading a chunk that was freed and reused (it loaded the chunk pointer
// before the replacement): it reads words that make no sense, and then
// finds its segment's counter changed and looks again, as it does for any
// concurrent write; slabs are never unmapped while the table is reachable,
// so such reads are always of mapped memory. When the table itself is
// garbage collected, its slabs are unmapped.
//
// Where slabs cannot be mapped (not Linux, or mmap fails), the arena
// allocates chunks from the Go heap and freeing is left to the garbage
// collector.

const (
	// arenaChunk is the one size of chunk in an arena: a large chunk
	// (14336 bytes, a whole number of cache lines).
	arenaChunk = 1 << largeChunkShift * bucketBytes

	slabAlign = 2 << 20 // the huge page size on amd64 and arm64
	// slabMax bounds a slab; slabs grow with the arena up to it.
	slabMax = 64 << 20
	// hugeFrom is the arena size from which new slabs ask for huge
	// pages: below it a 2 MiB page would mostly hold nothing.
	hugeFrom = 16 << 20
)

// arena is a table's bucket memory. Its methods are called by the writer
// (under Table.wmu), except release, overlaps and mappedBytes.
type arena struct {
	mu    sync.Mutex
	slabs [][]byte         // mapped regions, each slabAlign aligned
	off   int              // bump offset in the last slab
	free  []unsafe.Pointer // free chunks
	// mapped is the bytes of the slabs (read by mappedBytes without mu).
	mapped atomic.Int64
	heap   bool // slabs cannot be mapped here: use the Go heap
}

// newArena returns an empty arena, whose slabs are unmapped when owner is
// garbage collected.
func newArena(owner *Table) *arena {
	a := &arena{}
	runtime.AddCleanup(owner, (*arena).release, a)
	return a
}

// alloc returns a zeroed chunk of n buckets: from the arena if n is its
// chunk size, else (and if a is nil or mapping failed) from the Go heap.
func (a *arena) alloc(n int) unsafe.Pointer {
	if a == nil || n*bucketBytes != arenaChunk {
		return heapChunk(n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.heap {
		return heapChunk(n)
	}
	if l := len(a.free); l > 0 {
		p := a.free[l-1]
		a.free = a.free[:l-1]
		// A reader that loaded this chunk's pointer before it was
		// freed may still read it, and will then look again.
		clear(unsafe.Slice((*byte)(p), arenaChunk))
		return p
	}
	if len(a.slabs) == 0 || len(a.slabs[len(a.slabs)-1])-a.off < arenaChunk {
		if !a.grow() {
			return heapChunk(n)
		}
	}
	last := a.slabs[len(a.slabs)-1]
	p := unsafe.Pointer(&last[a.off])
	a.off += arenaChunk
	return p
}

// heapChunk allocates a chunk of n buckets from the Go heap.
func heapChunk(n int) unsafe.Pointer {
	c := make([]bucket, n)
	return unsafe.Pointer(&c[0])
}

// grow maps a new slab; false means the arena is now a heap arena. (The
// end of the previous slab, less than a chunk, stays unused.)
func (a *arena) grow() bool {
	mapped := int(a.mapped.Load())
	n := min(max(mapped/4, slabAlign), slabMax) &^ (slabAlign - 1)
	mem, err := mapSlab(n, slabAlign, mapped >= hugeFrom)
	if err != nil {
		a.heap = true
		return false
	}
	a.slabs = append(a.slabs, mem)
	a.off = 0
	a.mapped.Add(int64(len(mem)))
	return true
}

// freeChunk returns a chunk to the arena if it is one of its own; heap
// chunks are left to the garbage collector.
func (a *arena) freeChunk(p unsafe.Pointer) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.owns(p) {
		a.free = append(a.free, p)
	}
}

// owns reports whether p lies in one of a's slabs; the caller holds a.mu.
func (a *arena) owns(p unsafe.Pointer) bool {
	return a.overlapsLocked(uintptr(p), uintptr(p)+1)
}

// overlaps reports whether [lo, hi) overlaps one of a's slabs.
func (a *arena) overlaps(lo, hi uintptr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.overlapsLocked(lo, hi)
}

// overlapsLocked is overlaps for a caller that holds a.mu.
func (a *arena) overlapsLocked(lo, hi uintptr) bool {
	for _, s := range a.slabs {
		base := uintptr(unsafe.Pointer(&s[0]))
		if lo < base+uintptr(len(s)) && base < hi {
			return true
		}
	}
	return false
}

// ArenaBytes returns the bytes of the table's arena slabs: memory outside
// the Go heap (so not in the runtime's memory statistics), of which
// MemoryBytes counts the part in use.
func (t *Table) ArenaBytes() int64 { return t.arena.mappedBytes() }

// mappedBytes returns the bytes of the arena's slabs.
func (a *arena) mappedBytes() int64 { return a.mapped.Load() }

// usedBytes returns the bytes of the arena's slabs up to the end of the
// last 2 MiB page that any chunk touched: the slabs' untouched ends are
// mapped but hold no memory.
func (a *arena) usedBytes() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.slabs) == 0 {
		return 0
	}
	last := a.slabs[len(a.slabs)-1]
	untouched := (len(last) - a.off) &^ (slabAlign - 1)
	return a.mapped.Load() - int64(untouched)
}

// release unmaps every slab. It runs once the table is unreachable.
func (a *arena) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.slabs {
		unmapSlab(s)
	}
	a.slabs, a.off, a.free = nil, 0, nil
	a.mapped.Store(0)
}
