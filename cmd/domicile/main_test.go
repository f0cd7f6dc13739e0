package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/devcluster"
	"github.com/domicile/domicile/internal/launch"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("name: r\nlisen: x\n"), 0o600)
	noPolicy := filepath.Join(dir, "np.yaml")
	os.WriteFile(noPolicy, []byte("name: r\nlisten: 127.0.0.1:0\n"), 0o600)
	tests := []struct {
		args    []string
		code    int
		wantOut string
		wantErr string
	}{
		{[]string{"version"}, 0, "domicile ", ""},
		{[]string{"help"}, 0, "Commands:", ""},
		{nil, 2, "", "Usage:"},
		{[]string{"nope"}, 2, "", `unknown command "nope"`},
		{[]string{"dev", "--help"}, 0, "", "Usage: domicile dev"},
		{[]string{"router", "--help"}, 0, "", "-config string"},
		{[]string{"region", "--help"}, 0, "", "-config string"},
		{[]string{"router"}, 2, "", "--config: required"},
		{[]string{"region", "--config", filepath.Join(dir, "missing.yaml")}, 2, "", "no such file"},
		{[]string{"router", "--config", badYAML}, 1, "", "field lisen not found"},
		{[]string{"router", "--config", noPolicy}, 1, "", "policy: required"},
		{[]string{"dev", "--log-level", "loud"}, 2, "", "--log-level"},
		{[]string{"dev", "extra"}, 2, "", "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, errb.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) || !strings.Contains(errb.String(), tt.wantErr) {
				t.Fatalf("stdout %q / stderr %q; want %q / %q", out.String(), errb.String(), tt.wantOut, tt.wantErr)
			}
		})
	}
}

// The example configs must stay loadable as the config structs change.
func TestExampleConfigsParse(t *testing.T) {
	var rc launch.RouterConfig
	if err := loadYAML("../../deploy/examples/router.yaml", &rc); err != nil {
		t.Fatal(err)
	}
	if rc.Name != "router-1" || len(rc.Index.Peers) != 3 || len(rc.Regions) != 3 {
		t.Fatalf("router example: %+v", rc)
	}
	var gc launch.RegionConfig
	if err := loadYAML("../../deploy/examples/region.yaml", &gc); err != nil {
		t.Fatal(err)
	}
	if gc.Name != "eu-west" || gc.Database.Driver != "postgres" || gc.Sessions.Store != "redis" || len(gc.Index) != 3 {
		t.Fatalf("region example: %+v", gc)
	}
	if _, err := launch.LoadSecrets("../../deploy/secrets.example.json"); err != nil {
		t.Fatal(err)
	}
}

func TestIndexStatus(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := devcluster.Start(ctx, devcluster.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	var out, errb bytes.Buffer
	code := run([]string{"index", "status", "--router", c.RouterURLs()[1], "--secrets", filepath.Join(dir, "secrets.json")}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"replica   router-2", "leader    router-", "entries   0", "policy    version 1", "router-1", "router-3", "Voter"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"index", "status", "--json", "--router", c.RouterURLs()[0], "--secrets", filepath.Join(dir, "secrets.json")}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"members"`) {
		t.Fatalf("--json: exit %d: %s", code, out.String())
	}
	if code := run([]string{"index", "status", "--router", c.RouterURLs()[0], "--secrets", filepath.Join(dir, "nope.json")}, &out, &errb); code != 2 {
		t.Fatalf("missing secrets: exit %d", code)
	}
}

func TestResidencyReport(t *testing.T) {
	var out, errb bytes.Buffer
	if err := runResidencyReport([]string{"--config", "../../deploy/dev", "--data", "/srv/domicile"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"region eu-west (jurisdiction EU", "SQLite file /srv/domicile/eu-west/domicile.db",
		"region ap-southeast", "memory of the us-east node", "home index", "router-3: /srv/domicile/router-3/raft", "never an identifier",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
	// A folder with server configs: the report follows them.
	dir := t.TempDir()
	pol, _ := os.ReadFile("../../deploy/dev/policy.yaml")
	os.WriteFile(filepath.Join(dir, "policy.yaml"), pol, 0o600)
	reg, _ := os.ReadFile("../../deploy/examples/region.yaml")
	os.WriteFile(filepath.Join(dir, "region-eu.yaml"), reg, 0o600)
	out.Reset()
	if err := runResidencyReport([]string{"--config", dir}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"postgres database test at 127.0.0.1:5432", "Redis at 127.0.0.1:6379, keys domicile:eu-west:sess:*", "NO NODE CONFIGURED"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
}
