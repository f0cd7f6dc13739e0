package router

import (
	"net"
	"sync"
	"time"
)

// Deadline updates are coarse. fasthttp sets a read and a write deadline
// (now + timeout) on every request of a keep-alive connection, on both the
// client side and the region side of the router, and each one re-arms a
// runtime timer (the clock, a lock, a timer-heap update): about 2 µs of
// CPU per forwarded request here, more than the router's own routing work.
// A coarseConn skips a new deadline that is later than the one in force by
// less than its slack, so a busy connection re-arms its timers about once
// per slack instead of several times per request. A timeout then fires
// between timeout−slack and timeout after its start, never later; a
// deadline that is earlier than the one in force (a shorter timeout), or
// cleared, or set for the first time, is always applied at once.

// deadlineSlack is the slack of the deadlines with the given timeout.
func deadlineSlack(timeout time.Duration) time.Duration { return timeout / 8 }

// coarseConn is a net.Conn whose deadline updates are coarse.
type coarseConn struct {
	net.Conn
	slack  int64      // ns
	mu     sync.Mutex // the deadlines may be set from another goroutine (shutdown)
	rd, wd int64      // the deadlines in force, in Unix ns (0: none)
}

func newCoarseConn(c net.Conn, slack time.Duration) net.Conn {
	if slack <= 0 {
		return c
	}
	return &coarseConn{Conn: c, slack: int64(slack)}
}

// unixNano is t in Unix ns, 0 for the zero time (no deadline).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1 // the Unix epoch itself: a deadline long past, not "none"
}

// keep reports whether the deadline in force, cur, may stand for t (both
// in Unix ns).
func (c *coarseConn) keep(cur, t int64) bool {
	return cur != 0 && t != 0 && t >= cur && t-cur < c.slack
}

func (c *coarseConn) SetReadDeadline(t time.Time) error {
	return c.set(&c.rd, t, c.Conn.SetReadDeadline)
}

func (c *coarseConn) SetWriteDeadline(t time.Time) error {
	return c.set(&c.wd, t, c.Conn.SetWriteDeadline)
}

// set applies deadline t, unless the one in force (*cur) may stand for it.
// It runs a few times per request: no defer, and integer comparisons.
func (c *coarseConn) set(cur *int64, t time.Time, apply func(time.Time) error) error {
	n := unixNano(t)
	c.mu.Lock()
	if c.keep(*cur, n) {
		c.mu.Unlock()
		return nil
	}
	err := apply(t)
	if err == nil {
		*cur = n
	}
	c.mu.Unlock()
	return err
}

func (c *coarseConn) SetDeadline(t time.Time) error {
	n := unixNano(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keep(c.rd, n) && c.keep(c.wd, n) {
		return nil
	}
	if err := c.Conn.SetDeadline(t); err != nil {
		return err
	}
	c.rd, c.wd = n, n
	return nil
}

// coarseListener hands out its TCP connections as coarseConns.
type coarseListener struct {
	net.Listener
	slack time.Duration
}

func (l coarseListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, ok := c.(*net.TCPConn); !ok {
		// TLS and other wrappers keep their own type (fasthttp looks
		// for it); their deadlines stay exact.
		return c, nil
	}
	return newCoarseConn(c, l.slack), nil
}
