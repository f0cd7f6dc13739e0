package homeindex

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// Entry is what the index knows about one identifier: the home region and
// an opaque owner id (the region-prefixed user id). Neither is personal data.
type Entry struct {
	Region string `json:"region"`
	Owner  string `json:"owner"`
}

// Errors returned by writes.
var (
	// ErrConflict: a key is already held by another owner.
	ErrConflict = errors.New("identifier already claimed by another user")
	// ErrNoLeader: the cluster has no leader right now; retry later.
	ErrNoLeader = errors.New("home index has no leader")
	// ErrInvalid: the command is malformed (bad key count, region or owner).
	ErrInvalid = errors.New("invalid index command")
)

// Limits on one command, checked before it is proposed and again when it
// is applied, so a bad command is refused whole.
const (
	MaxKeysPerCommand = 16
	MaxOwnerLen       = 128
	MaxRegionLen      = 32
)

type opCode string

const (
	opClaim   opCode = "claim"
	opRelease opCode = "release"
)

// command is one replicated change. It is JSON for now; a compact binary
// form can replace it behind the same appliers.
type command struct {
	Op     opCode `json:"op"`
	Keys   []Key  `json:"keys"`
	Region string `json:"region,omitempty"`
	Owner  string `json:"owner"`
}

func (c *command) validate() error {
	if len(c.Keys) == 0 || len(c.Keys) > MaxKeysPerCommand {
		return fmt.Errorf("%w: keys: want 1..%d, got %d", ErrInvalid, MaxKeysPerCommand, len(c.Keys))
	}
	if c.Owner == "" || len(c.Owner) > MaxOwnerLen {
		return fmt.Errorf("%w: owner: want 1..%d bytes", ErrInvalid, MaxOwnerLen)
	}
	switch c.Op {
	case opClaim:
		if !validRegion(c.Region) {
			return fmt.Errorf("%w: region: %q is not a region name", ErrInvalid, c.Region)
		}
	case opRelease:
	default:
		return fmt.Errorf("%w: op: unknown %q", ErrInvalid, c.Op)
	}
	return nil
}

func validRegion(s string) bool {
	if s == "" || len(s) > MaxRegionLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// fsm is the replicated state machine: a map guarded by a RWMutex. Apply
// never does I/O.
type fsm struct {
	mu      sync.RWMutex
	entries map[Key]Entry
}

func newFSM() *fsm { return &fsm{entries: make(map[Key]Entry)} }

func (f *fsm) lookup(k Key) (Entry, bool) {
	f.mu.RLock()
	e, ok := f.entries[k]
	f.mu.RUnlock()
	return e, ok
}

func (f *fsm) len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.entries)
}

// Apply implements raft.FSM. The response is nil or an error value.
func (f *fsm) Apply(l *raft.Log) any {
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return f.apply(&c)
}

func (f *fsm) apply(c *command) error {
	if err := c.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c.Op {
	case opClaim:
		// All or nothing: check every key before changing any.
		for _, k := range c.Keys {
			if e, ok := f.entries[k]; ok && e.Owner != c.Owner {
				return ErrConflict
			}
		}
		for _, k := range c.Keys {
			f.entries[k] = Entry{Region: c.Region, Owner: c.Owner}
		}
	case opRelease:
		for _, k := range c.Keys {
			if e, ok := f.entries[k]; ok && e.Owner == c.Owner {
				delete(f.entries, k)
			}
		}
	}
	return nil
}

type snapRecord struct {
	Key Key `json:"k"`
	Entry
}

// Snapshot implements raft.FSM. It copies the map; the streaming table of
// the next iteration will write from a consistent view instead.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	recs := make([]snapRecord, 0, len(f.entries))
	for k, e := range f.entries {
		recs = append(recs, snapRecord{Key: k, Entry: e})
	}
	return &snapshot{recs: recs}, nil
}

// Restore implements raft.FSM. A corrupt snapshot leaves the state as it was.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	entries := make(map[Key]Entry)
	dec := json.NewDecoder(bufio.NewReader(rc))
	for {
		var r snapRecord
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("restore home index snapshot: %w", err)
		}
		entries[r.Key] = r.Entry
	}
	f.mu.Lock()
	f.entries = entries
	f.mu.Unlock()
	return nil
}

type snapshot struct{ recs []snapRecord }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriter(sink)
	enc := json.NewEncoder(w)
	for i := range s.recs {
		if err := enc.Encode(&s.recs[i]); err != nil {
			sink.Cancel()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
