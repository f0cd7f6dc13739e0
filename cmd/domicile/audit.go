package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/residency"
)

const auditUsage = `Usage: domicile region audit verify [--config region.yaml | --data ./data --region NAME]

Walks a region's audit log and checks its hash chain: every entry must
follow the one before it, unmodified, with no entry removed or reordered.
Exits 0 if the chain holds, 1 with the first bad entry otherwise.
`

// runRegionAudit is `domicile region audit ...`.
func runRegionAudit(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprint(stderr, auditUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return flag.ErrHelp
		}
		return usageError{errors.New("want: region audit verify")}
	}
	fs := newFlags("region audit verify", "Verifies the hash chain of a region's audit log.", stderr)
	config := fs.String("config", "", "region config file (as for `domicile region`)")
	data := fs.String("data", "", "data dir of `domicile dev` (instead of --config)")
	name := fs.String("region", "", "region, with --data")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var cfg launch.RegionConfig
	switch {
	case *config != "" && *data == "":
		if err := loadYAML(*config, &cfg); err != nil {
			return err
		}
	case *data != "" && *name != "" && *config == "":
		if !residency.ValidRegionName(*name) {
			return usageError{fmt.Errorf("--region: %q is not a region name", *name)}
		}
		cfg = launch.RegionConfig{
			Name:          *name,
			Database:      store.Config{Driver: "sqlite", DSN: filepath.Join(*data, *name, "domicile.db")},
			MasterKeyFile: filepath.Join(*data, *name, "master.key"),
		}
	default:
		return usageError{errors.New("give --config, or --data and --region")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	db, err := launch.OpenRegionStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	start := time.Now()
	n, err := db.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("region %s: audit log: %w (%d entries checked)", cfg.Name, err, n)
	}
	fmt.Fprintf(stdout, "region %s: audit log intact: %d entries, hash chain verified in %s\n", cfg.Name, n, time.Since(start).Round(time.Millisecond))
	return nil
}
