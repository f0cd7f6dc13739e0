package homeindex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/internal/testenv"
)

// This file holds an in-process cluster whose nodes can be stopped and
// restarted individually (same data directory, same Raft and API
// addresses), and the leader-kill chaos test. linearizability_test.go uses
// the same harness.

const chaosToken = "chaos-internal-token"

// chaosCluster is a loopback cluster of restartable replicas. A stopped
// replica is closed (Raft shut down, WAL closed, API server closed) and
// restarted with Open on the same directory and addresses, which is how a
// crashed router comes back.
type chaosCluster struct {
	t      *testing.T
	peers  []Peer
	dirs   []string
	logger *slog.Logger

	mu    sync.RWMutex
	nodes []*Node // nil while the replica is down
	srvs  []*http.Server

	// hooks[i], if set, wraps every request to replica i's internal API
	// (fault injection).
	hooks []atomic.Pointer[apiHook]
}

// apiHook serves r in place of a replica's internal API; next is the API.
type apiHook func(w http.ResponseWriter, r *http.Request, next http.Handler)

// chaosLogger discards the nodes' logs (a leader kill makes Raft log an
// error per heartbeat) unless HOMEINDEX_TEST_LOG is set.
func chaosLogger() *slog.Logger {
	if os.Getenv("HOMEINDEX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

func newChaosCluster(t *testing.T, n int) *chaosCluster {
	t.Helper()
	c := &chaosCluster{t: t, logger: chaosLogger(), nodes: make([]*Node, n), srvs: make([]*http.Server, n), hooks: make([]atomic.Pointer[apiHook], n)}
	addrs := freeLoopbackAddrs(t, 2*n)
	for i := range n {
		raftAddr, apiAddr := addrs[2*i], addrs[2*i+1]
		c.peers = append(c.peers, Peer{ID: fmt.Sprintf("c%d", i+1), RaftAddr: raftAddr, APIAddr: "http://" + apiAddr})
		c.dirs = append(c.dirs, t.TempDir())
	}
	t.Cleanup(func() {
		for i := range n {
			c.stop(i)
		}
	})
	for i := range n {
		if err := c.start(i); err != nil {
			t.Fatalf("start %s: %v", c.peers[i].ID, err)
		}
	}
	return c
}

// freeLoopbackAddrs returns n distinct loopback addresses whose ports were
// free a moment ago (all are held open together, so none repeats).
func freeLoopbackAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// listenRetry listens on addr, retrying for a while: the port was ours a
// moment ago and may still be in the kernel's hands.
func listenRetry(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start opens replica i (again) and serves its internal API.
func (c *chaosCluster) start(i int) error {
	c.mu.RLock()
	up := c.nodes[i] != nil
	c.mu.RUnlock()
	if up {
		return fmt.Errorf("replica %d is already running", i)
	}
	p := c.peers[i]
	rl, err := listenRetry(p.RaftAddr)
	if err != nil {
		return err
	}
	al, err := listenRetry(p.APIAddr[len("http://"):])
	if err != nil {
		rl.Close()
		return err
	}
	node, err := Open(Config{
		ID: p.ID, Dir: c.dirs[i], Listener: rl, Peers: c.peers, Bootstrap: true, Token: chaosToken,
		Logger:           c.logger.With("node", p.ID),
		HeartbeatTimeout: 300 * time.Millisecond,
		ElectionTimeout:  300 * time.Millisecond,
		ApplyTimeout:     3 * time.Second,
	})
	if err != nil {
		rl.Close()
		al.Close()
		return err
	}
	api := node.Handler()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := c.hooks[i].Load(); h != nil {
			(*h)(w, r, api)
			return
		}
		api.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(al)
	c.mu.Lock()
	c.nodes[i], c.srvs[i] = node, srv
	c.mu.Unlock()
	return nil
}

// stop closes replica i. Callers that picked the node before may still be
// using it; they see it go away as a client sees a router die.
func (c *chaosCluster) stop(i int) {
	c.mu.Lock()
	node, srv := c.nodes[i], c.srvs[i]
	c.nodes[i], c.srvs[i] = nil, nil
	c.mu.Unlock()
	if node == nil {
		return
	}
	srv.Close()
	if err := node.Close(); err != nil {
		c.t.Logf("close %s: %v", c.peers[i].ID, err)
	}
}

// node returns replica i, or nil if it is down.
func (c *chaosCluster) node(i int) *Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodes[i]
}

// randomLive returns a running replica chosen at random (nil if none).
func (c *chaosCluster) randomLive(r *rand.Rand) *Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var live []*Node
	for _, n := range c.nodes {
		if n != nil {
			live = append(live, n)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return live[r.IntN(len(live))]
}

// leader returns the index of a running replica that is leader, or -1.
func (c *chaosCluster) leader() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for i, n := range c.nodes {
		if n != nil && n.IsLeader() {
			return i
		}
	}
	return -1
}

func (c *chaosCluster) waitLeader(d time.Duration) int {
	c.t.Helper()
	l := -1
	testenv.WaitFor(c.t, d, "a leader", func() bool { l = c.leader(); return l >= 0 })
	return l
}

// setPolicy registers the dev policy's regions (version 1).
func (c *chaosCluster) setPolicy() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := c.waitLeader(20 * time.Second)
	if err := c.node(l).SetPolicy(ctx, 1, dev.Policy); err != nil {
		c.t.Fatalf("set policy: %v", err)
	}
}

// waitRejoined waits until replica i follows (or is) a leader and has
// re-applied the log it had on disk.
func (c *chaosCluster) waitRejoined(i int, d time.Duration) {
	c.t.Helper()
	testenv.WaitFor(c.t, d, c.peers[i].ID+" to rejoin", func() bool {
		n := c.node(i)
		return n != nil && n.Ready()
	})
}

// chaosRegions are the dev policy's regions.
var chaosRegions = []string{"eu-west", "us-east", "ap-southeast"}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// TestLeaderKillsLoseNoAcknowledgedClaim stops and restarts the leader
// many times under a continuous load of claims and checks that every claim
// that was acknowledged survives on every replica.
func TestLeaderKillsLoseNoAcknowledgedClaim(t *testing.T) {
	kills := 50
	if testing.Short() {
		kills = 10
	}
	c := newChaosCluster(t, 3)
	c.setPolicy()

	type claim struct {
		key    Key
		owner  string
		region string
	}
	var (
		mu       sync.Mutex
		acked    []claim
		unknown  []claim
		refused  []error // definite refusals: there should be none
		seq      atomic.Uint64
		stopLoad = make(chan struct{})
		wg       sync.WaitGroup
	)
	// Stop the writers before the cluster, even if the test fails early.
	stopWriters := sync.OnceFunc(func() { close(stopLoad); wg.Wait() })
	t.Cleanup(stopWriters)
	const writers = 6
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 0xC4A05))
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				id := seq.Add(1)
				var k Key
				k[0], k[1] = 0xC4, 0x05
				for b := range 8 {
					k[8+b] = byte(id >> (8 * b))
				}
				region := chaosRegions[id%3]
				cl := claim{key: k, owner: fmt.Sprintf("%s.chaos-%d", region, id), region: region}
				n := c.randomLive(r)
				if n == nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				err := n.Claim(ctx, []Key{k}, region, cl.owner)
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					acked = append(acked, cl)
				case errors.Is(err, ErrConflict), errors.Is(err, ErrInvalid), errors.Is(err, ErrUnknownRegion):
					refused = append(refused, fmt.Errorf("claim %s: %w", cl.owner, err))
				default:
					unknown = append(unknown, cl)
				}
				mu.Unlock()
			}
		}()
	}

	// Chaos: stop the leader, time how long the others take to elect a
	// new one, restart the old leader, wait for it to rejoin, repeat.
	var elections []time.Duration
	start := time.Now()
	for range kills {
		time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond) // pacing
		l := c.waitLeader(15 * time.Second)
		old := c.peers[l].ID
		t0 := time.Now()
		c.stop(l)
		testenv.WaitFor(t, 15*time.Second, "a new leader after stopping "+old, func() bool {
			for i := range c.peers {
				if n := c.node(i); n != nil {
					if id := n.Leader(); id != "" && id != old {
						return true
					}
				}
			}
			return false
		})
		elections = append(elections, time.Since(t0))
		if err := c.start(l); err != nil {
			t.Fatalf("restart %s: %v", old, err)
		}
		c.waitRejoined(l, 15*time.Second)
	}
	chaosTime := time.Since(start)
	time.Sleep(300 * time.Millisecond) // a little load with everyone up
	stopWriters()

	mu.Lock()
	defer mu.Unlock()
	for _, err := range refused {
		t.Errorf("definite refusal of a claim on a fresh key: %v", err)
	}
	if len(acked) == 0 {
		t.Fatal("no claim was acknowledged")
	}

	// Every acknowledged claim must be on every replica, with its owner.
	missing := func(n *Node) []claim {
		var out []claim
		for _, cl := range acked {
			if e, ok := n.Lookup(cl.key); !ok || e.Owner != OwnerOf(cl.owner) || e.Region != cl.region {
				out = append(out, cl)
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := range c.peers {
		n := c.node(i)
		for {
			m := missing(n)
			if len(m) == 0 {
				break
			}
			if time.Now().After(deadline) {
				e, ok := n.Lookup(m[0].key)
				t.Fatalf("%s: %d of %d acknowledged claims missing or wrong, e.g. %s -> %+v (present %v)",
					c.peers[i].ID, len(m), len(acked), m[0].owner, e, ok)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// A claim with an unknown outcome is either absent or held by its owner.
	unknownApplied := 0
	for _, cl := range unknown {
		for i := range c.peers {
			e, ok := c.node(i).Lookup(cl.key)
			if ok && e.Owner != OwnerOf(cl.owner) {
				t.Errorf("%s: key of %s held by %v", c.peers[i].ID, cl.owner, e.Owner)
			}
			if ok && i == 0 {
				unknownApplied++
			}
		}
	}

	sort.Slice(elections, func(i, j int) bool { return elections[i] < elections[j] })
	t.Logf("%d leader kills in %s; time to new leader: p50 %s, p99 %s, max %s",
		kills, chaosTime.Round(time.Millisecond),
		percentile(elections, 0.50).Round(time.Millisecond),
		percentile(elections, 0.99).Round(time.Millisecond),
		slices.Max(elections).Round(time.Millisecond))
	t.Logf("claims: %d acknowledged (all present with their owner on all 3 replicas), %d unknown outcome (%d of them applied)",
		len(acked), len(unknown), unknownApplied)
}
