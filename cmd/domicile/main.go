// Command domicile is the one binary of Domicile: the local topology
// (dev), a router, a regional node, and tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/domicile/domicile/internal/devcluster"
	"github.com/domicile/domicile/internal/launch"
)

// version is set with -ldflags "-X main.version=..."; otherwise the module
// build info is used.
var version = ""

const usage = `domicile — multi-region customer identity with per-user home regions

Usage:
  domicile <command> [flags]

Commands:
  dev       run the local topology: 3 routers + regions eu-west, us-east, ap-southeast
  router    run a router (global edge + home-index replica) from a config file
  region    run a regional node from a config file ("region audit verify" checks its audit log)
  index     inspect the home index (status)
  residency check, explain and diff residency policies; report where data lives
  version   print the version

Run 'domicile <command> --help' for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "dev":
		err = runDev(rest, stdout, stderr)
	case "router":
		err = runRouter(rest, stderr)
	case "region":
		if len(rest) > 0 && rest[0] == "audit" {
			err = runRegionAudit(rest[1:], stdout, stderr)
			break
		}
		err = runRegion(rest, stderr)
	case "index":
		err = runIndex(rest, stdout, stderr)
	case "residency":
		err = runResidency(rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "domicile", versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "domicile: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "domicile %s: %v\n", cmd, err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ error }

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		return v
	}
	return "unknown"
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %q is not debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format: %q is not json or text", format)}
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("domicile "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: domicile %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

const shutdownGrace = 15 * time.Second

func runDev(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", "Runs the local multi-region topology in one process: 3 routers forming a\nRaft cluster for the home index, and regions eu-west, us-east and\nap-southeast, each with its own SQLite database under --data.", stderr)
	data := fs.String("data", "./data", "data directory (SQLite files, Raft logs, secrets)")
	host := fs.String("host", "127.0.0.1", "address to listen on")
	routerPort := fs.Int("router-port", 8080, "HTTP port of router-1 (router-2 and router-3 use the next two)")
	raftPort := fs.Int("raft-port", 7000, "Raft port of router-1 (the others use the next two)")
	regionPort := fs.Int("region-port", 8180, "HTTP port of the first region (the others use the next ones)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	ports := func(base, n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = base + i
		}
		return out
	}
	start := time.Now()
	cfg := devcluster.Config{
		DataDir:     *data,
		Host:        *host,
		RouterPorts: ports(*routerPort, devcluster.Routers),
		RaftPorts:   ports(*raftPort, devcluster.Routers),
		// Regions get consecutive ports in the policy's (sorted) order.
		RegionBasePort: *regionPort,
		Logger:         log,
	}
	c, err := devcluster.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, c.Banner())
	fmt.Fprintf(stdout, "(started in %s)\n", time.Since(start).Round(time.Millisecond))
	<-ctx.Done()
	fmt.Fprintln(stdout, "shutting down...")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	return c.Shutdown(sctx)
}

// loadYAML reads a config file strictly: unknown fields are errors.
func loadYAML(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return usageError{fmt.Errorf("--config: %w", err)}
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// server is a running router or region.
type server interface {
	URL() string
	Shutdown(ctx context.Context) error
}

// runServer is the shared body of `domicile router` and `domicile region`:
// flags, strict config file, structured logs, start, and a graceful stop
// on SIGINT/SIGTERM.
func runServer[C any](name, synopsis string, args []string, stderr io.Writer, start func(ctx context.Context, cfg *C, log *slog.Logger) (server, error)) error {
	fs := newFlags(name, synopsis, stderr)
	config := fs.String("config", "", "path of the "+name+" config file (YAML) (required)")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *config == "" {
		return usageError{errors.New("--config: required")}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	var cfg C
	if err := loadYAML(*config, &cfg); err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	srv, err := start(ctx, &cfg, log)
	if err != nil {
		return err
	}
	log.Info(name+" started", "url", srv.URL())
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	return srv.Shutdown(sctx)
}

func runRouter(args []string, stderr io.Writer) error {
	return runServer("router", "Runs a router: the global edge that resolves each request's home region\nand forwards it, with an embedded replica of the home index.\nSee deploy/examples/router.yaml.", args, stderr,
		func(_ context.Context, cfg *launch.RouterConfig, log *slog.Logger) (server, error) {
			cfg.Logger = log
			return launch.StartRouter(*cfg)
		})
}

func runRegion(args []string, stderr io.Writer) error {
	return runServer("region", "Runs a regional node: the users, credentials and sessions of one region,\nin that region's own database. See deploy/examples/region.yaml.", args, stderr,
		func(ctx context.Context, cfg *launch.RegionConfig, log *slog.Logger) (server, error) {
			cfg.Logger = log
			return launch.StartRegion(ctx, *cfg)
		})
}
