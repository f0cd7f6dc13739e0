package homeindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability test drives a 3-replica cluster with concurrent
// Claim / Release / LookupLinearizable calls on a few keys, through random
// live replicas (so most calls are forwarded to the leader), while the
// leader is stopped and restarted repeatedly, and checks the recorded
// history with porcupine.
//
// Unknown outcomes. A call that failed with anything but a definite
// refusal (ErrConflict) — a timeout, ErrNoLeader, a closed node, a
// connection error — may or may not have taken effect. It is kept in the
// history with its output marked unknown and its return time set after
// every other event. The model accepts an unknown call in any state and
// applies its effect as if it had succeeded (a claim only if the keys are
// free or already the caller's). Because the call's interval extends past
// the end of the history, the checker may linearize it anywhere after its
// invocation, including after every completed call, where its effect can
// no longer be observed: that is the "did not happen" case. So the model
// allows both outcomes while staying deterministic.

const (
	linKeys   = 4 // keys 0,1 form group 0; keys 2,3 group 1
	linOwners = 3
)

type linOp uint8

const (
	linClaim linOp = iota
	linRelease
	linLookup
)

type linResult uint8

const (
	linOK       linResult = iota
	linConflict           // definite refusal of a claim
	linUnknown            // outcome unknown: may or may not have happened
)

type linInput struct {
	Op    linOp
	Keys  []int // indices into the key space; all in one group
	Owner int   // claim, release
}

type linOutput struct {
	Res   linResult
	Owner int // lookup: owner index, -1 for absent, linForeign for an unknown owner
}

const linForeign = 99

// linState is the owner index of each key, -1 if free.
type linState [linKeys]int8

func linGroup(k int) int { return k / 2 }

var linOwnerNames = [linOwners]string{"eu-west.lin-a", "us-east.lin-b", "ap-southeast.lin-c"}
var linOwnerRegions = [linOwners]string{"eu-west", "us-east", "ap-southeast"}

func linKey(i int) Key {
	var k Key
	k[0], k[1], k[15] = 0x11, 0x4e, byte(i)
	return k
}

var linModel = porcupine.Model{
	// Every op touches keys of one group only, so the groups are
	// independent histories.
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		parts := make([][]porcupine.Operation, linKeys/2)
		for _, op := range history {
			g := linGroup(op.Input.(linInput).Keys[0])
			parts[g] = append(parts[g], op)
		}
		return parts
	},
	Init: func() any {
		var s linState
		for i := range s {
			s[i] = -1
		}
		return s
	},
	Step: func(state, input, output any) (bool, any) {
		s := state.(linState)
		in, out := input.(linInput), output.(linOutput)
		switch in.Op {
		case linClaim:
			free := true
			for _, k := range in.Keys {
				if s[k] != -1 && int(s[k]) != in.Owner {
					free = false
				}
			}
			switch out.Res {
			case linConflict:
				return !free, s
			case linOK:
				if !free {
					return false, s
				}
			}
			if free { // linOK, or linUnknown taking effect here
				for _, k := range in.Keys {
					s[k] = int8(in.Owner)
				}
			}
			return true, s
		case linRelease:
			if out.Res == linConflict {
				return false, s
			}
			for _, k := range in.Keys {
				if int(s[k]) == in.Owner {
					s[k] = -1
				}
			}
			return true, s
		case linLookup:
			if out.Res == linUnknown {
				return true, s
			}
			return int(s[in.Keys[0]]) == out.Owner, s
		}
		return false, s
	},
	Hash: func(state any) uint64 {
		s := state.(linState)
		var h uint64
		for _, v := range s {
			h = h*31 + uint64(v+1)
		}
		return h
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		res := map[linResult]string{linOK: "ok", linConflict: "conflict", linUnknown: "unknown"}[out.Res]
		switch in.Op {
		case linClaim:
			return fmt.Sprintf("claim(%v, %c) -> %s", in.Keys, 'a'+in.Owner, res)
		case linRelease:
			return fmt.Sprintf("release(%v, %c) -> %s", in.Keys, 'a'+in.Owner, res)
		default:
			if out.Res == linUnknown {
				return fmt.Sprintf("lookup(%d) -> unknown", in.Keys[0])
			}
			return fmt.Sprintf("lookup(%d) -> %s", in.Keys[0], linOwnerString(out.Owner))
		}
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		parts := make([]string, len(s))
		for i, v := range s {
			parts[i] = fmt.Sprintf("%d:%s", i, linOwnerString(int(v)))
		}
		return strings.Join(parts, " ")
	},
}

func linOwnerString(o int) string {
	switch {
	case o == -1:
		return "-"
	case o >= 0 && o < linOwners:
		return string(rune('a' + o))
	}
	return "?"
}

// linRandomInput picks an op on one or two keys of one group.
func linRandomInput(r *rand.Rand) linInput {
	g := r.IntN(linKeys / 2)
	keys := []int{2*g + r.IntN(2)}
	if r.IntN(3) == 0 {
		keys = []int{2 * g, 2*g + 1}
	}
	owner := r.IntN(linOwners)
	switch x := r.IntN(10); {
	case x < 4:
		return linInput{Op: linClaim, Keys: keys, Owner: owner}
	case x < 6:
		return linInput{Op: linRelease, Keys: keys, Owner: owner}
	default:
		return linInput{Op: linLookup, Keys: keys[:1]}
	}
}

// linDo runs one op against n and classifies the result.
func linDo(ctx context.Context, n *Node, in linInput) (linOutput, error) {
	keys := make([]Key, len(in.Keys))
	for i, k := range in.Keys {
		keys[i] = linKey(k)
	}
	switch in.Op {
	case linClaim:
		err := n.Claim(ctx, keys, linOwnerRegions[in.Owner], linOwnerNames[in.Owner])
		switch {
		case err == nil:
			return linOutput{Res: linOK}, nil
		case errors.Is(err, ErrConflict):
			return linOutput{Res: linConflict}, nil
		}
		return linOutput{Res: linUnknown}, err
	case linRelease:
		if err := n.Release(ctx, keys, linOwnerNames[in.Owner]); err != nil {
			return linOutput{Res: linUnknown}, err
		}
		return linOutput{Res: linOK}, nil
	default:
		e, ok, err := n.LookupLinearizable(ctx, keys[0])
		if err != nil {
			return linOutput{Res: linUnknown}, err
		}
		if !ok {
			return linOutput{Res: linOK, Owner: -1}, nil
		}
		for i, name := range linOwnerNames {
			if e.Owner == OwnerOf(name) {
				return linOutput{Res: linOK, Owner: i}, nil
			}
		}
		return linOutput{Res: linOK, Owner: linForeign}, nil
	}
}

func TestLinearizability(t *testing.T) {
	const clients = 5
	kills := 6
	if testing.Short() {
		kills = 3
	}
	if v, err := strconv.Atoi(os.Getenv("HOMEINDEX_LIN_KILLS")); err == nil && v > 0 {
		kills = v // soak runs
	}
	c := newChaosCluster(t, 3)
	c.setPolicy()

	var (
		mu       sync.Mutex
		history  []porcupine.Operation
		unknown  []int // indices into history
		errKinds = map[string]int{}
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	// Stop the clients before the cluster, even if the test fails early.
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopClients)
	start := time.Now()
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(id), uint64(start.UnixNano())))
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := c.randomLive(r)
				if n == nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				in := linRandomInput(r)
				// Short deadlines make some calls give up in the middle of
				// an election: more unknown outcomes for the checker.
				timeout := time.Duration(100+r.IntN(1900)) * time.Millisecond
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				call := time.Since(start).Nanoseconds()
				out, err := linDo(ctx, n, in)
				ret := time.Since(start).Nanoseconds()
				cancel()
				mu.Lock()
				if errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnknownRegion) {
					t.Errorf("%s: a well-formed op was refused: %v", linModel.DescribeOperation(in, out), err)
				}
				if out.Res == linUnknown {
					unknown = append(unknown, len(history))
					errKinds[linErrKind(err)]++
				}
				history = append(history, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}

	// Chaos: stop the leader, restart it a moment later, repeat.
	r := rand.New(rand.NewPCG(1, uint64(start.UnixNano())))
	for range kills {
		time.Sleep(time.Duration(1000+r.IntN(1000)) * time.Millisecond)
		l := c.waitLeader(15 * time.Second)
		c.stop(l)
		time.Sleep(time.Duration(200+r.IntN(600)) * time.Millisecond)
		if err := c.start(l); err != nil {
			t.Fatalf("restart %s: %v", c.peers[l].ID, err)
		}
		c.waitRejoined(l, 15*time.Second)
	}
	time.Sleep(time.Second) // calm period with every replica up
	stopClients()

	// Unknown outcomes return "after everything".
	end := time.Since(start).Nanoseconds() + 1
	for _, i := range unknown {
		history[i].Return = end
	}
	t.Logf("%d ops by %d clients across %d leader kills in %s; %d with an unknown outcome %v",
		len(history), clients, kills, time.Since(start).Round(time.Millisecond), len(unknown), errKinds)

	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, history, 40*time.Second)
	t.Logf("porcupine: %s in %s", res, time.Since(checkStart).Round(time.Millisecond))
	if res != porcupine.Ok {
		dir := t.TempDir()
		if d := os.Getenv("HOMEINDEX_TEST_ARTIFACTS"); d != "" {
			dir = d
		}
		if b, err := json.Marshal(history); err == nil {
			hp := filepath.Join(dir, "linearizability-history.json")
			if err := os.WriteFile(hp, b, 0o600); err == nil {
				t.Logf("history: %s", hp)
			}
		}
		linExplain(t, history, info)
		path := filepath.Join(dir, "linearizability.html")
		if err := porcupine.VisualizePath(linModel, info, path); err != nil {
			t.Logf("visualize: %v", err)
		} else {
			t.Logf("visualization: %s", path)
		}
		t.Fatalf("history is not linearizable: porcupine says %s", res)
	}
}

// linErrKind buckets an error for the summary line.
func linErrKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, ErrNoLeader):
		return "no-leader"
	case err == nil:
		return "nil"
	}
	s := err.Error()
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

// TestLinearizabilityModel checks the model on hand-made histories: it must
// reject a stale read and accept both fates of an unknown outcome.
func TestLinearizabilityModel(t *testing.T) {
	const inf = 1000
	claimA := linInput{Op: linClaim, Keys: []int{0}, Owner: 0}
	claimB := linInput{Op: linClaim, Keys: []int{0, 1}, Owner: 1}
	look := func(k int) linInput { return linInput{Op: linLookup, Keys: []int{k}} }
	op := func(in linInput, call, ret int64, out linOutput) porcupine.Operation {
		return porcupine.Operation{Input: in, Call: call, Output: out, Return: ret}
	}
	tests := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"stale read after an acknowledged claim", []porcupine.Operation{
			op(claimA, 0, 1, linOutput{Res: linOK}),
			op(look(0), 2, 3, linOutput{Owner: -1}),
		}, false},
		{"unknown claim that happened", []porcupine.Operation{
			op(claimA, 0, inf, linOutput{Res: linUnknown}),
			op(look(0), 2, 3, linOutput{Owner: 0}),
		}, true},
		{"unknown claim that did not happen", []porcupine.Operation{
			op(claimA, 0, inf, linOutput{Res: linUnknown}),
			op(look(0), 2, 3, linOutput{Owner: -1}),
		}, true},
		{"unknown claim seen, then unseen", []porcupine.Operation{
			op(claimA, 0, inf, linOutput{Res: linUnknown}),
			op(look(0), 2, 3, linOutput{Owner: 0}),
			op(look(0), 4, 5, linOutput{Owner: -1}),
		}, false},
		{"all or nothing: a conflict leaves the free key free", []porcupine.Operation{
			op(claimA, 0, 1, linOutput{Res: linOK}),
			op(claimB, 2, 3, linOutput{Res: linConflict}),
			op(look(1), 4, 5, linOutput{Owner: 1}),
		}, false},
		{"conflict on a free key", []porcupine.Operation{
			op(claimB, 0, 1, linOutput{Res: linConflict}),
		}, false},
		{"release by the owner frees the key", []porcupine.Operation{
			op(claimA, 0, 1, linOutput{Res: linOK}),
			op(linInput{Op: linRelease, Keys: []int{0}, Owner: 0}, 2, 3, linOutput{Res: linOK}),
			op(claimB, 4, 5, linOutput{Res: linOK}),
			op(look(1), 6, 7, linOutput{Owner: 1}),
		}, true},
		{"release by another owner changes nothing", []porcupine.Operation{
			op(claimA, 0, 1, linOutput{Res: linOK}),
			op(linInput{Op: linRelease, Keys: []int{0}, Owner: 2}, 2, 3, linOutput{Res: linOK}),
			op(look(0), 4, 5, linOutput{Owner: -1}),
		}, false},
	}
	for _, tt := range tests {
		if got := porcupine.CheckOperations(linModel, tt.ops); got != tt.want {
			t.Errorf("%s: linearizable = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// linExplain logs, for each partition that could not be linearized, the
// end of the longest linearizable prefix (with the state it leads to) and
// the operations that were pending right after it: one of them is the
// operation no order could explain.
func linExplain(t *testing.T, history []porcupine.Operation, info porcupine.LinearizationInfo) {
	t.Helper()
	type opID struct {
		client int
		call   int64
	}
	parts := linModel.Partition(history)
	describe := func(op porcupine.Operation) string {
		return fmt.Sprintf("client %d [%.3fs, %.3fs] %s", op.ClientId, float64(op.Call)/1e9, float64(op.Return)/1e9,
			linModel.DescribeOperation(op.Input, op.Output))
	}
	for p, lins := range info.PartialLinearizationsOperations() {
		var longest []porcupine.Operation
		for _, l := range lins {
			if len(l) > len(longest) {
				longest = l
			}
		}
		if p >= len(parts) || len(longest) == len(parts[p]) {
			continue // this partition is linearizable
		}
		state := linModel.Init()
		done := map[opID]bool{}
		var lines []string
		for i, op := range longest {
			_, state = linModel.Step(state, op.Input, op.Output)
			done[opID{op.ClientId, op.Call}] = true
			if i >= len(longest)-10 {
				lines = append(lines, fmt.Sprintf("  #%d %s => %s", i, describe(op), linModel.DescribeState(state)))
			}
		}
		// Pending after the prefix: not linearized, called before the
		// earliest return among the not-linearized ops.
		minRet := int64(1<<63 - 1)
		for _, op := range parts[p] {
			if !done[opID{op.ClientId, op.Call}] {
				minRet = min(minRet, op.Return)
			}
		}
		lines = append(lines, "  pending after it (none can be placed next):")
		for _, op := range parts[p] {
			if !done[opID{op.ClientId, op.Call}] && op.Call <= minRet {
				lines = append(lines, "    "+describe(op))
			}
		}
		t.Logf("partition %d: the longest linearizable prefix has %d of %d ops; its end:\n%s",
			p, len(longest), len(parts[p]), strings.Join(lines, "\n"))
	}
}

// dropFirstReply is a fault for a leader's internal API: the first write
// that reaches it is served (so it commits) but its reply is lost (the
// connection is dropped), and the second write (the caller's retry) is
// held until proceed is closed. applied is closed once the first write
// has been served.
func dropFirstReply(t *testing.T, applied, proceed chan struct{}) *apiHook {
	var writes atomic.Int32
	h := apiHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		switch writes.Add(1) {
		case 1:
			next.ServeHTTP(httptest.NewRecorder(), r)
			close(applied)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			conn.Close()
		case 2:
			<-proceed
			next.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
	return &h
}

// TestRetryAfterLostReplyIsNotAppliedTwice pins down, deterministically,
// the anomaly TestLinearizability finds under leader kills: a write whose
// reply was lost is retried (the caller sees a dropped connection, which
// maps to ErrNoLeader), and the retry is applied a second time although
// the first attempt had committed. With concurrent writes by the same
// owner, that breaks linearizability:
//
//   - release: the retried release also removes a claim that was made and
//     acknowledged after the release had taken effect (an acknowledged
//     claim is lost);
//   - claim: if the key changed hands in between, the retry reports
//     ErrConflict, a definite refusal, for a claim that did take effect.
//
// Both are shown through a follower (forwarded batch) and through the
// HTTP Client that regions use.
func TestRetryAfterLostReplyIsNotAppliedTwice(t *testing.T) {
	c := newChaosCluster(t, 3)
	c.setPolicy()
	l := c.waitLeader(10 * time.Second)
	leader, follower := c.node(l), c.node((l+1)%3)
	client, err := NewClient([]string{c.peers[l].APIAddr}, chaosToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	const region, owner, other = "eu-west", "eu-west.dup", "us-east.other"
	via := []struct {
		name    string
		release func(ctx context.Context, keys []Key, owner string) error
		claim   func(ctx context.Context, keys []Key, region, owner string) error
	}{
		{"follower", follower.Release, follower.Claim},
		{"client", client.Release, client.Claim},
	}
	k := byte(0)
	for _, v := range via {
		t.Run("release/"+v.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			k++
			key := []Key{linKey(100 + int(k))}
			if err := leader.Claim(ctx, key, region, owner); err != nil {
				t.Fatal(err)
			}
			applied, proceed := make(chan struct{}), make(chan struct{})
			c.hooks[l].Store(dropFirstReply(t, applied, proceed))
			defer c.hooks[l].Store(nil)
			done := make(chan error, 1)
			go func() { done <- v.release(ctx, key, owner) }()
			select {
			case <-applied:
			case <-ctx.Done():
				t.Fatal("the release never reached the leader")
			}
			if _, held := leader.Lookup(key[0]); held {
				t.Fatal("the release was served but did not take effect")
			}
			// The release has taken effect; now the owner claims the key
			// again and is acknowledged.
			if err := leader.Claim(ctx, key, region, owner); err != nil {
				t.Fatalf("claim after the release: %v", err)
			}
			close(proceed)
			relErr := <-done
			e, ok, err := leader.LookupLinearizable(ctx, key[0])
			if err != nil {
				t.Fatal(err)
			}
			if !ok || e.Owner != OwnerOf(owner) {
				t.Errorf("a claim acknowledged after the release had taken effect was lost: the release's retry (which returned %v) applied it a second time", relErr)
			}
		})
		t.Run("claim/"+v.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			k++
			key := []Key{linKey(100 + int(k))}
			applied, proceed := make(chan struct{}), make(chan struct{})
			c.hooks[l].Store(dropFirstReply(t, applied, proceed))
			defer c.hooks[l].Store(nil)
			done := make(chan error, 1)
			go func() { done <- v.claim(ctx, key, region, owner) }()
			select {
			case <-applied:
			case <-ctx.Done():
				t.Fatal("the claim never reached the leader")
			}
			if e, held := leader.Lookup(key[0]); !held || e.Owner != OwnerOf(owner) {
				t.Fatal("the claim was served but did not take effect")
			}
			// The claim has taken effect; the owner lets the key go and
			// someone else takes it.
			if err := leader.Release(ctx, key, owner); err != nil {
				t.Fatal(err)
			}
			if err := leader.Claim(ctx, key, region, other); err != nil {
				t.Fatal(err)
			}
			close(proceed)
			if err := <-done; errors.Is(err, ErrConflict) {
				t.Errorf("a claim that took effect (it held the key until its owner released it) was reported as ErrConflict, a definite refusal")
			}
		})
	}
}
