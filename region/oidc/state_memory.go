package oidc

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// MemoryState is a State in process memory, for development: it is lost on
// restart and not shared between nodes. Close stops its sweeper.
type MemoryState struct {
	// accessTTL is the longest access token lifetime (MaxTokenTTL): a
	// revoked family's marker outlives the family by that much.
	accessTTL time.Duration
	now       func() time.Time

	mu          sync.Mutex
	codes       map[[32]byte]*memCode
	tokens      map[[32]byte]memToken // refresh token hash → family
	families    map[string]*memFamily
	revokedFams map[string]time.Time // until
	revokedJTIs map[string]time.Time // until
	sessions    map[[32]byte]*memSession

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type memCode struct {
	g       Grant
	used    bool
	expires time.Time
}

type memToken struct {
	fid     string
	expires time.Time
}

type memFamily struct {
	f   Family
	cur [32]byte
}

type memSession struct {
	clients  map[string]bool
	families map[string]bool
	expires  time.Time
}

var _ State = (*MemoryState)(nil)

// NewMemoryState returns an empty state whose sweeper drops expired
// entries every minute.
func NewMemoryState() *MemoryState {
	return newMemoryState(time.Now, time.Minute)
}

func newMemoryState(now func() time.Time, sweep time.Duration) *MemoryState {
	m := &MemoryState{
		accessTTL: MaxTokenTTL, now: now,
		codes: map[[32]byte]*memCode{}, tokens: map[[32]byte]memToken{}, families: map[string]*memFamily{},
		revokedFams: map[string]time.Time{}, revokedJTIs: map[string]time.Time{}, sessions: map[[32]byte]*memSession{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go m.sweeper(sweep)
	return m
}

// Close stops the sweeper; the state stays usable.
func (m *MemoryState) Close() error {
	m.once.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

func (m *MemoryState) sweeper(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

func (m *MemoryState) sweep() {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.codes {
		if !now.Before(c.expires) {
			delete(m.codes, k)
		}
	}
	for k, t := range m.tokens {
		if !now.Before(t.expires) {
			delete(m.tokens, k)
		}
	}
	for k, f := range m.families {
		if now.Unix() >= f.f.Expiry {
			delete(m.families, k)
		}
	}
	for _, mp := range []map[string]time.Time{m.revokedFams, m.revokedJTIs} {
		for k, until := range mp {
			if !now.Before(until) {
				delete(mp, k)
			}
		}
	}
	for k, s := range m.sessions {
		if !now.Before(s.expires) {
			delete(m.sessions, k)
		}
	}
}

func (m *MemoryState) PutCode(_ context.Context, code string, g Grant, ttl time.Duration) error {
	if ttl <= 0 {
		return errors.New("oidc state: put code: ttl not positive")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.codes[hashToken(code)] = &memCode{g: g, expires: m.now().Add(ttl)}
	return nil
}

// code returns a live code entry; caller holds m.mu.
func (m *MemoryState) code(code string) *memCode {
	c, ok := m.codes[hashToken(code)]
	if !ok || !m.now().Before(c.expires) {
		return nil
	}
	return c
}

func (m *MemoryState) PeekCode(_ context.Context, code string) (Grant, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.code(code)
	if c == nil {
		return Grant{}, false, ErrNotFound
	}
	return c.g, c.used, nil
}

func (m *MemoryState) UseCode(_ context.Context, code string) (Grant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.code(code)
	switch {
	case c == nil:
		return Grant{}, ErrNotFound
	case c.used:
		return c.g, ErrCodeUsed
	}
	c.used = true
	// Kept a while after its use, so that a second use is recognised.
	c.expires = m.now().Add(usedCodeTTL)
	return c.g, nil
}

func (m *MemoryState) StartFamily(_ context.Context, f Family, token string) error {
	exp := time.Unix(f.Expiry, 0)
	if !m.now().Before(exp) {
		return errors.New("oidc state: start family: already expired")
	}
	h := hashToken(token)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.families[f.ID] = &memFamily{f: f, cur: h}
	m.tokens[h] = memToken{fid: f.ID, expires: exp}
	return nil
}

// revokeFamily marks fid revoked until at least until; caller holds m.mu.
func (m *MemoryState) revokeFamily(fid string, until time.Time) {
	if fam, ok := m.families[fid]; ok {
		until = latest(until, time.Unix(fam.f.Expiry, 0).Add(m.accessTTL))
	}
	m.revokedFams[fid] = latest(until, m.revokedFams[fid])
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// familyOf resolves a refresh token; caller holds m.mu.
func (m *MemoryState) familyOf(token string) (*memFamily, [32]byte, error) {
	h := hashToken(token)
	now := m.now()
	t, ok := m.tokens[h]
	if !ok || !now.Before(t.expires) {
		return nil, h, ErrNotFound
	}
	if until, ok := m.revokedFams[t.fid]; ok && now.Before(until) {
		return nil, h, ErrRevoked
	}
	fam, ok := m.families[t.fid]
	if !ok || now.Unix() >= fam.f.Expiry {
		return nil, h, ErrNotFound
	}
	return fam, h, nil
}

func (m *MemoryState) Refresh(_ context.Context, token string) (Family, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fam, h, err := m.familyOf(token)
	if err != nil {
		return Family{}, err
	}
	if fam.cur != h {
		m.revokeFamily(fam.f.ID, m.now())
		return fam.f, ErrReused
	}
	return fam.f, nil
}

func (m *MemoryState) PeekRefresh(_ context.Context, token string) (Family, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fam, h, err := m.familyOf(token)
	if err != nil {
		return Family{}, false, err
	}
	return fam.f, fam.cur == h, nil
}

func (m *MemoryState) Rotate(_ context.Context, fid, old, next string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if until, ok := m.revokedFams[fid]; ok && now.Before(until) {
		return ErrRevoked
	}
	fam, ok := m.families[fid]
	if !ok || now.Unix() >= fam.f.Expiry {
		return ErrNotFound
	}
	if fam.cur != hashToken(old) {
		m.revokeFamily(fid, now)
		return ErrReused
	}
	h := hashToken(next)
	fam.cur = h
	m.tokens[h] = memToken{fid: fid, expires: time.Unix(fam.f.Expiry, 0)}
	return nil
}

func (m *MemoryState) RevokeFamily(_ context.Context, fid string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revokeFamily(fid, until)
	return nil
}

func (m *MemoryState) RevokeAccessToken(_ context.Context, jti string, exp time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revokedJTIs[jti] = latest(exp, m.revokedJTIs[jti])
	return nil
}

func (m *MemoryState) AccessTokenRevoked(_ context.Context, jti, fid string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if until, ok := m.revokedJTIs[jti]; ok && now.Before(until) {
		return true, nil
	}
	if fid != "" {
		if until, ok := m.revokedFams[fid]; ok && now.Before(until) {
			return true, nil
		}
	}
	return false, nil
}

func (m *MemoryState) BindSession(_ context.Context, sid, client, fid string, until time.Time) error {
	h := hashToken(sid)
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[h]
	if !ok || !m.now().Before(s.expires) {
		s = &memSession{clients: map[string]bool{}, families: map[string]bool{}}
		m.sessions[h] = s
	}
	s.clients[client] = true
	if fid != "" {
		s.families[fid] = true
	}
	s.expires = latest(s.expires, until)
	return nil
}

func (m *MemoryState) EndSession(_ context.Context, sid string) ([]string, error) {
	h := hashToken(sid)
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[h]
	delete(m.sessions, h)
	if !ok {
		return nil, nil
	}
	now := m.now()
	for fid := range s.families {
		m.revokeFamily(fid, now.Add(m.accessTTL))
	}
	clients := make([]string, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	slices.Sort(clients)
	return clients, nil
}

// usedCodeTTL is how long a used code is remembered, so that its reuse is
// recognised (and what it issued revoked).
const usedCodeTTL = 10 * time.Minute
