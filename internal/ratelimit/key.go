package ratelimit

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
)

// KeyIP returns the limiter key for a client address. IPv4 addresses (and
// IPv4-mapped IPv6 ones) map to their ::ffff:a.b.c.d form; IPv6 addresses are
// masked to their /64, since one host usually controls a whole /64 and could
// otherwise dodge the limit by rotating addresses. Zones are ignored. The
// zero (invalid) Addr maps to the all-zero key, which all such requests
// share.
func KeyIP(addr netip.Addr) [16]byte {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return [16]byte{}
	}
	k := addr.As16()
	if addr.Is6() {
		clear(k[8:])
	}
	return k
}

// Random per process: keys are only ever compared within one process, and
// unpredictable seeds stop clients from crafting colliding strings.
var seed1, seed2 = maphash.MakeSeed(), maphash.MakeSeed()

// KeyString returns the limiter key for the string s in the namespace
// prefix (e.g. "user", "client"), so equal strings under different prefixes
// get different buckets. It uses two 64-bit maphash hashes with random
// per-process seeds: fast, not cryptographic, and different after every
// restart, which is fine because limiter state lives in process memory.
func KeyString(prefix, s string) [16]byte {
	var k [16]byte
	binary.LittleEndian.PutUint64(k[:8], hashPair(seed1, prefix, s))
	binary.LittleEndian.PutUint64(k[8:], hashPair(seed2, prefix, s))
	return k
}

func hashPair(seed maphash.Seed, prefix, s string) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(prefix))) // unambiguous split
	h.Write(n[:])
	h.WriteString(prefix)
	h.WriteString(s)
	return h.Sum64()
}
