//go:build !amd64 || purego

package table

func lookup(sg *segment, k0, k1 uint64) (rest, own, hi uint64, st int) {
	return lookupGo(sg, k0, k1)
}
