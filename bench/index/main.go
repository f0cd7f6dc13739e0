// Command index measures home-index claim throughput and latency on a
// 3-node Raft cluster on 127.0.0.1 with fsync on (raft-wal), for a range of
// concurrent clients, and prints a table.
//
//	go run ./bench/index -duration 5s -concurrency 1,4,16,64,256
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/homeindex"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each concurrency level runs")
	levels := flag.String("concurrency", "1,4,16,64,256", "comma-separated client counts")
	via := flag.String("via", "node", "node: clients call Node.Claim on every member in turn (followers forward to the leader); leader: clients call the leader's Node.Claim; http: clients use homeindex.Client over the internal HTTP API")
	keysPer := flag.Int("keys", 1, "keys per claim")
	flag.Parse()
	if err := run(*duration, *levels, *via, *keysPer); err != nil {
		fmt.Fprintln(os.Stderr, "bench/index:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, levels, via string, keysPer int) error {
	dir, err := os.MkdirTemp("", "domicile-bench-index-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	const token = "bench-token-0123456789"
	var peers []homeindex.Peer
	var rls, als []net.Listener
	for i := range 3 {
		rl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		al, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		rls, als = append(rls, rl), append(als, al)
		peers = append(peers, homeindex.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: rl.Addr().String(), APIAddr: "http://" + al.Addr().String()})
	}
	var nodes []*homeindex.Node
	var urls []string
	for i := range 3 {
		n, err := homeindex.Open(homeindex.Config{ID: peers[i].ID, Dir: fmt.Sprintf("%s/n%d", dir, i+1), Listener: rls[i], Peers: peers, Bootstrap: true, Token: token, Logger: log})
		if err != nil {
			return err
		}
		defer n.Close()
		srv := &http.Server{Handler: n.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(als[i])
		defer srv.Close()
		nodes = append(nodes, n)
		urls = append(urls, peers[i].APIAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[0].SetPolicy(ctx, 1, dev.Policy); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	var leader *homeindex.Node
	for _, n := range nodes {
		if n.IsLeader() {
			leader = n
		}
	}
	client, err := homeindex.NewClient(urls, token, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	fmt.Printf("home index claims: 3 nodes on 127.0.0.1, raft-boltdb with fsync, %d key(s) per claim, %s per level, via %s (leader %s)\n\n", keysPer, duration, via, leader.ID())
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tclaims/s\tp50\tp99\tmax\terrors\t")
	var serial atomic.Uint64
	for _, f := range strings.Split(levels, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			return fmt.Errorf("-concurrency: %q", f)
		}
		var mu sync.Mutex
		var lat []time.Duration
		var errs atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(duration)
		start := time.Now()
		for w := range c {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := make([]time.Duration, 0, 4096)
				for time.Now().Before(deadline) {
					keys := make([]homeindex.Key, keysPer)
					for i := range keys {
						rand.Read(keys[i][:])
					}
					owner := "bench." + strconv.FormatUint(serial.Add(1), 10)
					t0 := time.Now()
					var err error
					switch via {
					case "http":
						err = client.Claim(context.Background(), keys, "eu-west", owner)
					case "leader":
						err = leader.Claim(context.Background(), keys, "eu-west", owner)
					default:
						err = nodes[w%3].Claim(context.Background(), keys, "eu-west", owner)
					}
					if err != nil {
						errs.Add(1)
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(lat)
		pct := func(p float64) time.Duration {
			if len(lat) == 0 {
				return 0
			}
			return lat[min(len(lat)-1, int(p*float64(len(lat))))]
		}
		var maxLat time.Duration
		if len(lat) > 0 {
			maxLat = lat[len(lat)-1]
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%s\t%s\t%s\t%d\t\n", c, float64(len(lat))/elapsed.Seconds(),
			pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), maxLat.Round(10*time.Microsecond), errs.Load())
	}
	tw.Flush()
	fmt.Printf("\nentries in the leader's replica: %d\n", leader.Len())
	return nil
}
