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
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
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
	// Token authenticates internal API calls (forwarded writes).
	Token string
	// Timeouts; zero means a value suited to a LAN/loopback cluster.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	ApplyTimeout     time.Duration
	Logger           *slog.Logger
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
	seen := map[string]bool{}
	self := false
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
	wal    *wal.WAL
	meta   *metadb.BoltMetaDB
	peers  map[raft.ServerID]Peer
	client *http.Client
	log    *slog.Logger

	// The replica serves lookups only once it has re-applied the log it
	// had on disk at start; before that it would answer "unknown" for
	// users it knows, and a router would send them to the wrong region.
	startIndex uint64
	opened     time.Time
	caughtUp   atomic.Bool
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
	walDir := filepath.Join(cfg.Dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("homeindex: dir: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{
		Name:        "raft",
		Level:       hclog.Warn,
		Output:      slogWriter{log},
		DisableTime: true,
	})
	// raft-wal's Close leaves its metadata DB (and its file lock) open, so
	// the node owns it and closes it; otherwise a reopen in the same
	// process would block on the lock.
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithLogger(hlog), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, fmt.Errorf("homeindex: open wal: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
	if err != nil {
		w.Close()
		meta.Close()
		return nil, fmt.Errorf("homeindex: snapshots: %w", err)
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Bind); err != nil {
			w.Close()
			meta.Close()
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

	startIndex, err := w.LastIndex()
	if err != nil {
		trans.Close()
		w.Close()
		meta.Close()
		return nil, fmt.Errorf("homeindex: read wal: %w", err)
	}
	f := newFSM()
	r, err := raft.NewRaft(rc, f, w, w, snaps, trans)
	if err != nil {
		trans.Close()
		w.Close()
		meta.Close()
		return nil, fmt.Errorf("homeindex: start raft: %w", err)
	}
	n := &Node{
		cfg:    cfg,
		fsm:    f,
		raft:   r,
		trans:  trans,
		wal:    w,
		meta:   meta,
		peers:  make(map[raft.ServerID]Peer),
		client: &http.Client{Timeout: cfg.ApplyTimeout + time.Second},
		log:    log,

		startIndex: startIndex,
		opened:     time.Now(),
	}
	var servers []raft.Server
	for _, p := range cfg.Peers {
		n.peers[raft.ServerID(p.ID)] = p
		servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(w, w, snaps)
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("homeindex: %w", err)
		}
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

// Stats returns Raft's counters (state, term, last index, ...).
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Claim makes owner the holder of every key, homed in region. It is all or
// nothing and fails with ErrConflict if any key is held by another owner.
// Claiming keys one already holds succeeds, so a retry after an unknown
// outcome is safe.
func (n *Node) Claim(ctx context.Context, keys []Key, region, owner string) error {
	return n.write(ctx, &command{Op: opClaim, Keys: keys, Region: region, Owner: owner})
}

// Release drops the keys that owner holds; keys held by others are left alone.
func (n *Node) Release(ctx context.Context, keys []Key, owner string) error {
	return n.write(ctx, &command{Op: opRelease, Keys: keys, Owner: owner})
}

func (n *Node) write(ctx context.Context, c *command) error {
	if err := c.validate(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	// During an election there is briefly no leader (or this node does not
	// know it yet): wait for one rather than fail the write.
	backoff := 10 * time.Millisecond
	for {
		var err error
		if n.IsLeader() {
			err = n.apply(ctx, c)
		} else {
			err = n.forward(ctx, c)
		}
		if !errors.Is(err, ErrNoLeader) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

func (n *Node) apply(ctx context.Context, c *command) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	fut := n.raft.Apply(data, timeout)
	if err := fut.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return fmt.Errorf("%w: %v", ErrNoLeader, err)
		}
		return fmt.Errorf("homeindex: apply: %w", err)
	}
	if resp, ok := fut.Response().(error); ok && resp != nil {
		return resp
	}
	return nil
}

// forward sends the write to the leader's internal API.
func (n *Node) forward(ctx context.Context, c *command) error {
	_, id := n.raft.LeaderWithID()
	p, ok := n.peers[id]
	if id == "" || !ok {
		return ErrNoLeader
	}
	body, _ := json.Marshal(c)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(p.APIAddr, "/")+"/internal/index/"+string(c.Op), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(headerForwarded, n.cfg.ID)
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: forward to %s: %v", ErrNoLeader, id, err)
	}
	defer resp.Body.Close()
	return errorFromResponse(resp)
}

// Close stops Raft and closes the log store and transport.
func (n *Node) Close() error {
	err := n.raft.Shutdown().Error()
	if cerr := n.trans.Close(); err == nil {
		err = cerr
	}
	if cerr := n.wal.Close(); err == nil {
		err = cerr
	}
	if cerr := n.meta.Close(); err == nil {
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
