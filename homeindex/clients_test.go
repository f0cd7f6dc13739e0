package homeindex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestClientRegistryFSM: OAuth clients are set, replaced and deleted by log
// commands, survive a snapshot, and a snapshot of the previous format
// (without clients) still restores.
func TestClientRegistryFSM(t *testing.T) {
	f := newFSM()
	apply := func(c *command) error { return f.apply(c, 1) }
	if err := apply(&command{Op: opSetClient, ID: "web-app", Data: []byte(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&command{Op: opSetClient, ID: "cli", Data: []byte(`{"v":2}`)}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&command{Op: opSetClient, ID: "web-app", Data: []byte(`{"v":3}`)}); err != nil {
		t.Fatal(err)
	}
	if d, ok := f.client("web-app"); !ok || string(d) != `{"v":3}` {
		t.Fatalf("client after replace: %q %v", d, ok)
	}
	if ids := f.clientIDs(); !slices.Equal(ids, []string{"cli", "web-app"}) {
		t.Fatalf("client ids: %v", ids)
	}
	for name, c := range map[string]*command{
		"empty id":         {Op: opSetClient, ID: "", Data: []byte("x")},
		"bad id":           {Op: opSetClient, ID: "a b", Data: []byte("x")},
		"long id":          {Op: opSetClient, ID: strings.Repeat("a", MaxClientIDLen+1), Data: []byte("x")},
		"no metadata":      {Op: opSetClient, ID: "a"},
		"huge metadata":    {Op: opSetClient, ID: "a", Data: make([]byte, MaxClientBytes+1)},
		"delete with data": {Op: opDeleteClient, ID: "a", Data: []byte("x")},
		"api on client":    {Op: opSetClient, ID: "a", Data: []byte("x"), API: "http://x"},
	} {
		if err := apply(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, ok := f.client("a"); ok {
		t.Fatal("an invalid command registered a client")
	}

	// The log entry format carries both commands.
	cmds := []*command{{Op: opSetClient, ReqID: 7, ID: "web-app", Data: []byte("meta")}, {Op: opDeleteClient, ID: "cli"}}
	got, err := decodeBatch(encodeBatch(cmds))
	if err != nil || len(got) != 2 || got[0].ID != "web-app" || !bytes.Equal(got[0].Data, []byte("meta")) || got[0].ReqID != 7 || got[1].Op != opDeleteClient || got[1].ID != "cli" {
		t.Fatalf("decode: %+v %v", got, err)
	}

	snapshot := func(version byte) []byte {
		s, err := f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		s.(*fsmSnapshot).version = version
		sink := &memSink{}
		if err := s.Persist(sink); err != nil {
			t.Fatal(err)
		}
		return sink.buf
	}
	g := newFSM()
	if err := g.Restore(readCloser{&memSink{buf: snapshot(0)}}); err != nil {
		t.Fatal(err)
	}
	if ids := g.clientIDs(); !slices.Equal(ids, []string{"cli", "web-app"}) {
		t.Fatalf("client ids after restore: %v", ids)
	}
	old := newFSM()
	if err := old.Restore(readCloser{&memSink{buf: snapshot(snapVersionNoClients)}}); err != nil {
		t.Fatalf("restore of a version-%d snapshot: %v", snapVersionNoClients, err)
	}
	if n := len(old.clientIDs()); n != 0 {
		t.Fatalf("a snapshot without clients restored %d", n)
	}

	if err := apply(&command{Op: opDeleteClient, ID: "cli"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.client("cli"); ok {
		t.Fatal("deleted client still there")
	}
}

// TestClientRegistryOverHTTP registers, reads and deletes clients with the
// index client, and a follower replica serves them too.
func TestClientRegistryOverHTTP(t *testing.T) {
	tc := startCluster(t, 3)
	c, err := NewClient(tc.apis, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.SetClient(ctx, "web-app", []byte(`{"redirect_uris":["https://app.example/cb"]}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetClient(ctx, "bad id", []byte(`{}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
	// Every replica has it once the entry commits there.
	deadline := time.Now().Add(10 * time.Second)
	for i, n := range tc.nodes {
		for {
			if d, ok := n.Client("web-app"); ok && strings.Contains(string(d), "app.example") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d never got the client", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	d, ok, err := c.GetClient(ctx, "web-app")
	if err != nil || !ok || !strings.Contains(string(d), "app.example") {
		t.Fatalf("GetClient: %q %v %v", d, ok, err)
	}
	if ids, err := c.ClientIDs(ctx); err != nil || !slices.Equal(ids, []string{"web-app"}) {
		t.Fatalf("ClientIDs: %v %v", ids, err)
	}
	if _, ok, err := c.GetClient(ctx, "nobody"); ok || err != nil {
		t.Fatalf("GetClient(unknown): %v %v", ok, err)
	}
	if err := c.DeleteClient(ctx, "web-app"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.GetClient(ctx, "web-app"); ok || err != nil {
		// Read from the first replica that answers, which may lag: retry.
		time.Sleep(200 * time.Millisecond)
		if _, ok, err = c.GetClient(ctx, "web-app"); ok || err != nil {
			t.Fatalf("GetClient after delete: %v %v", ok, err)
		}
	}
}

// BenchmarkIsRevoked is the revocation check every router makes on every
// session token it accepts (cached or not), against 100,000 live
// revocations.
func BenchmarkIsRevoked(b *testing.B) {
	f := newFSM()
	f.now = time.Now().UnixMilli()
	for i := range 100_000 {
		if err := f.apply(&command{Op: opRevoke, Keys: []Key{sessionKey(fmt.Sprint("sid-", i))}, Expires: f.now + 3_600_000}, uint32(i+1)); err != nil {
			b.Fatal(err)
		}
	}
	n := &Node{fsm: f}
	sids := make([]string, 1024)
	for i := range sids {
		sids[i] = fmt.Sprint("live-", i) // not revoked: the common case
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if n.IsRevoked(sids[i&1023]) {
			b.Fatal("revoked")
		}
	}
}
