package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
