package homeindex

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/testenv"
)

// TestCrashRecoverySIGKILL runs three replicas as real processes, loads
// them with contended claims through the HTTP client, SIGKILLs all three
// in the middle of the load, restarts them on the same directories and
// ports, and checks that every acknowledged claim survived on every
// replica, that no key ended up with two owners, and that the replicas
// agree.
//
// Outcomes. Each key is claimed by two workers (a pair) with different
// owners. A claim that returned nil is acknowledged: its owner must hold
// the key on every replica after the restart, and both claims of a pair
// being acknowledged is a failure. ErrConflict is a definite refusal: that
// owner must not hold the key. Anything else (timeouts, connection
// refused when the processes die, ErrNoLeader) is an unknown outcome: the
// key may be absent or held by that owner, but the replicas must agree.
func TestCrashRecoverySIGKILL(t *testing.T) {
	const token = "crash-internal-token"
	load := 2 * time.Second
	if testing.Short() {
		load = time.Second
	}
	procs := startChildren(t, 3, token)
	bootStart := time.Now()
	waitChildrenReady(t, procs, token, 30*time.Second)
	var apis []string
	for _, p := range procs {
		apis = append(apis, "http://"+p.cfg.APIAddr)
	}
	hc := &http.Client{Timeout: 3 * time.Second}
	probe, err := NewClient(apis, token, hc)
	if err != nil {
		t.Fatal(err)
	}
	// The leader registers the policy; claims work once it is committed.
	testenv.WaitFor(t, 30*time.Second, "a first claim to succeed (policy registered)", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return probe.Claim(ctx, []Key{crashKey(255, 0)}, "eu-west", "eu-west.probe") == nil
	})
	t.Logf("cluster of 3 processes ready in %s", time.Since(bootStart).Round(time.Millisecond))

	const pairs = 4
	type outcome uint8
	const (
		outAcked outcome = iota + 1
		outRefused
		outUnknown
	)
	type attempt struct {
		owner  string
		region string
		out    outcome
		err    error
	}
	var (
		mu       sync.Mutex
		attempts = map[Key]*[2]attempt{}
		order    []Key
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	stopWorkers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopWorkers)
	for w := range 2 * pairs {
		pair, side := w/2, w%2
		// Each worker starts at a different router, so most claims are
		// forwarded to the leader.
		eps := append(append([]string(nil), apis[w%3:]...), apis[:w%3]...)
		cl, err := NewClient(eps, token, hc)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := crashKey(pair, i)
				region := chaosRegions[(pair+i+side)%3]
				a := attempt{owner: fmt.Sprintf("%s.crash-%d-%d-%c", region, pair, i, 'a'+side), region: region}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := cl.Claim(ctx, []Key{k}, region, a.owner)
				cancel()
				switch {
				case err == nil:
					a.out = outAcked
				case errors.Is(err, ErrConflict):
					a.out = outRefused
				default:
					a.out, a.err = outUnknown, err
				}
				mu.Lock()
				slot := attempts[k]
				if slot == nil {
					slot = new([2]attempt)
					attempts[k] = slot
					order = append(order, k)
				}
				slot[side] = a
				mu.Unlock()
			}
		}()
	}

	time.Sleep(load) // let the load run (pacing, not waiting for a condition)
	var kill sync.WaitGroup
	for _, p := range procs {
		kill.Add(1)
		go func() { defer kill.Done(); p.kill() }()
	}
	kill.Wait()
	stopWorkers()

	mu.Lock()
	defer mu.Unlock()
	var acked, refused, unknown, doubles int
	for _, k := range order {
		slot := attempts[k]
		n := 0
		for _, a := range slot {
			switch a.out {
			case outAcked:
				acked++
				n++
			case outRefused:
				refused++
			case outUnknown:
				unknown++
			}
		}
		if n == 2 {
			doubles++
			t.Errorf("key %s: both %s and %s were acknowledged", k, slot[0].owner, slot[1].owner)
		}
	}
	t.Logf("load for %s: %d keys, %d claims acknowledged, %d refused (ErrConflict), %d unknown outcome, then SIGKILL of all 3 processes",
		load, len(order), acked, refused, unknown)
	if acked == 0 {
		t.Fatal("no claim was acknowledged before the kill")
	}

	restartAt := time.Now()
	for _, p := range procs {
		p.start(t)
	}
	waitChildrenReady(t, procs, token, 30*time.Second)
	t.Logf("all 3 processes restarted and report a leader %s after the restart", time.Since(restartAt).Round(time.Millisecond))

	// Read every key from every replica until the replicas agree and hold
	// every acknowledged claim, or the deadline passes.
	clients := make([]*Client, len(apis))
	for i, api := range apis {
		if clients[i], err = NewClient([]string{api}, token, hc); err != nil {
			t.Fatal(err)
		}
	}
	type view struct {
		e  Entry
		ok bool
	}
	readAll := func() ([][]view, error) {
		views := make([][]view, len(clients))
		errs := make([]error, len(clients))
		var rg sync.WaitGroup
		for i, cl := range clients {
			views[i] = make([]view, len(order))
			rg.Add(1)
			go func() {
				defer rg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for j, k := range order {
					e, ok, err := cl.Lookup(ctx, k)
					if err != nil {
						errs[i] = fmt.Errorf("%s: lookup %s: %w", procs[i].cfg.ID, k, err)
						return
					}
					views[i][j] = view{e, ok}
				}
			}()
		}
		rg.Wait()
		return views, errors.Join(errs...)
	}
	check := func(views [][]view) []string {
		var problems []string
		for j, k := range order {
			slot := attempts[k]
			for i := range views {
				v := views[i][j]
				if i > 0 && v != views[0][j] {
					problems = append(problems, fmt.Sprintf("key %s: %s has %+v (present %v), %s has %+v (present %v)",
						k, procs[0].cfg.ID, views[0][j].e, views[0][j].ok, procs[i].cfg.ID, v.e, v.ok))
				}
				for _, a := range slot {
					if a.out == 0 {
						continue
					}
					holds := v.ok && v.e.Owner == OwnerOf(a.owner)
					switch {
					case a.out == outAcked && (!holds || v.e.Region != a.region):
						problems = append(problems, fmt.Sprintf("key %s: acknowledged claim of %s missing or wrong on %s: %+v (present %v)",
							k, a.owner, procs[i].cfg.ID, v.e, v.ok))
					case a.out == outRefused && holds:
						problems = append(problems, fmt.Sprintf("key %s: refused claimant %s holds it on %s", k, a.owner, procs[i].cfg.ID))
					}
				}
				if v.ok && v.e.Owner != OwnerOf(slot[0].owner) && v.e.Owner != OwnerOf(slot[1].owner) {
					problems = append(problems, fmt.Sprintf("key %s: held by a stranger on %s: %+v", k, procs[i].cfg.ID, v.e))
				}
			}
		}
		return problems
	}
	// What the replicas say about themselves as the first read starts:
	// the lookup endpoint answers whether or not the replica has
	// re-applied its log yet.
	var caught []string
	for i, api := range apis {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := childStatus(ctx, api, token)
		cancel()
		caught = append(caught, fmt.Sprintf("%s caught_up=%v (err %v)", procs[i].cfg.ID, s.CaughtUp, err))
	}
	verifyStart := time.Now()
	deadline := verifyStart.Add(30 * time.Second)
	var problems []string
	for round := 0; ; round++ {
		views, err := readAll()
		if err == nil {
			problems = check(views)
			if round == 0 && len(problems) > 0 {
				t.Logf("first read after the restart (%v): %d discrepancies (replicas still catching up), e.g. %s", caught, len(problems), problems[0])
			}
			if len(problems) == 0 {
				present := 0
				for j := range order {
					if views[0][j].ok {
						present++
					}
				}
				t.Logf("verified %d keys on each of 3 replicas in %s: all %d acknowledged claims present with their owner and region, replicas identical, %d keys held, no double ownership",
					len(order), time.Since(verifyStart).Round(time.Millisecond), acked, present)
				return
			}
		} else {
			problems = []string{err.Error()}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-20)
			break
		}
		t.Error(p)
	}
	t.FailNow()
}

// crashKey is the key of iteration i of pair p.
func crashKey(p, i int) Key {
	var k Key
	k[0], k[1], k[2] = 0xCA, 0x5E, byte(p)
	for b := range 4 {
		k[4+b] = byte(i >> (8 * b))
	}
	return k
}
