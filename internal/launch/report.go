package launch

import (
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/domicile/domicile/residency"
)

// DataKind is one kind of data a deployment keeps, and where.
type DataKind struct {
	Kind  string // "user accounts", "sessions", ...
	Where string // the store, derived from the configuration
	Holds string // what it contains
	PII   bool
}

// RegionReport says where a region's data lives.
type RegionReport struct {
	Region       string
	Jurisdiction string
	Countries    []string
	Data         []DataKind
}

// Report is the residency report of a deployment: per region, where each
// kind of data is kept; and what the global tier (routers, index) holds.
type Report struct {
	PolicyVersion int
	Regions       []RegionReport
	Global        []DataKind
}

// BuildReport derives the report from the configuration the servers run
// with (the same structs `domicile router`/`region`/`dev` start from).
func BuildReport(pol *residency.Policy, routers []RouterConfig, regions []RegionConfig) Report {
	rep := Report{PolicyVersion: pol.Version()}
	byName := map[string]RegionConfig{}
	for _, r := range regions {
		byName[r.Name] = r
	}
	for _, name := range pol.Regions() {
		rr := RegionReport{Region: name, Jurisdiction: pol.Jurisdiction(name), Countries: pol.Countries(name)}
		cfg, ok := byName[name]
		if !ok {
			rr.Data = []DataKind{{Kind: "everything", Where: "NO NODE CONFIGURED for this region", PII: true}}
			rep.Regions = append(rep.Regions, rr)
			continue
		}
		db := describeDB(cfg)
		rr.Data = []DataKind{
			{Kind: "user accounts", Where: db, Holds: "user id, email, display name, created-at", PII: true},
			{Kind: "credentials", Where: db, Holds: "argon2id password hashes", PII: true},
			{Kind: "sessions", Where: describeSessions(cfg), Holds: "session id → user id, home, expiry (no email, no name)", PII: false},
			{Kind: "node logs", Where: "stderr of the " + name + " node", Holds: "user ids, request ids; no email or password", PII: false},
		}
		rep.Regions = append(rep.Regions, rr)
	}
	var where []string
	for _, r := range routers {
		where = append(where, fmt.Sprintf("%s: %s", r.Name, r.Index.Dir))
	}
	idx := "Raft log + snapshots of every router"
	if len(where) > 0 {
		idx += " (" + strings.Join(where, ", ") + ")"
	}
	rep.Global = []DataKind{
		{Kind: "home index", Where: idx, Holds: "HMAC-SHA256(index key, identifier)[:16] → region, version, 48-bit owner fingerprint; hashed ids of revoked sessions; the residency policy"},
		{Kind: "router logs", Where: "stderr of every router", Holds: "request path, identifier hash, region, resolution source; never an identifier"},
		{Kind: "router memory", Where: "every router", Holds: "the index replica; request bodies only while forwarding (≤16 KiB read to find the identifier), never stored"},
	}
	return rep
}

func describeDB(cfg RegionConfig) string {
	switch cfg.Database.Driver {
	case "sqlite":
		p, _ := filepath.Abs(cfg.Database.DSN)
		return "SQLite file " + p
	case "postgres", "cockroach":
		u, err := url.Parse(cfg.Database.DSN)
		if err != nil {
			return cfg.Database.Driver + " (unparsable DSN)"
		}
		return fmt.Sprintf("%s database %s at %s", cfg.Database.Driver, strings.TrimPrefix(u.Path, "/"), u.Host)
	}
	return "unknown driver " + cfg.Database.Driver
}

func describeSessions(cfg RegionConfig) string {
	if cfg.Sessions.Store == "redis" {
		prefix := cfg.Sessions.Prefix
		if prefix == "" {
			prefix = "domicile:"
		}
		return fmt.Sprintf("Redis at %s, keys %s%s:sess:*", cfg.Sessions.Redis, prefix, cfg.Name)
	}
	return "memory of the " + cfg.Name + " node (lost on restart)"
}

// Print writes the report as text.
func (rep Report) Print(w io.Writer) {
	fmt.Fprintf(w, "Residency report (policy version %d)\n", rep.PolicyVersion)
	for _, r := range rep.Regions {
		cs := append([]string(nil), r.Countries...)
		sort.Strings(cs)
		fmt.Fprintf(w, "\nregion %s (jurisdiction %s; countries %s)\n", r.Region, r.Jurisdiction, strings.Join(cs, " "))
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, d := range r.Data {
			pii := ""
			if d.PII {
				pii = "personal data"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", d.Kind, d.Where, d.Holds, pii)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nglobal tier (no personal data)")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, d := range rep.Global {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", d.Kind, d.Where, d.Holds)
	}
	tw.Flush()
}
