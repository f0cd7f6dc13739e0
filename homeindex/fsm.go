package homeindex

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/domicile/domicile/homeindex/table"
	"github.com/domicile/domicile/residency"
)

// Entry is what the index knows about one identifier. None of it is
// personal data.
type Entry struct {
	Region  string  `json:"region"`
	Version uint32  `json:"version"` // the Raft index (low 32 bits) of the last change
	Owner   OwnerID `json:"owner"`
}

// fsm is the replicated state machine. Apply runs on one goroutine (Raft's
// FSM loop) and never does I/O; lookups run concurrently on the compact
// table, which allows one writer and many readers.
type fsm struct {
	tbl atomic.Pointer[table.Table] // swapped whole by Restore

	// regions is append-only: an id, once given, names the same region
	// forever, so table entries stay valid across policy versions.
	regions atomic.Pointer[[]string] // id-1 → name
	mu      sync.RWMutex             // guards the fields below
	ids     map[string]uint16
	policy  policyState
	revoked map[Key]int64 // session key → expiry (unix ms)
	members map[string]string
	clients map[string][]byte // OAuth client id → metadata
	now     int64             // unix ms of the latest applied entry (leader's clock)
	// dedupe remembers the result of every request id applied in the last
	// dedupeWindow (by log time), so a retry of a request whose reply was
	// lost returns the first result instead of applying twice.
	dedupe map[uint64]dedupeEntry
	// rules counts the entries each residency rule created (claims of new
	// keys), so a policy diff can say how many existing users a changed
	// rule homed. It is not decremented on release: the rule of an entry
	// is not stored (that would cost memory per entry).
	rules map[string]uint64

	onPolicy func(version int, data []byte) // called after a new policy applies
}

type policyState struct {
	Version int
	Data    []byte
}

func newFSM() *fsm {
	f := &fsm{}
	f.tbl.Store(table.New(0))
	f.reset()
	return f
}

type dedupeEntry struct {
	at   int64 // log time (unix ms) it was applied
	code uint8 // index into resultCodes+1; 0 = success
}

// dedupeWindow is how long a request id is remembered: far longer than any
// client keeps retrying.
const dedupeWindow = 10 * 60 * 1000

func (f *fsm) reset() {
	f.dedupe = map[uint64]dedupeEntry{}
	f.rules = map[string]uint64{}
	f.ids = map[string]uint16{}
	f.revoked = map[Key]int64{}
	f.members = map[string]string{}
	f.clients = map[string][]byte{}
	f.policy = policyState{}
	empty := []string{}
	f.regions.Store(&empty)
}

// lookup reads the local replica: no lock beyond the table's segment lock,
// no allocation.
func (f *fsm) lookup(k Key) (Entry, bool) {
	v, ok := f.tbl.Load().Get(k)
	if !ok {
		return Entry{}, false
	}
	regions := *f.regions.Load()
	name := ""
	if int(v.Region) >= 1 && int(v.Region) <= len(regions) {
		name = regions[v.Region-1]
	}
	return Entry{Region: name, Version: v.Version, Owner: OwnerID(v.Owner)}, true
}

func (f *fsm) len() int { return f.tbl.Load().Len() }

func (f *fsm) revokedUntil(k Key) (int64, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	exp, ok := f.revoked[k]
	return exp, ok
}

func (f *fsm) policyNow() policyState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.policy
}

func (f *fsm) ruleCounts() map[string]uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]uint64, len(f.rules))
	for k, v := range f.rules {
		out[k] = v
	}
	return out
}

func (f *fsm) memberAPI(id string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.members[id]
	return a, ok
}

// Apply implements raft.FSM: one log entry is a batch of commands and the
// response is a []error with one result per command, or an error if the
// entry itself is unreadable (then nothing of it is applied).
func (f *fsm) Apply(l *raft.Log) any {
	cmds, err := decodeBatch(l.Data)
	if err != nil {
		return err
	}
	if !l.AppendedAt.IsZero() {
		f.now = l.AppendedAt.UnixMilli()
	}
	version := uint32(l.Index)
	results := make([]error, len(cmds))
	for i, c := range cmds {
		if c.ReqID != 0 {
			// Seen recently: answer as the first time. Expiry is judged by
			// log time, so every replica decides the same way.
			if d, ok := f.dedupe[c.ReqID]; ok && f.now-d.at < dedupeWindow {
				results[i] = codeErr(d.code)
				continue
			}
		}
		results[i] = f.apply(c, version)
		if c.ReqID != 0 {
			f.dedupe[c.ReqID] = dedupeEntry{at: f.now, code: errCode(results[i])}
		}
	}
	if len(f.dedupe) > 4096 && l.Index%1024 == 0 {
		for id, d := range f.dedupe {
			if f.now-d.at >= dedupeWindow {
				delete(f.dedupe, id)
			}
		}
	}
	return results
}

// ApplyBatch implements raft.BatchingFSM, so Raft hands over every entry
// committed together in one call.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = f.Apply(l)
		}
	}
	return out
}

// errCode and codeErr map results to a byte and back for the dedupe
// table (the detail of a non-sentinel error is not kept).
func errCode(err error) uint8 {
	if err == nil {
		return 0
	}
	for i, rc := range resultCodes {
		if errors.Is(err, rc.err) {
			return uint8(i + 1)
		}
	}
	return uint8(len(resultCodes) + 1)
}

func codeErr(code uint8) error {
	switch {
	case code == 0:
		return nil
	case int(code) <= len(resultCodes):
		return resultCodes[code-1].err
	}
	return errors.New("home index: command failed")
}

func (f *fsm) regionID(name string) (uint16, bool) {
	f.mu.RLock()
	id, ok := f.ids[name]
	f.mu.RUnlock()
	return id, ok
}

func (f *fsm) apply(c *command, version uint32) error {
	if err := c.validate(); err != nil {
		return err
	}
	switch c.Op {
	case opClaim:
		rid, ok := f.regionID(c.Region)
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownRegion, c.Region)
		}
		// All or nothing: check every key before changing any.
		for _, k := range c.Keys {
			if v, ok := f.tbl.Load().Get(k); ok && OwnerID(v.Owner) != c.Owner {
				return ErrConflict
			}
		}
		created := uint64(0)
		for _, k := range c.Keys {
			v, ok := f.tbl.Load().Get(k)
			if ok && v.Region == rid {
				continue // idempotent re-claim keeps its version
			}
			if !ok {
				created++
			}
			f.tbl.Load().Put(k, table.Value{Region: rid, Version: version, Owner: uint64(c.Owner)})
		}
		if created > 0 && c.Rule != "" {
			f.mu.Lock()
			f.rules[c.Rule] += created
			f.mu.Unlock()
		}
	case opRelease:
		for _, k := range c.Keys {
			if v, ok := f.tbl.Load().Get(k); ok && OwnerID(v.Owner) == c.Owner {
				f.tbl.Load().Delete(k)
			}
		}
	case opRehome:
		from, ok1 := f.regionID(c.Region)
		to, ok2 := f.regionID(c.To)
		if !ok1 || !ok2 {
			return ErrUnknownRegion
		}
		for _, k := range c.Keys {
			v, ok := f.tbl.Load().Get(k)
			switch {
			case !ok || OwnerID(v.Owner) != c.Owner:
				return ErrConflict
			case v.Region != from || v.Version > c.Fence:
				return ErrFenced
			}
		}
		for _, k := range c.Keys {
			f.tbl.Load().Put(k, table.Value{Region: to, Version: version, Owner: uint64(c.Owner)})
		}
	case opRevoke:
		f.mu.Lock()
		if c.Expires > f.now {
			f.revoked[c.Keys[0]] = c.Expires
		}
		f.pruneRevokedLocked()
		f.mu.Unlock()
	case opSetPolicy:
		return f.setPolicy(c.Version, c.Data)
	case opSetMember:
		f.mu.Lock()
		f.members[c.ID] = c.API
		f.mu.Unlock()
	case opRemoveMember:
		f.mu.Lock()
		delete(f.members, c.ID)
		f.mu.Unlock()
	case opSetClient:
		f.mu.Lock()
		f.clients[c.ID] = c.Data
		f.mu.Unlock()
	case opDeleteClient:
		f.mu.Lock()
		delete(f.clients, c.ID)
		f.mu.Unlock()
	}
	return nil
}

// client returns the metadata of an OAuth client from the local replica.
func (f *fsm) client(id string) ([]byte, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, ok := f.clients[id]
	return d, ok
}

// clientIDs returns the ids of every registered OAuth client, sorted.
func (f *fsm) clientIDs() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Sorted(maps.Keys(f.clients))
}

// pruneRevokedLocked drops revocations past their expiry, judged by the
// time of the entry being applied, so every replica drops the same ones.
func (f *fsm) pruneRevokedLocked() {
	if len(f.revoked) < 1024 {
		return
	}
	for k, exp := range f.revoked {
		if exp <= f.now {
			delete(f.revoked, k)
		}
	}
}

func (f *fsm) setPolicy(version int, data []byte) error {
	f.mu.Lock()
	if version <= f.policy.Version {
		cur := f.policy.Version
		f.mu.Unlock()
		return fmt.Errorf("%w: %d (in force: %d)", ErrStalePolicy, version, cur)
	}
	f.mu.Unlock()
	p, err := residency.Parse(data)
	if err != nil {
		return fmt.Errorf("%w: policy: %v", ErrInvalid, err)
	}
	if p.Version() != version {
		return fmt.Errorf("%w: policy: file says version %d, command says %d", ErrInvalid, p.Version(), version)
	}
	f.mu.Lock()
	f.registerLocked(p.Regions())
	f.policy = policyState{Version: version, Data: append([]byte(nil), data...)}
	cb := f.onPolicy
	f.mu.Unlock()
	if cb != nil {
		cb(version, data)
	}
	return nil
}

func (f *fsm) registerLocked(names []string) {
	regions := append([]string(nil), *f.regions.Load()...)
	for _, name := range names {
		if _, ok := f.ids[name]; ok || len(regions) >= 1<<16-1 {
			continue
		}
		regions = append(regions, name)
		f.ids[name] = uint16(len(regions))
	}
	f.regions.Store(&regions)
}

// Snapshot implements raft.FSM. It takes a copy-on-write view of the table
// (no copy of the entries) and copies only the small side tables.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &fsmSnapshot{
		view:    f.tbl.Load().Snapshot(),
		regions: append([]string(nil), *f.regions.Load()...),
		policy:  f.policy,
		members: make(map[string]string, len(f.members)),
		clients: make(map[string][]byte, len(f.clients)),
		revoked: make(map[Key]int64, len(f.revoked)),
		dedupe:  make(map[uint64]dedupeEntry, len(f.dedupe)),
		rules:   make(map[string]uint64, len(f.rules)),
		now:     f.now,
	}
	for k, v := range f.rules {
		s.rules[k] = v
	}
	for id, d := range f.dedupe {
		if f.now-d.at < dedupeWindow {
			s.dedupe[id] = d
		}
	}
	for k, v := range f.members {
		s.members[k] = v
	}
	for k, v := range f.clients {
		s.clients[k] = v // never modified in place
	}
	for k, exp := range f.revoked {
		if exp > f.now { // expired revocations are dropped at snapshot
			s.revoked[k] = exp
		}
	}
	return s, nil
}

// Snapshot file format (all integers big-endian):
//
//	"DHIX" version(1)
//	now(8) regions: n(4) {len(2) name}... policy: version(4) len(4) data
//	members: n(4) {len(2) id len(2) api}... revoked: n(8) {key(16) exp(8)}...
//	dedupe: n(8) {request id(8) applied-at(8) result code(1)}...
//	rule counts: n(4) {len(2) rule count(8)}...
//	clients: n(4) {len(2) id len(4) metadata}...    (version 4 on)
//	entries: n(8) {key(16) region(2) version(4) owner(6)}...
//	crc32c of everything before(4)
const (
	snapMagic   = "DHIX"
	snapVersion = 4
	// snapVersionNoClients is the previous format, still read: it has
	// no clients section.
	snapVersionNoClients = 3
	entrySize            = 16 + 2 + 4 + 6
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type fsmSnapshot struct {
	view    *table.View
	regions []string
	policy  policyState
	members map[string]string
	clients map[string][]byte
	revoked map[Key]int64
	dedupe  map[uint64]dedupeEntry
	rules   map[string]uint64
	now     int64
	// version is the file format to write; 0 means snapVersion (older
	// ones only for tests of reading them).
	version byte
}

type snapWriter struct {
	w   *bufio.Writer
	crc hash.Hash32
	buf [entrySize]byte
	err error
}

func (s *snapWriter) write(p []byte) {
	if s.err != nil {
		return
	}
	s.crc.Write(p)
	_, s.err = s.w.Write(p)
}

func (s *snapWriter) u16(v uint16) { binary.BigEndian.PutUint16(s.buf[:2], v); s.write(s.buf[:2]) }
func (s *snapWriter) u32(v uint32) { binary.BigEndian.PutUint32(s.buf[:4], v); s.write(s.buf[:4]) }
func (s *snapWriter) u64(v uint64) { binary.BigEndian.PutUint64(s.buf[:8], v); s.write(s.buf[:8]) }

// Persist streams the view to the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := s.writeTo(sink)
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) writeTo(out io.Writer) error {
	w := &snapWriter{w: bufio.NewWriterSize(out, 1<<20), crc: crc32.New(crcTable)}
	version := s.version
	if version == 0 {
		version = snapVersion
	}
	w.write([]byte(snapMagic))
	w.write([]byte{version})
	w.u64(uint64(s.now))
	w.u32(uint32(len(s.regions)))
	for _, r := range s.regions {
		w.u16(uint16(len(r)))
		w.write([]byte(r))
	}
	w.u32(uint32(s.policy.Version))
	w.u32(uint32(len(s.policy.Data)))
	w.write(s.policy.Data)
	ids := slices.Sorted(maps.Keys(s.members))
	w.u32(uint32(len(ids)))
	for _, id := range ids {
		w.u16(uint16(len(id)))
		w.write([]byte(id))
		w.u16(uint16(len(s.members[id])))
		w.write([]byte(s.members[id]))
	}
	w.u64(uint64(len(s.revoked)))
	for k, exp := range s.revoked {
		w.write(k[:])
		w.u64(uint64(exp))
	}
	w.u64(uint64(len(s.dedupe)))
	for id, d := range s.dedupe {
		w.u64(id)
		w.u64(uint64(d.at))
		w.write([]byte{d.code})
	}
	w.u32(uint32(len(s.rules)))
	for rule, n := range s.rules {
		w.u16(uint16(len(rule)))
		w.write([]byte(rule))
		w.u64(n)
	}
	if version >= snapVersion {
		cids := slices.Sorted(maps.Keys(s.clients))
		w.u32(uint32(len(cids)))
		for _, id := range cids {
			w.u16(uint16(len(id)))
			w.write([]byte(id))
			w.u32(uint32(len(s.clients[id])))
			w.write(s.clients[id])
		}
	}
	w.u64(uint64(s.view.Len()))
	s.view.Range(func(k table.Key, v table.Value) bool {
		b := w.buf[:]
		copy(b[:16], k[:])
		binary.BigEndian.PutUint16(b[16:18], v.Region)
		binary.BigEndian.PutUint32(b[18:22], v.Version)
		o := v.Owner
		b[22], b[23], b[24], b[25], b[26], b[27] = byte(o>>40), byte(o>>32), byte(o>>24), byte(o>>16), byte(o>>8), byte(o)
		w.write(b)
		return w.err == nil
	})
	if w.err != nil {
		return w.err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], w.crc.Sum32())
	if _, err := w.w.Write(sum[:]); err != nil {
		return err
	}
	return w.w.Flush()
}

func (s *fsmSnapshot) Release() { s.view.Release() }

// errCorruptSnapshot wraps every way a snapshot file can be unreadable.
var errCorruptSnapshot = errors.New("corrupt home index snapshot")

type snapReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	buf [entrySize]byte
	err error
}

func (s *snapReader) read(p []byte) {
	if s.err != nil {
		return
	}
	if _, err := io.ReadFull(s.r, p); err != nil {
		s.err = fmt.Errorf("%w: %v", errCorruptSnapshot, err)
		return
	}
	s.crc.Write(p)
}

func (s *snapReader) u16() uint16 { s.read(s.buf[:2]); return binary.BigEndian.Uint16(s.buf[:2]) }
func (s *snapReader) u32() uint32 { s.read(s.buf[:4]); return binary.BigEndian.Uint32(s.buf[:4]) }
func (s *snapReader) u64() uint64 { s.read(s.buf[:8]); return binary.BigEndian.Uint64(s.buf[:8]) }

func (s *snapReader) str(max int) string {
	n := int(s.u16())
	if n > max {
		s.err = fmt.Errorf("%w: string of %d bytes", errCorruptSnapshot, n)
	}
	if s.err != nil {
		return ""
	}
	b := make([]byte, n)
	s.read(b)
	return string(b)
}

// Restore implements raft.FSM. It builds the new state aside and swaps it
// in only if the whole file, checksum included, is sound; a corrupt
// snapshot leaves the state as it was.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := &snapReader{r: bufio.NewReaderSize(rc, 1<<20), crc: crc32.New(crcTable)}
	var magic [5]byte
	r.read(magic[:])
	if r.err == nil && (string(magic[:4]) != snapMagic || magic[4] != snapVersion && magic[4] != snapVersionNoClients) {
		return fmt.Errorf("%w: bad header", errCorruptSnapshot)
	}
	now := int64(r.u64())
	nreg := r.u32()
	if nreg >= 1<<16 {
		return fmt.Errorf("%w: %d regions", errCorruptSnapshot, nreg)
	}
	regions := make([]string, 0, nreg)
	ids := map[string]uint16{}
	for i := uint32(0); i < nreg && r.err == nil; i++ {
		name := r.str(MaxRegionLen)
		regions = append(regions, name)
		ids[name] = uint16(i + 1)
	}
	pol := policyState{Version: int(r.u32())}
	if n := r.u32(); r.err == nil {
		if n > MaxPolicyBytes {
			return fmt.Errorf("%w: policy of %d bytes", errCorruptSnapshot, n)
		}
		pol.Data = make([]byte, n)
		r.read(pol.Data)
	}
	members := map[string]string{}
	nmem := r.u32()
	for i := uint32(0); i < nmem && r.err == nil; i++ {
		id := r.str(128)
		members[id] = r.str(512)
	}
	revoked := map[Key]int64{}
	nrev := r.u64()
	for i := uint64(0); i < nrev && r.err == nil; i++ {
		var k Key
		r.read(k[:])
		revoked[k] = int64(r.u64())
	}
	dedupe := map[uint64]dedupeEntry{}
	ndd := r.u64()
	for i := uint64(0); i < ndd && r.err == nil; i++ {
		id := r.u64()
		at := int64(r.u64())
		var code [1]byte
		r.read(code[:])
		dedupe[id] = dedupeEntry{at: at, code: code[0]}
	}
	rules := map[string]uint64{}
	nrules := r.u32()
	for i := uint32(0); i < nrules && r.err == nil; i++ {
		rule := r.str(MaxRuleLen)
		rules[rule] = r.u64()
	}
	clients := map[string][]byte{}
	if magic[4] >= snapVersion {
		ncl := r.u32()
		for i := uint32(0); i < ncl && r.err == nil; i++ {
			id := r.str(MaxClientIDLen)
			size := r.u32()
			if r.err == nil && (size == 0 || size > MaxClientBytes || !ValidClientID(id)) {
				return fmt.Errorf("%w: client %q of %d bytes", errCorruptSnapshot, id, size)
			}
			if r.err == nil {
				d := make([]byte, size)
				r.read(d)
				clients[id] = d
			}
		}
	}
	n := r.u64()
	if r.err == nil && n > 1<<34 {
		return fmt.Errorf("%w: %d entries", errCorruptSnapshot, n)
	}
	t := table.New(int(n))
	for i := uint64(0); i < n && r.err == nil; i++ {
		b := r.buf[:]
		r.read(b)
		var k table.Key
		copy(k[:], b[:16])
		reg := binary.BigEndian.Uint16(b[16:18])
		if r.err == nil && (reg == 0 || int(reg) > len(regions)) {
			return fmt.Errorf("%w: entry with region id %d", errCorruptSnapshot, reg)
		}
		o := uint64(b[22])<<40 | uint64(b[23])<<32 | uint64(b[24])<<24 | uint64(b[25])<<16 | uint64(b[26])<<8 | uint64(b[27])
		t.Put(k, table.Value{Region: reg, Version: binary.BigEndian.Uint32(b[18:22]), Owner: o})
	}
	if r.err != nil {
		return r.err
	}
	want := r.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(r.r, sum[:]); err != nil || binary.BigEndian.Uint32(sum[:]) != want {
		return fmt.Errorf("%w: checksum mismatch", errCorruptSnapshot)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing data", errCorruptSnapshot)
	}

	f.mu.Lock()
	f.tbl.Store(t)
	f.ids, f.revoked, f.members, f.clients, f.policy, f.now, f.dedupe, f.rules = ids, revoked, members, clients, pol, now, dedupe, rules
	f.regions.Store(&regions)
	cb := f.onPolicy
	f.mu.Unlock()
	if cb != nil && pol.Version > 0 {
		cb(pol.Version, pol.Data)
	}
	return nil
}
