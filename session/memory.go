package session

import (
	"context"
	"sync"
	"time"
)

// sweepInterval is how often Memory drops expired sessions that nobody asks
// for; Get drops the ones it finds in between.
const sweepInterval = time.Minute

// Memory is an in-process Store. Close stops its background sweeper.
type Memory struct {
	now func() time.Time // time.Now, replaced in tests

	mu       sync.Mutex
	sessions map[string]Session

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-process store with its sweeper running.
func NewMemory() *Memory { return newMemory(sweepInterval, time.Now) }

func newMemory(interval time.Duration, now func() time.Time) *Memory {
	m := &Memory{
		now:      now,
		sessions: make(map[string]Session),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go m.sweeper(interval)
	return m
}

// Put stores s, replacing any session with the same id.
func (m *Memory) Put(_ context.Context, s Session) error {
	if err := check(s, m.now()); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sessions[s.ID] = s
	return nil
}

// Get returns the session with the given id, or ErrNotFound.
func (m *Memory) Get(_ context.Context, id string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return Session{}, ErrNotFound
	}
	if expired(s, m.now()) {
		delete(m.sessions, id)
		return Session{}, ErrNotFound
	}
	return s, nil
}

// Delete removes the session with the given id, if there is one.
func (m *Memory) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, id)
	return nil
}

// Close stops the sweeper and waits for it to return. It is safe to call more
// than once; the store stays usable, only expired sessions are then dropped
// by Get alone.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

func (m *Memory) sweeper(interval time.Duration) {
	defer close(m.done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-ticker.C:
			m.sweep()
		}
	}
}

// sweep drops every expired session and returns how many it dropped.
func (m *Memory) sweep() int {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for id, s := range m.sessions {
		if expired(s, now) {
			delete(m.sessions, id)
			n++
		}
	}
	return n
}
