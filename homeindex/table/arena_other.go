//go:build !linux

package table

import "errors"

// mapSlab is not implemented here: arenas use the Go heap.
func mapSlab(n, align int, huge bool) ([]byte, error) {
	return nil, errors.New("table: slabs are mapped only on Linux")
}

func unmapSlab(s []byte) {}
