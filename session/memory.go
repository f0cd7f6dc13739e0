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
	devices  map[string]Device // by handle

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var (
	_ Store       = (*Memory)(nil)
	_ DeviceStore = (*Memory)(nil)
)

// NewMemory returns an empty in-process store with its sweeper running.
func NewMemory() *Memory { return newMemory(sweepInterval, time.Now) }

func newMemory(interval time.Duration, now func() time.Time) *Memory {
	m := &Memory{
		now:      now,
		sessions: make(map[string]Session),
		devices:  make(map[string]Device),
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
	for h, d := range m.devices {
		if !now.Before(d.ExpiresAt) {
			delete(m.devices, h)
		}
	}
	return n
}

// PutDevice remembers d until its ExpiresAt.
func (m *Memory) PutDevice(_ context.Context, d Device) error {
	if err := checkDevice(d, m.now()); err != nil {
		return err
	}
	d.Handle = DeviceHandle(d.ID)
	d.ID = ""
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devices[d.Handle] = d
	return nil
}

// Device returns the remembered device of an id, or ErrNotFound.
func (m *Memory) Device(_ context.Context, id string) (Device, error) {
	h := DeviceHandle(id)
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[h]
	if !ok {
		return Device{}, ErrNotFound
	}
	if !m.now().Before(d.ExpiresAt) {
		delete(m.devices, h)
		return Device{}, ErrNotFound
	}
	return d, nil
}

// UserDevices returns the live devices of a user, oldest first.
func (m *Memory) UserDevices(_ context.Context, userID string) ([]Device, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Device
	for _, d := range m.devices {
		if d.UserID == userID && now.Before(d.ExpiresAt) {
			out = append(out, d)
		}
	}
	sortDevices(out)
	return out, nil
}

// DeleteDevice forgets a device of a user.
func (m *Memory) DeleteDevice(_ context.Context, userID, handle string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.devices[handle]; ok && d.UserID == userID {
		delete(m.devices, handle)
	}
	return nil
}

// DeleteUserDevices forgets every device of a user.
func (m *Memory) DeleteUserDevices(_ context.Context, userID string) (int, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for h, d := range m.devices {
		if d.UserID == userID {
			delete(m.devices, h)
			if now.Before(d.ExpiresAt) {
				n++
			}
		}
	}
	return n, nil
}
