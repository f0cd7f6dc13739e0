// Command oidc measures Domicile's OAuth token endpoint (client_credentials
// grant) and token introspection beside Ory Hydra v2.3.0's, in one run on
// one machine, on the same PostgreSQL, with the same wrk settings, and
// prints a markdown table.
//
//	../shared/peers/peers.sh build             # Hydra into /tmp/peers/hydra
//	go run ./bench/oidc                        # about a minute
//	go run ./bench/oidc -duration 5s -hydra ''  # Domicile only
//
// Needs wrk (apt-get install wrk), PostgreSQL (-pg) and Redis (-redis).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/domicile/domicile/internal/wrk"
)

// target is one server under test.
type target struct {
	name string
	// tokenURL and basicAuth: the client_credentials grant.
	tokenURL, basicAuth string
	// introspectURL, its Authorization header (if any) and a live access
	// token to introspect.
	introspectURL, introspectAuth, introspectSample string
	stop                                            func()
}

type row struct {
	target, op string
	res        wrk.Result
}

func main() {
	var (
		hydraBin = flag.String("hydra", "/tmp/peers/hydra/hydra", "Hydra binary (empty: skip Hydra)")
		pgURL    = flag.String("pg", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL server (a database is created per target)")
		redisURL = flag.String("redis", "redis://127.0.0.1:6379/0", "Redis for Domicile's token state")
		dur      = flag.Duration("duration", 10*time.Second, "wrk duration per measurement")
		conns    = flag.Int("connections", 16, "wrk connections")
		threads  = flag.Int("threads", 2, "wrk threads")
	)
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	dir, err := os.MkdirTemp("", "bench-oidc-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	var rows []row
	measure := func(t target) {
		o := wrk.Options{Threads: *threads, Connections: *conns, Duration: *dur}
		cc := filepath.Join(dir, "cc.lua")
		if err := writeScript(cc, "grant_type=client_credentials", t.basicAuth); err != nil {
			log.Fatal(err)
		}
		o.Script = cc
		res, err := wrk.Run(ctx, o, t.tokenURL)
		if err != nil {
			log.Fatalf("%s client_credentials: %v", t.name, err)
		}
		rows = append(rows, row{t.name, "client_credentials grant", res})
		in := filepath.Join(dir, "introspect.lua")
		if err := writeScript(in, "token="+t.introspectSample, t.introspectAuth); err != nil {
			log.Fatal(err)
		}
		o.Script = in
		if res, err = wrk.Run(ctx, o, t.introspectURL); err != nil {
			log.Fatalf("%s introspection: %v", t.name, err)
		}
		rows = append(rows, row{t.name, "introspection", res})
	}

	if *hydraBin != "" {
		h, err := startHydra(ctx, *hydraBin, *pgURL, dir)
		if err != nil {
			log.Fatal(err)
		}
		t, err := h.target(ctx)
		if err != nil {
			h.stop()
			log.Fatal(err)
		}
		measure(t)
		h.stop()
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	t, err := startDomicile(ctx, *pgURL, *redisURL, dir)
	if err != nil {
		log.Fatal(err)
	}
	measure(t)
	t.stop()
	printTable(os.Stdout, rows, *threads, *conns, *dur)
}

// writeScript writes a wrk script that POSTs a form body, with an
// Authorization header if auth is set.
func writeScript(path, body, auth string) error {
	var b strings.Builder
	b.WriteString("wrk.method = \"POST\"\n")
	fmt.Fprintf(&b, "wrk.body = %s\n", strconv.Quote(body))
	b.WriteString("wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n")
	if auth != "" {
		fmt.Fprintf(&b, "wrk.headers[\"Authorization\"] = %s\n", strconv.Quote(auth))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func printTable(w *os.File, rows []row, threads, conns int, d time.Duration) {
	fmt.Fprintf(w, "wrk -t%d -c%d -d%s --latency, one run, this machine, %s; Domicile's per-address rate limit on /oauth2/token is off for the run\n\n", threads, conns, d, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintln(w, "| target | operation | req/s | p50 | p99 | non-2xx | socket errors | × Hydra |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|")
	base := map[string]float64{}
	for _, r := range rows {
		if strings.HasPrefix(r.target, "Ory Hydra") {
			base[r.op] = r.res.RPS
		}
	}
	for _, r := range rows {
		ratio := ""
		if b := base[r.op]; b > 0 {
			ratio = fmt.Sprintf("%.2f", r.res.RPS/b)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %d | %d | %s |\n", r.target, r.op, r.res.RPS,
			r.res.P50.Round(10*time.Microsecond), r.res.P99.Round(10*time.Microsecond), r.res.Non2xx, r.res.SocketErrors.Total(), ratio)
	}
}
