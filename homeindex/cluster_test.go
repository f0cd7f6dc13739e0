package homeindex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

const testToken = "test-internal-token"

type testCluster struct {
	nodes   []*Node
	servers []*http.Server
	apis    []string
}

// startCluster runs n replicas on loopback, each with its internal API.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	tc := &testCluster{}
	var peers []Peer
	var raftLns, apiLns []net.Listener
	for i := range n {
		rl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		al, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		raftLns, apiLns = append(raftLns, rl), append(apiLns, al)
		api := "http://" + al.Addr().String()
		tc.apis = append(tc.apis, api)
		peers = append(peers, Peer{ID: fmt.Sprintf("r%d", i+1), RaftAddr: rl.Addr().String(), APIAddr: api})
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	for i := range n {
		node, err := Open(Config{
			ID: peers[i].ID, Dir: t.TempDir(), Listener: raftLns[i], Peers: peers,
			Bootstrap: true, Token: testToken, Logger: logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: node.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(apiLns[i])
		tc.nodes = append(tc.nodes, node)
		tc.servers = append(tc.servers, srv)
	}
	t.Cleanup(func() {
		for i := range tc.nodes {
			tc.stop(i)
		}
	})
	waitFor(t, 10*time.Second, "a leader", func() bool { return tc.nodes[0].Ready() })
	return tc
}

func (tc *testCluster) stop(i int) {
	if tc.servers[i] == nil {
		return
	}
	tc.servers[i].Close()
	tc.nodes[i].Close()
	tc.servers[i] = nil
}

func (tc *testCluster) leader(t *testing.T) int {
	t.Helper()
	for i, n := range tc.nodes {
		if tc.servers[i] != nil && n.IsLeader() {
			return i
		}
	}
	return -1
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func key(b byte) Key { var k Key; k[0] = b; k[15] = b; return k }

func TestClusterClaimReleaseAndForwarding(t *testing.T) {
	tc := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := tc.leader(t)
	follower := (l + 1) % 3

	// A write through a follower is forwarded to the leader and replicated.
	if err := tc.nodes[follower].Claim(ctx, []Key{key(1), key(2)}, "eu-west", "eu-west.u1"); err != nil {
		t.Fatalf("claim via follower: %v", err)
	}
	for i, n := range tc.nodes {
		waitFor(t, 5*time.Second, fmt.Sprintf("replica %d to see the claim", i), func() bool {
			e, ok := n.Lookup(key(2))
			return ok && e == Entry{Region: "eu-west", Owner: "eu-west.u1"}
		})
	}
	// Re-claiming one's own keys is idempotent.
	if err := tc.nodes[l].Claim(ctx, []Key{key(1)}, "eu-west", "eu-west.u1"); err != nil {
		t.Fatalf("idempotent claim: %v", err)
	}
	// All or nothing: key 3 is free but key 2 is held, so nothing changes.
	err := tc.nodes[l].Claim(ctx, []Key{key(3), key(2)}, "us-east", "us-east.u2")
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting claim: got %v, want ErrConflict", err)
	}
	if _, ok := tc.nodes[l].Lookup(key(3)); ok {
		t.Fatal("a refused claim changed the index (half-applied)")
	}
	// Release by someone else changes nothing; by the owner drops the key.
	if err := tc.nodes[follower].Release(ctx, []Key{key(1)}, "us-east.u2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := tc.nodes[l].Lookup(key(1)); !ok {
		t.Fatal("release by a non-owner dropped the key")
	}
	if err := tc.nodes[follower].Release(ctx, []Key{key(1)}, "eu-west.u1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := tc.nodes[l].Lookup(key(1)); ok {
		t.Fatal("release by the owner kept the key")
	}
}

func TestClientFailsOverWhenLeaderDies(t *testing.T) {
	tc := startCluster(t, 3)
	c, err := NewClient(tc.apis, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Claim(ctx, []Key{key(9)}, "ap-southeast", "ap-southeast.a"); err != nil {
		t.Fatal(err)
	}
	old := tc.leader(t)
	tc.stop(old)
	start := time.Now()
	if err := c.Claim(ctx, []Key{key(10)}, "ap-southeast", "ap-southeast.b"); err != nil {
		t.Fatalf("claim after leader loss: %v", err)
	}
	t.Logf("claim succeeded %s after the leader was stopped", time.Since(start).Round(time.Millisecond))
	for i, n := range tc.nodes {
		if i == old {
			continue
		}
		waitFor(t, 5*time.Second, "replication after failover", func() bool {
			_, ok9 := n.Lookup(key(9))
			_, ok10 := n.Lookup(key(10))
			return ok9 && ok10
		})
	}
	e, ok, err := c.Lookup(ctx, key(10))
	if err != nil || !ok || e.Owner != "ap-southeast.b" {
		t.Fatalf("client lookup: %+v %v %v", e, ok, err)
	}
	if _, ok, err := c.Lookup(ctx, key(77)); ok || err != nil {
		t.Fatalf("lookup of a missing key: ok=%v err=%v", ok, err)
	}
}

func TestBadInputIsRefused(t *testing.T) {
	tc := startCluster(t, 1)
	ctx := context.Background()
	n := tc.nodes[0]
	many := make([]Key, MaxKeysPerCommand+1)
	tests := []struct {
		name string
		err  error
	}{
		{"no keys", n.Claim(ctx, nil, "eu-west", "o")},
		{"too many keys", n.Claim(ctx, many, "eu-west", "o")},
		{"bad region", n.Claim(ctx, []Key{key(1)}, "EU WEST", "o")},
		{"no owner", n.Claim(ctx, []Key{key(1)}, "eu-west", "")},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", tt.name, tt.err)
		}
	}
	if n.Len() != 0 {
		t.Fatalf("bad input changed the index: %d entries", n.Len())
	}
	// Wrong token and malformed keys over the API.
	bad, _ := NewClient(tc.apis, "wrong", nil)
	if err := bad.Claim(ctx, []Key{key(1)}, "eu-west", "o"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: got %v", err)
	}
	req, _ := http.NewRequest(http.MethodGet, tc.apis[0]+"/internal/index/lookup/abc", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("short key: got HTTP %d, want 400", resp.StatusCode)
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := newFSM()
	for i := range 100 {
		if err := f.apply(&command{Op: opClaim, Keys: []Key{key(byte(i))}, Region: "eu-west", Owner: fmt.Sprint("o", i)}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(readCloser{sink}); err != nil {
		t.Fatal(err)
	}
	if g.len() != 100 {
		t.Fatalf("restored %d entries, want 100", g.len())
	}
	if e, _ := g.lookup(key(42)); e.Owner != "o42" {
		t.Fatalf("restored entry: %+v", e)
	}
	// A corrupt snapshot is an error and leaves the state alone.
	if err := g.Restore(readCloser{&memSink{buf: []byte(`{"k":"zz"`)}}); err == nil {
		t.Fatal("corrupt snapshot restored without error")
	}
	if g.len() != 100 {
		t.Fatal("corrupt snapshot changed the state")
	}
}
