package routesig

import (
	"hash/maphash"
	"sync"
	"time"
)

const replayShards = 64

// replayCache remembers nonces for between one and two periods (period =
// 2*window); see the package documentation for why that is enough.
type replayCache struct {
	seed1, seed2 maphash.Seed
	period       int64 // nanoseconds
	maxPerGen    int   // per shard, per generation
	shards       [replayShards]replayShard
}

type replayShard struct {
	mu        sync.Mutex
	epoch     int64 // now / period at the last rotation
	cur, prev map[nonceKey]struct{}
	_         [64]byte // keep hot mutexes on separate cache lines
}

func (c *replayCache) init(period time.Duration, maxNonces int) {
	c.seed1, c.seed2 = maphash.MakeSeed(), maphash.MakeSeed()
	c.period = int64(period)
	// Both generations of all shards together hold at most maxNonces.
	c.maxPerGen = max(1, maxNonces/(2*replayShards))
	for i := range c.shards {
		c.shards[i].cur = make(map[nonceKey]struct{})
		c.shards[i].prev = make(map[nonceKey]struct{})
	}
}

// add records nonce, or returns ErrReplay if it is already recorded, or
// ErrBusy if the shard is full.
func (c *replayCache) add(nonce string, now time.Time) error {
	k := hashNonce(c.seed1, c.seed2, nonce)
	s := &c.shards[k.a%replayShards]
	epoch := now.UnixNano() / c.period

	s.mu.Lock()
	defer s.mu.Unlock()
	// Times passed by concurrent callers may be slightly out of order; an
	// older epoch simply does not rotate (nonces are then kept longer).
	switch {
	case epoch == s.epoch+1:
		s.cur, s.prev = s.prev, s.cur
		clear(s.cur) // reuses the map's memory: no allocation per rotation
		s.epoch = epoch
	case epoch > s.epoch+1:
		clear(s.cur)
		clear(s.prev)
		s.epoch = epoch
	}
	if _, ok := s.cur[k]; ok {
		return ErrReplay
	}
	if _, ok := s.prev[k]; ok {
		return ErrReplay
	}
	if len(s.cur) >= c.maxPerGen {
		return ErrBusy
	}
	s.cur[k] = struct{}{}
	return nil
}

// len returns the number of remembered nonces (for tests).
func (c *replayCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.prev)
		s.mu.Unlock()
	}
	return n
}
