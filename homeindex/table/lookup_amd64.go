//go:build !purego

package table

import "unsafe"

// lookup is lookupGo in assembly (lookup_amd64.s): the same loads in the
// same order, in fewer instructions (one call instead of two, no spills),
// and with prefetches instead of loads for the buckets' other cache lines.
// With the table much larger than the caches, a lookup waits for memory
// most of its time, and the processor overlaps the waits of consecutive
// lookups only as far as their instructions fit in its reorder window: the
// fewer instructions a lookup takes, the more lookups are in flight at once.
//
// The reads are plain loads, which on amd64 are atomic and not reordered
// with each other, as are those of lookupGo's atomic loads.
//
//go:noescape
func lookup(sg *segment, k0, k1 uint64) (rest, own, hi uint64, st int)

// The assembly knows these; make the build fail if they change.
var (
	_ [unsafe.Offsetof(segment{}.geom) - 8]byte
	_ [8 - unsafe.Offsetof(segment{}.geom)]byte
	_ [unsafe.Offsetof(segment{}.chunks) - 24]byte
	_ [24 - unsafe.Offsetof(segment{}.chunks)]byte
	_ [bucketBytes - 112]byte
	_ [112 - bucketBytes]byte
	_ [segShift - 52]byte
	_ [52 - segShift]byte
	_ [tagBits - 15]byte
	_ [15 - tagBits]byte
	_ [restBits - 37]byte
	_ [37 - restBits]byte
	_ [midWord*8 - 56]byte
	_ [56 - midWord*8]byte
	_ [verHiWord*8 - 104]byte
	_ [104 - verHiWord*8]byte
	_ [probeHit - 1]byte
	_ [probeSlow - 2]byte
)
