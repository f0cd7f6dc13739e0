package homeindex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/internal/testenv"
)

const testToken = "test-internal-token"

type testCluster struct {
	nodes   []*Node
	servers []*http.Server
	apis    []string
	dirs    []string
	peers   []Peer
	logger  *slog.Logger
}

// startCluster runs n replicas on loopback, each with its internal API.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	tc := &testCluster{logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
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
		tc.dirs = append(tc.dirs, t.TempDir())
		tc.peers = append(tc.peers, Peer{ID: fmt.Sprintf("r%d", i+1), RaftAddr: rl.Addr().String(), APIAddr: api})
	}
	tc.nodes = make([]*Node, n)
	tc.servers = make([]*http.Server, n)
	for i := range n {
		tc.open(t, i, raftLns[i], apiLns[i])
	}
	t.Cleanup(func() {
		for i := range tc.nodes {
			tc.stop(i)
		}
	})
	testenv.WaitFor(t, 10*time.Second, "a leader", func() bool { return tc.nodes[0].Ready() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.nodes[0].SetPolicy(ctx, 1, dev.Policy); err != nil {
		t.Fatalf("set policy: %v", err)
	}
	return tc
}

func (tc *testCluster) open(t *testing.T, i int, rl, al net.Listener) {
	t.Helper()
	node, err := Open(Config{
		ID: tc.peers[i].ID, Dir: tc.dirs[i], Listener: rl, Peers: tc.peers,
		Bootstrap: true, Token: testToken, Logger: tc.logger,
		TrailingLogs: 64, SnapshotThreshold: 1024,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: node.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(al)
	tc.nodes[i], tc.servers[i] = node, srv
}

// restart reopens a stopped node on its old addresses and data.
func (tc *testCluster) restart(t *testing.T, i int, dir string) {
	t.Helper()
	rl, err := net.Listen("tcp", tc.peers[i].RaftAddr)
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", strings.TrimPrefix(tc.apis[i], "http://"))
	if err != nil {
		t.Fatal(err)
	}
	tc.dirs[i] = dir
	tc.open(t, i, rl, al)
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
		testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("replica %d to see the claim", i), func() bool {
			e, ok := n.Lookup(key(2))
			return ok && e.Region == "eu-west" && e.Owner == OwnerOf("eu-west.u1") && e.Version > 0
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
		testenv.WaitFor(t, 5*time.Second, "replication after failover", func() bool {
			_, ok9 := n.Lookup(key(9))
			_, ok10 := n.Lookup(key(10))
			return ok9 && ok10
		})
	}
	e, ok, err := c.Lookup(ctx, key(10))
	if err != nil || !ok || e.Owner != OwnerOf("ap-southeast.b") || e.Region != "ap-southeast" {
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
		{"bad rehome region", n.Rehome(ctx, []Key{key(1)}, "o", "eu-west", "", 1)},
		{"no policy", n.SetPolicy(ctx, 2, nil)},
		{"policy that does not parse", n.SetPolicy(ctx, 2, []byte("version: 2\nregions: {}\n"))},
		{"policy version mismatch", n.SetPolicy(ctx, 5, dev.Policy)},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", tt.name, tt.err)
		}
	}
	if err := n.Claim(ctx, []Key{key(1)}, "mars-north", "o"); !errors.Is(err, ErrUnknownRegion) {
		t.Errorf("unknown region: got %v", err)
	}
	if err := n.SetPolicy(ctx, 1, dev.Policy); !errors.Is(err, ErrStalePolicy) {
		t.Errorf("same policy version again: got %v", err)
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
	if err := f.setPolicy(1, dev.Policy); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := f.apply(&command{Op: opClaim, Keys: []Key{key(byte(i))}, Region: "eu-west", Owner: OwnerOf(fmt.Sprint("o", i))}, uint32(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	f.now = time.Now().UnixMilli()
	if err := f.apply(&command{Op: opRevoke, Keys: []Key{sessionKey("live")}, Expires: f.now + 60_000}, 200); err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	good := append([]byte(nil), sink.buf...)
	g := newFSM()
	if err := g.Restore(readCloser{sink}); err != nil {
		t.Fatal(err)
	}
	if g.len() != 100 {
		t.Fatalf("restored %d entries, want 100", g.len())
	}
	if e, _ := g.lookup(key(42)); e.Owner != OwnerOf("o42") || e.Region != "eu-west" || e.Version != 43 {
		t.Fatalf("restored entry: %+v", e)
	}
	if _, ok := g.revokedUntil(sessionKey("live")); !ok {
		t.Fatal("revocation lost in the snapshot")
	}
	if v := g.policyNow().Version; v != 1 {
		t.Fatalf("policy version after restore: %d", v)
	}
	// Every way of corrupting the file is an error and leaves the state alone.
	cases := map[string][]byte{
		"empty":       nil,
		"bad magic":   append([]byte("XXXX"), good[4:]...),
		"truncated":   good[:len(good)/2],
		"flipped bit": flip(good, len(good)-40),
		"bad crc":     flip(good, len(good)-1),
		"trailing":    append(append([]byte(nil), good...), 0),
		"json":        []byte(`{"k":"zz"`),
	}
	for name, data := range cases {
		if err := g.Restore(readCloser{&memSink{buf: data}}); !errors.Is(err, errCorruptSnapshot) {
			t.Errorf("%s: restore returned %v, want errCorruptSnapshot", name, err)
		}
		if g.len() != 100 {
			t.Fatalf("%s: a corrupt snapshot changed the state", name)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

func TestCorruptLogEntryIsRefusedWhole(t *testing.T) {
	f := newFSM()
	if err := f.setPolicy(1, dev.Policy); err != nil {
		t.Fatal(err)
	}
	good := encodeBatch([]*command{
		{Op: opClaim, Keys: []Key{key(1)}, Region: "eu-west", Owner: OwnerOf("a")},
		{Op: opClaim, Keys: []Key{key(2)}, Region: "eu-west", Owner: OwnerOf("b")},
	})
	for _, data := range [][]byte{nil, {9}, good[:len(good)-3], append(append([]byte(nil), good...), 1)} {
		if _, ok := f.Apply(&raft.Log{Index: 5, Data: data}).(error); !ok {
			t.Fatalf("corrupt entry %x applied", data)
		}
		if f.len() != 0 {
			t.Fatalf("corrupt entry %x half-applied", data)
		}
	}
	res, ok := f.Apply(&raft.Log{Index: 6, Data: good}).([]error)
	if !ok || len(res) != 2 || res[0] != nil || res[1] != nil || f.len() != 2 {
		t.Fatalf("good entry: %v", res)
	}
	// A batch whose second command conflicts: the first applies, the
	// second is refused whole.
	mixed := encodeBatch([]*command{
		{Op: opClaim, Keys: []Key{key(3)}, Region: "us-east", Owner: OwnerOf("c")},
		{Op: opClaim, Keys: []Key{key(4), key(1)}, Region: "us-east", Owner: OwnerOf("d")},
	})
	res = f.Apply(&raft.Log{Index: 7, Data: mixed}).([]error)
	if res[0] != nil || !errors.Is(res[1], ErrConflict) {
		t.Fatalf("mixed batch: %v", res)
	}
	if _, ok := f.lookup(key(4)); ok {
		t.Fatal("refused claim half-applied")
	}
}

func TestRehomeFencingAndRevocation(t *testing.T) {
	tc := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := tc.nodes[(tc.leader(t)+1)%3]
	keys := []Key{key(20), key(21)}
	if err := n.Claim(ctx, keys, "eu-west", "u"); err != nil {
		t.Fatal(err)
	}
	e, ok, err := n.LookupLinearizable(ctx, keys[0])
	if err != nil || !ok {
		t.Fatalf("linearizable lookup: %v %v", ok, err)
	}
	if err := n.Rehome(ctx, keys, "someone-else", "eu-west", "us-east", e.Version); !errors.Is(err, ErrConflict) {
		t.Fatalf("rehome by a non-owner: %v", err)
	}
	if err := n.Rehome(ctx, keys, "u", "us-east", "eu-west", e.Version); !errors.Is(err, ErrFenced) {
		t.Fatalf("rehome from the wrong region: %v", err)
	}
	if err := n.Rehome(ctx, keys, "u", "eu-west", "us-east", e.Version); err != nil {
		t.Fatalf("rehome: %v", err)
	}
	// The same fence again: the version moved, so it is refused.
	if err := n.Rehome(ctx, keys, "u", "us-east", "ap-southeast", e.Version); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale fence: %v", err)
	}
	got, _, _ := n.LookupLinearizable(ctx, keys[1])
	if got.Region != "us-east" || got.Version <= e.Version {
		t.Fatalf("after rehome: %+v", got)
	}
	if err := n.Revoke(ctx, "sid-1", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for i, node := range tc.nodes {
		testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("revocation on replica %d", i), func() bool { return node.IsRevoked("sid-1") })
		if node.IsRevoked("sid-2") {
			t.Fatal("unrelated session revoked")
		}
	}
}

func TestFollowerCatchesUpFromSnapshot(t *testing.T) {
	tc := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := tc.leader(t)
	lagger := (l + 1) % 3
	laggerDir := tc.dirs[lagger]
	tc.stop(lagger)
	leader := tc.nodes[l]
	const n = 3000
	for i := range n {
		var k Key
		k[0], k[1], k[2] = byte(i), byte(i>>8), 0xAB
		if err := leader.Claim(ctx, []Key{k}, "ap-southeast", fmt.Sprint("u", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Compact the leader's log so the follower can only catch up by snapshot.
	if err := leader.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	tc.restart(t, lagger, laggerDir)
	testenv.WaitFor(t, 30*time.Second, "the restarted follower to catch up", func() bool { return tc.nodes[lagger].Len() == n })
	if st := tc.nodes[lagger].Status(); st.SnapshotIndex == 0 {
		t.Fatalf("follower did not install a snapshot: %+v", st)
	}
}

func TestBadWireInput(t *testing.T) {
	tc := startCluster(t, 1)
	post := func(path, body string) int {
		req, _ := http.NewRequest(http.MethodPost, tc.apis[0]+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	k := strings.Repeat("ab", KeySize)
	big := `{"commands":[` + strings.Repeat(`{"op":"claim","keys":["`+k+`"],"region":"eu-west","owner":1},`, MaxBatch) + `{"op":"claim","keys":["` + k + `"],"region":"eu-west","owner":1}]}`
	tests := []struct {
		name, path, body string
		want             int
	}{
		{"short key", "/internal/index/claim", `{"keys":["abcd"],"region":"eu-west","owner":1}`, 400},
		{"long key", "/internal/index/claim", `{"keys":["` + k + `00"],"region":"eu-west","owner":1}`, 400},
		{"non-hex key", "/internal/index/claim", `{"keys":["` + strings.Repeat("zz", KeySize) + `"],"region":"eu-west","owner":1}`, 400},
		{"unknown region", "/internal/index/claim", `{"keys":["` + k + `"],"region":"mars","owner":1}`, 400},
		{"owner too wide", "/internal/index/claim", `{"keys":["` + k + `"],"region":"eu-west","owner":18446744073709551615}`, 400},
		{"unknown field", "/internal/index/claim", `{"keys":["` + k + `"],"region":"eu-west","owner":1,"x":1}`, 400},
		{"not json", "/internal/index/claim", `claim please`, 400},
		{"unknown op", "/internal/index/explode", `{}`, 404},
		{"oversized batch", "/internal/index/batch", big, 400},
		{"empty batch", "/internal/index/batch", `{"commands":[]}`, 400},
	}
	for _, tt := range tests {
		if got := post(tt.path, tt.body); got != tt.want {
			t.Errorf("%s: HTTP %d, want %d", tt.name, got, tt.want)
		}
	}
	if n := tc.nodes[0].Len(); n != 0 {
		t.Fatalf("bad input changed the index: %d entries", n)
	}
}

// TestCollectors checks the replica's Prometheus metrics: entries, table
// and arena bytes, leadership.
func TestCollectors(t *testing.T) {
	tc := startCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.nodes[0].Claim(ctx, []Key{key(7)}, "eu-west", "eu-west.u7"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tc.nodes[0].Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if m := mf.GetMetric(); len(m) == 1 && m[0].GetGauge() != nil {
			got[mf.GetName()] = m[0].GetGauge().GetValue()
		}
	}
	for name, ok := range map[string]func(float64) bool{
		"domicile_index_entries":     func(v float64) bool { return v == 1 },
		"domicile_index_table_bytes": func(v float64) bool { return v > 0 },
		"domicile_index_arena_bytes": func(v float64) bool { return v >= 0 },
		"domicile_index_leader":      func(v float64) bool { return v == 1 },
	} {
		if v, found := got[name]; !found || !ok(v) {
			t.Errorf("%s = %v (present %v)", name, v, found)
		}
	}
}
