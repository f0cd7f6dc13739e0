package router

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// recordConn records the deadlines set on it.
type recordConn struct {
	net.Conn
	reads, writes []time.Time
}

func (c *recordConn) SetReadDeadline(t time.Time) error {
	c.reads = append(c.reads, t)
	return nil
}

func (c *recordConn) SetWriteDeadline(t time.Time) error {
	c.writes = append(c.writes, t)
	return nil
}

func (c *recordConn) SetDeadline(t time.Time) error {
	c.reads = append(c.reads, t)
	c.writes = append(c.writes, t)
	return nil
}

func TestCoarseConnDeadlines(t *testing.T) {
	rec := &recordConn{}
	c := newCoarseConn(rec, time.Second)
	t0 := time.Unix(1_000_000, 0)
	steps := []struct {
		name  string
		set   func(time.Time) error
		at    time.Time
		reads int // deadlines applied so far
	}{
		{"first deadline is applied", c.SetReadDeadline, t0, 1},
		{"a slightly later one is not", c.SetReadDeadline, t0.Add(999 * time.Millisecond), 1},
		{"the same one is not", c.SetReadDeadline, t0, 1},
		{"one a slack later is", c.SetReadDeadline, t0.Add(time.Second), 2},
		{"an earlier one always is", c.SetReadDeadline, t0.Add(time.Second - time.Nanosecond), 3},
		{"clearing always is", c.SetReadDeadline, time.Time{}, 4},
		{"after a clear, the next is", c.SetReadDeadline, t0, 5},
		{"SetDeadline with no write deadline in force is", c.SetDeadline, t0.Add(time.Millisecond), 6},
		{"SetDeadline within the slack of both is not", c.SetDeadline, t0.Add(2 * time.Millisecond), 6},
	}
	for _, s := range steps {
		if err := s.set(s.at); err != nil {
			t.Fatal(err)
		}
		if len(rec.reads) != s.reads {
			t.Fatalf("%s: %d read deadlines applied, want %d (%v)", s.name, len(rec.reads), s.reads, rec.reads)
		}
	}
	// The write deadline is tracked on its own: the SetDeadline above
	// applied it (none was in force), later ones within the slack are not.
	if len(rec.writes) != 1 {
		t.Fatalf("write deadlines applied: %v", rec.writes)
	}
	_ = c.SetWriteDeadline(t0.Add(500 * time.Millisecond))
	_ = c.SetWriteDeadline(t0.Add(-time.Hour))
	if len(rec.writes) != 2 || !rec.writes[1].Equal(t0.Add(-time.Hour)) {
		t.Fatalf("write deadlines applied: %v", rec.writes)
	}
	if newCoarseConn(rec, 0) != net.Conn(rec) {
		t.Fatal("no slack: the conn should be left as it is")
	}
}

// TestCoarseConnTimesOut: a connection whose deadline keeps being pushed
// forward by less than the slack still times out, no later than the first
// deadline that was applied.
func TestCoarseConnTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(5 * time.Second) // never writes
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c, ok := newCoarseConn(raw, time.Second).(*coarseConn)
	if !ok {
		t.Fatal("not wrapped")
	}
	start := time.Now()
	first := start.Add(300 * time.Millisecond)
	if err := c.SetReadDeadline(first); err != nil {
		t.Fatal(err)
	}
	// Pushed forward within the slack: not applied.
	if err := c.SetReadDeadline(first.Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	if time.Now().Before(first) {
		t.Fatalf("timed out before the deadline that was applied")
	}
}
