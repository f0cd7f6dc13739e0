package table

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapSlab maps n bytes of anonymous memory aligned to align (both multiples
// of the page size), asking for transparent huge pages if huge. It maps
// n+align bytes and unmaps what lies outside the aligned part.
func mapSlab(n, align int, huge bool) ([]byte, error) {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(n+align), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	skip := int(-uintptr(p) & uintptr(align-1))
	base := unsafe.Add(p, skip)
	if skip > 0 {
		if err := unix.MunmapPtr(p, uintptr(skip)); err != nil {
			_ = unix.MunmapPtr(p, uintptr(n+align))
			return nil, err
		}
	}
	if err := unix.MunmapPtr(unsafe.Add(base, n), uintptr(align-skip)); err != nil {
		_ = unix.MunmapPtr(base, uintptr(n+align-skip))
		return nil, err
	}
	s := unsafe.Slice((*byte)(base), n)
	if huge {
		// Without THP (or with THP "never") this fails or does nothing;
		// the slab works the same with small pages.
		_ = unix.Madvise(s, unix.MADV_HUGEPAGE)
	}
	return s, nil
}

// unmapSlab unmaps a slab that mapSlab returned.
func unmapSlab(s []byte) { _ = unix.MunmapPtr(unsafe.Pointer(&s[0]), uintptr(len(s))) }
