package homeindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Peer is one member of the index cluster.
type Peer struct {
	ID       string // raft server id (the router's name)
	RaftAddr string // host:port of the Raft transport
	APIAddr  string // base URL of the router's internal API, for forwarding writes
}

// Config configures a Node.
type Config struct {
	ID  string // this node's id; must appear in Peers
	Dir string // data directory (WAL, snapshots); created if missing
	// Listener for the Raft transport. If nil, Bind is listened on.
	Listener net.Listener
	Bind     string
	Peers    []Peer
	// Bootstrap forms the cluster from Peers when the node has no state yet.
	Bootstrap bool
	// Join lists API base URLs of existing members; a node with no state
	// that is not bootstrapping asks them to add it (as a voter, or as a
	// non-voter if NonVoter is set). APIAddr is this node's own API URL.
	Join     []string
	NonVoter bool
	APIAddr  string
	// Token authenticates internal API calls (forwarded writes).
	Token string
	// OnPolicy is called (on the FSM goroutine) when a new residency
	// policy version is applied or restored.
	OnPolicy func(version int, data []byte)
	// Timeouts; zero means a value suited to a LAN/loopback cluster.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	ApplyTimeout     time.Duration
	// Log compaction: snapshot after SnapshotThreshold new entries, keeping
	// TrailingLogs entries for followers that lag (defaults 8192 / 10240).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	Logger            *slog.Logger
}

func (c *Config) validate() error {
	if c.ID == "" {
		return errors.New("homeindex: id: required")
	}
	if c.Dir == "" {
		return errors.New("homeindex: dir: required")
	}
	if c.Listener == nil && c.Bind == "" {
		return errors.New("homeindex: bind: required")
	}
	if c.Token == "" {
		return errors.New("homeindex: token: required")
	}
	if len(c.Peers) == 0 && len(c.Join) == 0 {
		return errors.New("homeindex: peers: list the cluster's members, or join: an existing member")
	}
	seen := map[string]bool{}
	self := len(c.Peers) == 0
	for i, p := range c.Peers {
		if p.ID == "" || p.RaftAddr == "" || p.APIAddr == "" {
			return fmt.Errorf("homeindex: peers[%d]: id, raft_addr and api_addr are required", i)
		}
		if seen[p.ID] {
			return fmt.Errorf("homeindex: peers[%d]: duplicate id %q", i, p.ID)
		}
		seen[p.ID] = true
		self = self || p.ID == c.ID
	}
	if !self {
		return fmt.Errorf("homeindex: peers: this node's id %q is not listed", c.ID)
	}
	return nil
}

// Node is one replica of the home index.
type Node struct {
	cfg    Config
	fsm    *fsm
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	logs   *raftboltdb.BoltStore
	peers  map[raft.ServerID]Peer
	client *http.Client
	log    *slog.Logger

	// The replica serves lookups only once it has re-applied the log it
	// had on disk at start; before that it would answer "unknown" for
	// users it knows, and a router would send them to the wrong region.
	startIndex uint64
	opened     time.Time
	caughtUp   atomic.Bool

	queue       chan *pending
	closed      chan struct{}
	closeOnce   sync.Once
	batcherDone chan struct{}
	announced   chan struct{}
	joinDone    chan struct{}
	snaps       *raft.FileSnapshotStore

	batchSizes   prometheus.Histogram
	applyLatency prometheus.Histogram
}

// Open starts a replica. It joins the cluster described by cfg.Peers.
func Open(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = 500 * time.Millisecond
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = 500 * time.Millisecond
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	log := cfg.Logger.With("component", "homeindex")
	logDir := filepath.Join(cfg.Dir, "log")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, fmt.Errorf("homeindex: dir: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{
		Name:        "raft",
		Level:       hclog.Warn,
		Output:      slogWriter{log},
		DisableTime: true,
	})
	// raft-boltdb with fsync on every append. (raft-wal v0.4.0 was tried
	// first: after Raft truncated a log suffix it panicked on restart with
	// "sealed segment has no index block", hashicorp/raft-wal#31.)
	w, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(logDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true},
	})
	if err != nil {
		return nil, fmt.Errorf("homeindex: open log store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("homeindex: snapshots: %w", err)
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Bind); err != nil {
			w.Close()
			return nil, fmt.Errorf("homeindex: bind: %w", err)
		}
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &tcpStream{ln: ln},
		MaxPool: 4,
		Timeout: 5 * time.Second,
		Logger:  hlog,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	rc.SnapshotThreshold = 8192
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}

	startIndex, err := w.LastIndex()
	if err != nil {
		trans.Close()
		w.Close()
		return nil, fmt.Errorf("homeindex: read log store: %w", err)
	}
	f := newFSM()
	f.onPolicy = cfg.OnPolicy
	// Reads of recent entries (replication to followers) come from memory.
	cache, err := raft.NewLogCache(1024, w)
	if err != nil {
		trans.Close()
		w.Close()
		return nil, err
	}
	r, err := raft.NewRaft(rc, f, cache, w, snaps, trans)
	if err != nil {
		trans.Close()
		w.Close()
		return nil, fmt.Errorf("homeindex: start raft: %w", err)
	}
	n := &Node{
		cfg:    cfg,
		fsm:    f,
		raft:   r,
		trans:  trans,
		logs:   w,
		peers:  make(map[raft.ServerID]Peer),
		client: &http.Client{Timeout: cfg.ApplyTimeout + time.Second},
		log:    log,

		startIndex: startIndex,
		opened:     time.Now(),

		queue:       make(chan *pending, 4*MaxBatch),
		closed:      make(chan struct{}),
		batcherDone: make(chan struct{}),
		announced:   make(chan struct{}),
		joinDone:    make(chan struct{}),
		snaps:       snaps,
		batchSizes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "domicile_index_batch_commands",
			Help:    "Commands per Raft log entry proposed by this node as leader.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "domicile_index_apply_seconds",
			Help:    "Time from proposing a batch to its commit and apply (Raft apply latency).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	var servers []raft.Server
	for _, p := range cfg.Peers {
		n.peers[raft.ServerID(p.ID)] = p
		servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	has, err := raft.HasExistingState(w, w, snaps)
	go n.batcher()
	go n.announce()
	if err == nil && !has && !cfg.Bootstrap && len(cfg.Join) > 0 {
		go n.joinCluster()
	} else {
		close(n.joinDone)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("homeindex: %w", err)
	}
	if cfg.Bootstrap {
		if !has {
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				n.Close()
				return nil, fmt.Errorf("homeindex: bootstrap: %w", err)
			}
		}
	}
	return n, nil
}

// ID returns the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr returns the address the Raft transport listens on.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// Lookup reads the local replica: eventually consistent, no I/O.
func (n *Node) Lookup(k Key) (Entry, bool) { return n.fsm.lookup(k) }

// Len returns the number of entries in the local replica.
func (n *Node) Len() int { return n.fsm.len() }

// Leader returns the id of the current leader, or "" if there is none.
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Ready reports whether the cluster has a leader (so writes can commit)
// and the local replica has caught up (so reads are trustworthy).
func (n *Node) Ready() bool { return n.Leader() != "" && n.CaughtUp() }

// CaughtUp reports whether the local replica has applied every entry that
// was in its log when it started. Once true it stays true.
func (n *Node) CaughtUp() bool {
	if n.caughtUp.Load() {
		return true
	}
	applied := n.raft.AppliedIndex()
	ok := applied >= n.startIndex
	if !ok && n.Leader() != "" && time.Since(n.opened) > 5*time.Second {
		// The log may have ended in entries that were never committed and
		// were dropped by the new leader: caught up means applied all that
		// is committed.
		commit, _ := strconv.ParseUint(n.raft.Stats()["commit_index"], 10, 64)
		ok = commit > 0 && applied >= commit
	}
	if ok {
		n.caughtUp.Store(true)
	}
	return ok
}

// Collectors are the node's Prometheus metrics (batch sizes, apply
// latency, index size) for the server that embeds it to register.
func (n *Node) Collectors() []prometheus.Collector {
	return []prometheus.Collector{n.batchSizes, n.applyLatency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "domicile_index_entries", Help: "Identifier entries in the local replica."},
			func() float64 { return float64(n.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "domicile_index_table_bytes", Help: "Bytes of the local replica's table buckets in use."},
			func() float64 { return float64(n.fsm.tbl.Load().MemoryBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "domicile_index_arena_bytes", Help: "Bytes the local replica's table has mapped outside the Go heap (not in go_memstats)."},
			func() float64 { return float64(n.fsm.tbl.Load().ArenaBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "domicile_index_leader", Help: "1 if this node is the Raft leader."},
			func() float64 {
				if n.IsLeader() {
					return 1
				}
				return 0
			}),
	}
}

// Snapshot compacts the log now (it is also done automatically).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Stats returns Raft's counters (state, term, last index, ...).
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Claim makes owner the holder of every key, homed in region. It is all or
// nothing and fails with ErrConflict if any key is held by another owner,
// ErrUnknownRegion if no applied policy names the region. Claiming keys
// one already holds succeeds, so a retry after an unknown outcome is safe.
func (n *Node) Claim(ctx context.Context, keys []Key, region, owner string) error {
	return n.ClaimByRule(ctx, keys, region, owner, "")
}

// ClaimByRule is Claim that also records which residency rule picked the
// region (e.g. "email_domain:acme.de"), for RuleCounts.
func (n *Node) ClaimByRule(ctx context.Context, keys []Key, region, owner, rule string) error {
	return n.submit(ctx, &command{Op: opClaim, Keys: keys, Region: region, Owner: OwnerOf(owner), Rule: rule})
}

// RuleCounts returns, per residency rule, how many index entries claims
// decided by that rule created.
func (n *Node) RuleCounts() map[string]uint64 { return n.fsm.ruleCounts() }

// Release drops the keys that owner holds; keys held by others are left alone.
func (n *Node) Release(ctx context.Context, keys []Key, owner string) error {
	return n.submit(ctx, &command{Op: opRelease, Keys: keys, Owner: OwnerOf(owner)})
}

// Rehome moves owner's keys from one region to another. It is refused with
// ErrFenced if any key is not in region from or changed after fence (the
// Version the caller read), so two re-homings cannot both win.
func (n *Node) Rehome(ctx context.Context, keys []Key, owner, from, to string, fence uint32) error {
	return n.submit(ctx, &command{Op: opRehome, Keys: keys, Owner: OwnerOf(owner), Region: from, To: to, Fence: fence})
}

// Revoke marks a session as revoked until it expires (global logout). Only
// a hash of the session id is stored.
func (n *Node) Revoke(ctx context.Context, sessionID string, expires time.Time) error {
	return n.submit(ctx, &command{Op: opRevoke, Keys: []Key{sessionKey(sessionID)}, Expires: expires.UnixMilli()})
}

// SetClient registers or replaces an OAuth client's metadata (not personal
// data), replicated to every region and router.
func (n *Node) SetClient(ctx context.Context, id string, metadata []byte) error {
	return n.submit(ctx, &command{Op: opSetClient, ID: id, Data: metadata})
}

// DeleteClient removes an OAuth client.
func (n *Node) DeleteClient(ctx context.Context, id string) error {
	return n.submit(ctx, &command{Op: opDeleteClient, ID: id})
}

// Client returns an OAuth client's metadata from the local replica. The
// slice must not be modified.
func (n *Node) Client(id string) ([]byte, bool) { return n.fsm.client(id) }

// ClientIDs lists the registered OAuth clients (local replica), sorted.
func (n *Node) ClientIDs() []string { return n.fsm.clientIDs() }

// IsRevoked reports whether the local replica has a live revocation of the
// session.
func (n *Node) IsRevoked(sessionID string) bool {
	exp, ok := n.fsm.revokedUntil(sessionKey(sessionID))
	return ok && exp > time.Now().UnixMilli()
}

// SetPolicy replicates a residency policy: every replica applies the same
// version at the same log index. The YAML is validated by every replica
// (residency.Parse); a version not newer than the one in force is refused.
func (n *Node) SetPolicy(ctx context.Context, version int, policyYAML []byte) error {
	return n.submit(ctx, &command{Op: opSetPolicy, Version: version, Data: policyYAML})
}

// Policy returns the policy version in force on this replica and its YAML.
func (n *Node) Policy() (int, []byte) {
	p := n.fsm.policyNow()
	return p.Version, p.Data
}

// LookupLinearizable reads k as of now: the leader confirms its leadership
// and waits until everything committed before the read is applied (a Raft
// barrier). On a follower the read is forwarded to the leader.
func (n *Node) LookupLinearizable(ctx context.Context, k Key) (Entry, bool, error) {
	var e Entry
	var found bool
	err := n.retry(ctx, func() error {
		if n.IsLeader() {
			if err := n.raft.Barrier(n.timeout(ctx)).Error(); err != nil {
				return fmt.Errorf("%w: %v", ErrNoLeader, err)
			}
			e, found = n.fsm.lookup(k)
			return nil
		}
		var err error
		e, found, err = n.forwardLookup(ctx, k)
		return err
	})
	return e, found, err
}

// retry runs op until it returns something other than ErrNoLeader or ctx
// ends: during an election there is briefly no leader, or this node does
// not know it yet.
func (n *Node) retry(ctx context.Context, op func() error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	backoff := 5 * time.Millisecond
	for {
		err := op()
		if !errors.Is(err, ErrNoLeader) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-n.closed:
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func (n *Node) timeout(ctx context.Context) time.Duration {
	t := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < t {
		t = max(time.Until(dl), time.Millisecond)
	}
	return t
}

// submit validates c and gets it committed. Every write goes through the
// node's batcher: on the leader a batch becomes one log entry; on a
// follower it is forwarded to the leader as one request.
func (n *Node) submit(ctx context.Context, c *command) error {
	if err := c.validate(); err != nil {
		return err
	}
	if c.ReqID == 0 {
		c.ReqID = newReqID() // the same id on every retry
	}
	return n.retry(ctx, func() error { return n.enqueue(ctx, c) })
}

type pending struct {
	cmd  *command
	done chan error
}

// enqueue hands c to the batcher and waits for its own result.
func (n *Node) enqueue(ctx context.Context, c *command) error {
	p := &pending{cmd: c, done: make(chan error, 1)}
	select {
	case n.queue <- p:
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrNoLeader, ctx.Err())
	case <-n.closed:
		return ErrNoLeader
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The command may still commit: the outcome is unknown to the caller.
		return fmt.Errorf("%w: outcome unknown: %v", ErrNoLeader, ctx.Err())
	case <-n.closed:
		return fmt.Errorf("%w: node closed; outcome unknown", ErrNoLeader)
	}
}

// Batches in flight: on the leader, proposed to Raft and not yet
// committed (Raft writes the entries of several proposals with one fsync);
// on a follower, forwarded and not yet answered. Few slots make big
// batches: while every slot is busy, commands queue and leave together.
const (
	leaderInflight   = 4
	followerInflight = 2
)

// batcher is the leader's group commit: it packs every command waiting in
// the queue (up to MaxBatch) into one log entry, and keeps several entries
// in flight so the next batch forms while the last one is being fsynced.
func (n *Node) batcher() {
	defer close(n.batcherDone)
	lsem := make(chan struct{}, leaderInflight)
	fsem := make(chan struct{}, followerInflight)
	for {
		// Take an in-flight slot first: while every slot is busy, commands
		// pile up in the queue and leave together as the next batch.
		leader := n.IsLeader()
		sem := fsem
		if leader {
			sem = lsem
		}
		select {
		case sem <- struct{}{}:
		case <-n.closed:
			return
		}
		var first *pending
		select {
		case first = <-n.queue:
		case <-n.closed:
			return
		}
		batch := []*pending{first}
	drain:
		for len(batch) < MaxBatch {
			select {
			case p := <-n.queue:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		if !leader {
			go func() {
				defer func() { <-sem }()
				n.forwardBatch(batch)
			}()
			continue
		}
		cmds := make([]*command, len(batch))
		for i, p := range batch {
			cmds[i] = p.cmd
		}
		start := time.Now()
		fut := n.raft.Apply(encodeBatch(cmds), n.cfg.ApplyTimeout)
		go func() {
			defer func() { <-sem }()
			err := fut.Error()
			n.batchSizes.Observe(float64(len(batch)))
			n.applyLatency.Observe(time.Since(start).Seconds())
			if err != nil {
				if err = raftErr(err); !errors.Is(err, ErrNoLeader) {
					err = fmt.Errorf("homeindex: apply: %w", err)
				}
				for _, p := range batch {
					p.done <- err
				}
				return
			}
			results, _ := fut.Response().([]error)
			if len(results) != len(batch) {
				rerr, _ := fut.Response().(error)
				if rerr == nil {
					rerr = errors.New("homeindex: apply: unexpected response")
				}
				for _, p := range batch {
					p.done <- rerr
				}
				return
			}
			for i, p := range batch {
				p.done <- results[i]
			}
		}()
	}
}

// forwardBatch sends a follower's batch to the leader in one request and
// hands each command its own result.
func (n *Node) forwardBatch(batch []*pending) {
	fail := func(err error) {
		for _, p := range batch {
			p.done <- err
		}
	}
	id, api, err := n.leaderAPI()
	if err != nil {
		fail(err)
		return
	}
	req := batchRequest{Commands: make([]wireCommand, len(batch))}
	for i, p := range batch {
		req.Commands[i] = toWire(p.cmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	var resp batchResponse
	if err := doJSON(ctx, n.client, api, "batch", n.cfg.Token, n.cfg.ID, req, &resp); err != nil {
		if !errors.Is(err, ErrNoLeader) {
			err = fmt.Errorf("%w: forward to %s: %v", ErrNoLeader, id, err)
		}
		fail(err)
		return
	}
	if len(resp.Results) != len(batch) {
		fail(fmt.Errorf("%w: leader %s answered %d results for %d commands", ErrNoLeader, id, len(resp.Results), len(batch)))
		return
	}
	for i, p := range batch {
		p.done <- resp.Results[i].err()
	}
}

// leaderAPI returns the API base URL of the current leader.
func (n *Node) leaderAPI() (string, string, error) {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return "", "", ErrNoLeader
	}
	if api, ok := n.fsm.memberAPI(string(id)); ok && api != "" {
		return string(id), api, nil
	}
	if p, ok := n.peers[id]; ok {
		return string(id), p.APIAddr, nil
	}
	return string(id), "", fmt.Errorf("%w: no API address known for leader %s", ErrNoLeader, id)
}

func (n *Node) forwardLookup(ctx context.Context, k Key) (Entry, bool, error) {
	id, api, err := n.leaderAPI()
	if err != nil {
		return Entry{}, false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(api, "/")+"/internal/index/lookup/"+k.String()+"?consistent=1", nil)
	if err != nil {
		return Entry{}, false, err
	}
	req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	req.Header.Set(headerForwarded, n.cfg.ID)
	resp, err := n.client.Do(req)
	if err != nil {
		return Entry{}, false, fmt.Errorf("%w: forward to %s: %v", ErrNoLeader, id, err)
	}
	defer resp.Body.Close()
	if err := errorFromResponse(resp); err != nil {
		if errors.Is(err, errNotFound) {
			return Entry{}, false, nil
		}
		return Entry{}, false, err
	}
	var e Entry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return Entry{}, false, fmt.Errorf("homeindex: lookup reply: %w", err)
	}
	return e, true, nil
}

// Join adds a member (on the leader; forwarded otherwise): its API
// address is replicated first so every node can forward to it once it
// leads, then it is added as a voter or non-voter.
func (n *Node) Join(ctx context.Context, id, raftAddr, apiAddr string, voter bool) error {
	if id == "" || raftAddr == "" || apiAddr == "" {
		return fmt.Errorf("%w: join: id, raft and api addresses are required", ErrInvalid)
	}
	return n.retry(ctx, func() error {
		if !n.IsLeader() {
			return n.forwardMember(ctx, "join", memberRequest{ID: id, Raft: raftAddr, API: apiAddr, Voter: voter})
		}
		if err := n.enqueue(ctx, &command{Op: opSetMember, ID: id, API: apiAddr}); err != nil {
			return err
		}
		var f raft.IndexFuture
		if voter {
			f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, n.timeout(ctx))
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, n.timeout(ctx))
		}
		return raftErr(f.Error())
	})
}

// Leave removes a member from the cluster.
func (n *Node) Leave(ctx context.Context, id string) error {
	return n.retry(ctx, func() error {
		if !n.IsLeader() {
			return n.forwardMember(ctx, "leave", memberRequest{ID: id})
		}
		if err := raftErr(n.raft.RemoveServer(raft.ServerID(id), 0, n.timeout(ctx)).Error()); err != nil {
			return err
		}
		return n.enqueue(ctx, &command{Op: opRemoveMember, ID: id})
	})
}

// raftErr maps Raft's "not now, no leader here" errors to ErrNoLeader, which
// callers retry; anything else is returned as it is.
func raftErr(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []error{raft.ErrNotLeader, raft.ErrLeadershipLost, raft.ErrEnqueueTimeout, raft.ErrRaftShutdown, raft.ErrLeadershipTransferInProgress} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %v", ErrNoLeader, err)
		}
	}
	return err
}

type memberRequest struct {
	ID    string `json:"id"`
	Raft  string `json:"raft,omitempty"`
	API   string `json:"api,omitempty"`
	Voter bool   `json:"voter,omitempty"`
}

func (n *Node) forwardMember(ctx context.Context, what string, m memberRequest) error {
	_, api, err := n.leaderAPI()
	if err != nil {
		return err
	}
	return doJSON(ctx, n.client, api, what, n.cfg.Token, n.cfg.ID, m, nil)
}

// doJSON posts v to the internal API at base and decodes the reply into out.
func doJSON(ctx context.Context, hc *http.Client, base, what, token, from string, v, out any) error {
	body, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/internal/index/"+what, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if from != "" {
		req.Header.Set(headerForwarded, from)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s via %s: %v", ErrNoLeader, what, base, err)
	}
	defer resp.Body.Close()
	if err := errorFromResponse(resp); err != nil {
		return err
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("%w: %s reply from %s: %v", ErrNoLeader, what, base, err)
		}
	}
	return nil
}

// announce keeps this node's API address in the replicated member table
// whenever it leads, so that every replica (including ones that joined at
// run time and have no static peer list) can forward writes to it.
func (n *Node) announce() {
	defer close(n.announced)
	self := n.cfg.APIAddr
	if p, ok := n.peers[raft.ServerID(n.cfg.ID)]; ok && self == "" {
		self = p.APIAddr
	}
	if self == "" {
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.closed:
			return
		case <-tick.C:
		}
		if !n.IsLeader() {
			continue
		}
		if api, ok := n.fsm.memberAPI(n.cfg.ID); ok && api == self {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		if err := n.enqueue(ctx, &command{Op: opSetMember, ID: n.cfg.ID, API: self}); err != nil {
			n.log.Warn("could not announce this node's API address", "err", err)
		}
		cancel()
	}
}

// joinCluster asks the members in cfg.Join to add this node, until one
// accepts or the node closes.
func (n *Node) joinCluster() {
	defer close(n.joinDone)
	backoff := 100 * time.Millisecond
	for {
		for _, base := range n.cfg.Join {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			err := doJSON(ctx, n.client, base, "join", n.cfg.Token, "", memberRequest{ID: n.cfg.ID, Raft: n.RaftAddr(), API: n.cfg.APIAddr, Voter: !n.cfg.NonVoter}, nil)
			cancel()
			if err == nil {
				n.log.Info("joined the home index cluster", "via", base)
				return
			}
			n.log.Warn("join failed; retrying", "via", base, "err", err)
		}
		select {
		case <-n.closed:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Close stops Raft and closes the log store and transport.
func (n *Node) Close() error {
	var first bool
	n.closeOnce.Do(func() { first = true; close(n.closed) })
	if !first {
		return nil
	}
	<-n.batcherDone
	<-n.joinDone
	<-n.announced
	err := n.raft.Shutdown().Error()
	if cerr := n.trans.Close(); err == nil {
		err = cerr
	}
	if cerr := n.logs.Close(); err == nil {
		err = cerr
	}
	return err
}

// tcpStream is a raft.StreamLayer over a listener the caller opened, so a
// node can be given a port it already holds (tests, `domicile dev`).
type tcpStream struct{ ln net.Listener }

func (s *tcpStream) Accept() (net.Conn, error) { return s.ln.Accept() }
func (s *tcpStream) Close() error              { return s.ln.Close() }
func (s *tcpStream) Addr() net.Addr            { return s.ln.Addr() }
func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// slogWriter sends hclog's lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, lv := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug} {
		if strings.HasPrefix(line, prefix) {
			level, line = lv, strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

var _ io.Writer = slogWriter{}
