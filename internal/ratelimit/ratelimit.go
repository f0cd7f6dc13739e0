package ratelimit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// DefaultMaxKeys is the bound on tracked keys when Config.MaxKeys is 0.
const DefaultMaxKeys = 1 << 20

const (
	numShards   = 64
	evictSample = 32
)

// Config configures a Limiter.
type Config struct {
	// Rate is the refill rate in tokens per second; it must be > 0 and at
	// most 1e9.
	Rate float64
	// Burst is the bucket capacity: how many requests a client with a full
	// bucket may make at once. It must be >= 1.
	Burst int
	// MaxKeys bounds the number of tracked buckets; 0 means DefaultMaxKeys.
	MaxKeys int
}

// Limiter is a set of token buckets keyed by client. It is safe for
// concurrent use.
type Limiter struct {
	interval  int64 // nanoseconds per token
	tolerance int64 // (Burst-1) * interval
	maxPerSh  int
	seed      maphash.Seed
	shards    [numShards]shard
}

type shard struct {
	mu    sync.Mutex
	index map[[16]byte]uint32 // key -> position in slots
	slots []slot              // at most maxPerSh; never shrinks
	hand  int                 // where the next eviction scan starts
	_     [64]byte            // keep hot mutexes on separate cache lines
}

type slot struct {
	key [16]byte
	tat int64 // Unix nanoseconds at which the bucket is full again
}

// New returns a Limiter, or an error naming the first invalid field.
func New(c Config) (*Limiter, error) {
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
		return nil, errors.New("ratelimit: rate: must be > 0")
	}
	interval := int64(math.Round(float64(time.Second) / c.Rate))
	if interval < 1 {
		return nil, errors.New("ratelimit: rate: must be at most 1e9 per second")
	}
	if c.Burst < 1 {
		return nil, fmt.Errorf("ratelimit: burst: must be >= 1, got %d", c.Burst)
	}
	if int64(c.Burst-1) > math.MaxInt64/2/interval {
		return nil, fmt.Errorf("ratelimit: burst: %d at rate %g overflows", c.Burst, c.Rate)
	}
	switch {
	case c.MaxKeys == 0:
		c.MaxKeys = DefaultMaxKeys
	case c.MaxKeys < 0:
		return nil, fmt.Errorf("ratelimit: max keys: must be >= 0, got %d", c.MaxKeys)
	}
	l := &Limiter{
		interval:  interval,
		tolerance: int64(c.Burst-1) * interval,
		maxPerSh:  max(1, c.MaxKeys/numShards),
		seed:      maphash.MakeSeed(),
	}
	for i := range l.shards {
		l.shards[i].index = make(map[[16]byte]uint32)
	}
	return l, nil
}

// Allow takes a token from key's bucket at time now. If none is left it
// returns false and how long until one will be.
func (l *Limiter) Allow(key [16]byte, now time.Time) (ok bool, retryAfter time.Duration) {
	t := now.UnixNano()
	// A per-limiter seed keeps clients from aiming all their keys at one
	// shard.
	s := &l.shards[maphash.Comparable(l.seed, key)%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()

	i, found := s.index[key]
	var tat int64
	if found {
		tat = s.slots[i].tat
	}
	tat = max(tat, t)
	if wait := tat - t - l.tolerance; wait > 0 {
		return false, time.Duration(wait)
	}
	tat += l.interval
	switch {
	case found:
		s.slots[i].tat = tat
	case len(s.slots) < l.maxPerSh:
		s.index[key] = uint32(len(s.slots))
		s.slots = append(s.slots, slot{key, tat})
	default:
		i = s.victim(t)
		delete(s.index, s.slots[i].key)
		s.index[key] = i
		s.slots[i] = slot{key, tat}
	}
	return true, 0
}

// victim picks the slot to reuse when the shard is full; the caller holds
// s.mu. It scans up to evictSample slots from the hand, like a clock, and
// takes the first full bucket (as good as absent), or else the one closest
// to full among those scanned.
func (s *shard) victim(now int64) uint32 {
	best, bestTAT := s.hand, int64(math.MaxInt64)
	for range min(evictSample, len(s.slots)) {
		j := s.hand
		s.hand++
		if s.hand == len(s.slots) {
			s.hand = 0
		}
		if tat := s.slots[j].tat; tat <= now {
			return uint32(j)
		} else if tat < bestTAT {
			best, bestTAT = j, tat
		}
	}
	return uint32(best)
}

// Len returns the number of buckets currently tracked.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}
