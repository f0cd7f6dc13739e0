package homeindex

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/testenv"
)

// A router that is not a voter joins at run time, serves local reads and
// forwards writes, and can leave again.
func TestNonVoterJoinsAndLeaves(t *testing.T) {
	tc := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tc.nodes[0].Claim(ctx, []Key{key(50)}, "eu-west", "before"); err != nil {
		t.Fatal(err)
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := "http://" + al.Addr().String()
	n4, err := Open(Config{
		ID: "r4", Dir: t.TempDir(), Listener: rl, Token: testToken, Logger: tc.logger,
		Join: tc.apis, NonVoter: true, APIAddr: api,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: n4.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(al)
	t.Cleanup(func() { srv.Close(); n4.Close() })

	testenv.WaitFor(t, 15*time.Second, "the non-voter to replicate", func() bool {
		e, ok := n4.Lookup(key(50))
		return ok && e.Owner == OwnerOf("before")
	})
	st := tc.nodes[0].Status()
	var found bool
	for _, m := range st.Members {
		if m.ID == "r4" {
			found = true
			if m.Suffrage != "Nonvoter" || m.API != api {
				t.Fatalf("joined member: %+v", m)
			}
		}
	}
	if !found {
		t.Fatalf("r4 not in the configuration: %+v", st.Members)
	}
	// Writes through the non-voter are forwarded to the leader.
	if err := n4.Claim(ctx, []Key{key(51)}, "us-east", "via-r4"); err != nil {
		t.Fatalf("claim via non-voter: %v", err)
	}
	if e, ok, err := tc.nodes[1].LookupLinearizable(ctx, key(51)); err != nil || !ok || e.Region != "us-east" {
		t.Fatalf("after claim via r4: %+v %v %v", e, ok, err)
	}
	// Leave through a follower.
	if err := tc.nodes[(tc.leader(t)+1)%3].Leave(ctx, "r4"); err != nil {
		t.Fatalf("leave: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "r4 to leave the configuration", func() bool {
		for _, m := range tc.nodes[0].Status().Members {
			if m.ID == "r4" {
				return false
			}
		}
		return true
	})
}
