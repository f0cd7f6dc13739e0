package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/launch"
)

const indexUsage = `Usage: domicile index <command> [flags]

Commands:
  status    print the home index as one router's replica sees it: members,
            leader, last index, entries, bytes per entry, snapshot age
`

func runIndex(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, indexUsage)
		if len(args) == 0 {
			return usageError{errors.New("a command is required")}
		}
		return flag.ErrHelp
	}
	switch args[0] {
	case "status":
		return runIndexStatus(args[1:], stdout, stderr)
	}
	return usageError{fmt.Errorf("unknown index command %q", args[0])}
}

func runIndexStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("index status", "Prints the home index as seen by one router's replica.", stderr)
	router := fs.String("router", "http://127.0.0.1:8080", "base URL of a router")
	secrets := fs.String("secrets", "./data/secrets.json", "secrets file holding the internal API token")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to try")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sec, err := launch.LoadSecrets(*secrets)
	if err != nil {
		return usageError{fmt.Errorf("--secrets: %w", err)}
	}
	c, err := homeindex.NewClient([]string{*router}, sec.InternalToken, nil)
	if err != nil {
		return usageError{fmt.Errorf("--router: %w", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return fmt.Errorf("status from %s: %w", *router, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(w io.Writer, st homeindex.Status) {
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "replica   %s (%s, term %d)\nleader    %s\n", st.ID, st.State, st.Term, leader)
	fmt.Fprintf(w, "log       last %d, commit %d, applied %d, caught up: %v\n", st.LastIndex, st.CommitIndex, st.AppliedIndex, st.CaughtUp)
	fmt.Fprintf(w, "entries   %d (table %s, %.1f bytes/entry)\n", st.Entries, humanBytes(st.TableBytes), st.BytesPerEntry)
	fmt.Fprintf(w, "policy    version %d\nrevoked   %d live session revocations\n", st.PolicyVersion, st.Revocations)
	if st.SnapshotAgeSec < 0 {
		fmt.Fprintln(w, "snapshot  none yet")
	} else {
		fmt.Fprintf(w, "snapshot  index %d, %s ago\n", st.SnapshotIndex, (time.Duration(st.SnapshotAgeSec * float64(time.Second))).Round(time.Second))
	}
	fmt.Fprintln(w, "members")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, m := range st.Members {
		mark := ""
		if m.ID == st.Leader {
			mark = "leader"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", m.ID, m.Suffrage, m.Raft, m.API, mark)
	}
	tw.Flush()
}

func humanBytes(n int) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := int64(n) / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
