package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	devdeploy "github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/internal/devcluster"
	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/residency"
)

// runResidencyReport prints, per region, where each kind of data is kept,
// derived from the configuration the servers run with.
func runResidencyReport(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("residency report", "Prints where each kind of data is kept, per region, derived from the\nconfiguration: a folder holding policy.yaml and router*.yaml / region*.yaml\nfiles, or, if it holds no server configs (deploy/dev), the topology\n`domicile dev` runs on --data.", stderr)
	config := fs.String("config", "deploy/dev", "configuration folder")
	data := fs.String("data", "./data", "data directory of `domicile dev` (when the folder has no server configs)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(*config, "policy.yaml"))
	if errors.Is(err, os.ErrNotExist) && *config == "deploy/dev" {
		raw, err = devdeploy.Policy, nil
	}
	if err != nil {
		return usageError{fmt.Errorf("--config: %w", err)}
	}
	pol, err := residency.Parse(raw)
	if err != nil {
		return fmt.Errorf("--config: policy.yaml: %w", err)
	}
	var routers []launch.RouterConfig
	var regions []launch.RegionConfig
	rfiles, _ := filepath.Glob(filepath.Join(*config, "router*.yaml"))
	gfiles, _ := filepath.Glob(filepath.Join(*config, "region*.yaml"))
	for _, f := range rfiles {
		var rc launch.RouterConfig
		if err := loadYAML(f, &rc); err != nil {
			return err
		}
		routers = append(routers, rc)
	}
	for _, f := range gfiles {
		var gc launch.RegionConfig
		if err := loadYAML(f, &gc); err != nil {
			return err
		}
		regions = append(regions, gc)
	}
	if len(rfiles)+len(gfiles) == 0 {
		routers, regions = devcluster.Layout(*data, pol)
	}
	launch.BuildReport(pol, routers, regions).Print(stdout)
	return nil
}
