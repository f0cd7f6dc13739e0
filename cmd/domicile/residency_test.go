package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/domicile/domicile/internal/testmmdb"
)

const devPolicy = "../../deploy/dev/policy.yaml"

// residencyFiles writes the policies and the geo-IP database the residency
// command tests use, and returns their paths by name.
func residencyFiles(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"old.yaml": `version: 4
regions:
  eu-west:      {jurisdiction: EU, countries: [DE, FR]}
  us-east:      {jurisdiction: US, countries: [US, CA]}
  ap-southeast: {jurisdiction: SG, countries: [SG]}
default: us-east
email_domains: {acme.de: eu-west, "*.gov.uk": eu-west}
tenants: {acme-corp: eu-west}
preference: {allowed: true, only_within: [EU]}
`,
		"new.yaml": `version: 5
regions:
  eu-west:      {jurisdiction: EU, countries: [DE, FR]}
  us-east:      {jurisdiction: US, countries: [US]}
  ap-southeast: {jurisdiction: SG, countries: [SG, CA]}
default: us-east
email_domains: {acme.de: us-east, "*.gov.uk": eu-west}
tenants: {acme-corp: eu-west, globex: ap-southeast}
preference: {allowed: true, only_within: [EU]}
`,
		"bad.yaml": `version: 2
regions:
  eu-west: {jurisdiction: EU, countries: [DE, FR]}
  us-east: {jurisdiction: US, countries: [US, DE]}
default: us-east
email_domains:
  acme.de: eu-wst
tenants: {Acme: eu-west}
`,
		"syntax.yaml": "version: 1\nregions: [\n",
	}
	paths := map[string]string{}
	for name, body := range files {
		paths[name] = filepath.Join(dir, name)
		if err := os.WriteFile(paths[name], []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	paths["geo.mmdb"] = filepath.Join(dir, "geo.mmdb")
	if err := testmmdb.Write(paths["geo.mmdb"]); err != nil {
		t.Fatal(err)
	}
	paths["missing.yaml"] = filepath.Join(dir, "missing.yaml")
	return paths
}

func TestResidencyCommand(t *testing.T) {
	f := residencyFiles(t)
	bad := f["bad.yaml"]
	tests := []struct {
		name    string
		args    []string
		code    int
		wantOut []string // each must appear in stdout
		wantErr []string // each must appear in stderr
		notOut  []string // none may appear in stdout
	}{
		{name: "no command", args: nil, code: 2, wantErr: []string{"Usage: domicile residency", "a command is required"}},
		{name: "help", args: []string{"help"}, code: 0, wantOut: []string{"Commands:", "check", "explain", "diff"}},
		{name: "unknown command", args: []string{"apply"}, code: 2, wantErr: []string{`unknown command "apply"`}},
		{name: "report", args: []string{"report", "--config", "deploy/dev", "--data", "/srv/d"}, code: 0, wantOut: []string{"region eu-west", "SQLite file /srv/d/eu-west/domicile.db", "home index"}},

		// check
		{name: "check valid", args: []string{"check", devPolicy}, code: 0, wantOut: []string{
			"ok: version 1, 3 regions, 14 countries, 3 email-domain rules, 0 tenant rules, default us-east, preference not allowed\n"}},
		{name: "check with tenants and preference", args: []string{"check", f["old.yaml"]}, code: 0, wantOut: []string{
			"ok: version 4, 3 regions, 5 countries, 2 email-domain rules, 1 tenant rule, default us-east, preference allowed within [EU]\n"}},
		{name: "check invalid", args: []string{"check", bad}, code: 1,
			wantOut: []string{
				bad + `: line 4: regions.us-east.countries[1]: country "DE" is already mapped to eu-west` + "\n",
				bad + `: line 7: email_domains["acme.de"]: unknown region "eu-wst"` + "\n",
				bad + `: line 8: tenants["Acme"]: invalid tenant id "Acme": must be 1-64 lower-case letters, digits or '-'` + "\n",
			},
			wantErr: []string{"domicile residency: " + bad + ": invalid policy: 3 problems\n"},
			notOut:  []string{"ok:"},
		},
		{name: "check syntax error", args: []string{"check", f["syntax.yaml"]}, code: 1, wantErr: []string{"parse policy"}},
		{name: "check missing file", args: []string{"check", f["missing.yaml"]}, code: 1, wantErr: []string{"no such file"}},
		{name: "check without file", args: []string{"check"}, code: 2, wantErr: []string{"want 1 argument(s), policy.yaml; got 0"}},
		{name: "check two files", args: []string{"check", devPolicy, devPolicy}, code: 2, wantErr: []string{"got 2"}},
		{name: "check help", args: []string{"check", "--help"}, code: 0, wantErr: []string{"Usage: domicile residency check"}},

		// explain
		{name: "explain email", args: []string{"explain", "--policy", devPolicy, "--email", "jo.secret@acme.de"}, code: 0,
			wantOut: []string{
				"region       eu-west (jurisdiction EU)\n",
				"rule         email_domain:acme.de\n",
				`explanation  email domain is acme.de (rule "acme.de"), which policy version 1 maps to region eu-west (jurisdiction EU)` + "\n",
				"policy       version 1 (" + devPolicy + ")\n",
				"email        domain acme.de\n",
				"country      (none given)\n",
			},
			notOut: []string{"jo.secret"},
		},
		{name: "explain geo-IP", args: []string{"explain", "--policy", devPolicy, "--email", "jo@gmail.com", "--ip", "203.0.113.9", "--geoip", f["geo.mmdb"]}, code: 0,
			wantOut: []string{
				"region       ap-southeast (jurisdiction SG)\n",
				"rule         country:SG\n",
				`country      SG (geo-IP: 203.0.113.9 in "GeoIP2-Country" database ` + f["geo.mmdb"] + ")\n",
			},
		},
		{name: "explain email beats geo-IP", args: []string{"explain", "--policy", devPolicy, "--email", "x@acme.de", "--ip", "203.0.113.9", "--geoip", f["geo.mmdb"]}, code: 0,
			wantOut: []string{"region       eu-west (jurisdiction EU)\n", "rule         email_domain:acme.de\n"},
		},
		{name: "explain geo-IP miss", args: []string{"explain", "--policy", devPolicy, "--ip", "8.8.8.8", "--geoip", f["geo.mmdb"]}, code: 0,
			wantOut: []string{"region       us-east (jurisdiction US)\n", "rule         default\n", "country      unknown (geo-IP: 8.8.8.8 is not in"},
		},
		{name: "explain country", args: []string{"explain", "--policy", devPolicy, "--country", "jp"}, code: 0,
			wantOut: []string{"region       ap-southeast (jurisdiction SG)\n", "rule         country:JP\n", "country      JP (--country)\n"},
		},
		{name: "explain tenant", args: []string{"explain", "--policy", f["old.yaml"], "--email", "x@gmail.com", "--country", "US", "--tenant", "acme-corp"}, code: 0,
			wantOut: []string{"region       eu-west (jurisdiction EU)\n", "rule         tenant:acme-corp\n",
				"explanation  tenant acme-corp is assigned to region eu-west (jurisdiction EU) by policy version 4\n", "tenant       acme-corp\n"},
		},
		{name: "explain preference honoured", args: []string{"explain", "--policy", f["old.yaml"], "--country", "US", "--prefer", "eu-west"}, code: 0,
			wantOut: []string{"region       eu-west (jurisdiction EU)\n", "rule         preference:eu-west\n", "preference   eu-west\n"},
		},
		{name: "explain preference ignored", args: []string{"explain", "--policy", f["old.yaml"], "--country", "SG", "--prefer", "us-east"}, code: 0,
			wantOut: []string{"region       ap-southeast (jurisdiction SG)\n", "rule         country:SG\n",
				"explanation  the user's preference for region us-east was ignored because policy version 4 only lets users choose regions in jurisdictions EU; client country SG"},
		},
		{name: "explain invalid policy", args: []string{"explain", "--policy", bad, "--country", "DE"}, code: 1,
			wantOut: []string{bad + `: line 7: email_domains["acme.de"]: unknown region "eu-wst"`}, wantErr: []string{"invalid policy: 3 problems"}, notOut: []string{"region       "}},
		{name: "explain without policy", args: []string{"explain", "--email", "x@acme.de"}, code: 2, wantErr: []string{"--policy: required"}},
		{name: "explain ip without geoip", args: []string{"explain", "--policy", devPolicy, "--ip", "203.0.113.9"}, code: 2, wantErr: []string{"--ip needs --geoip"}},
		{name: "explain geoip without ip", args: []string{"explain", "--policy", devPolicy, "--geoip", f["geo.mmdb"]}, code: 2, wantErr: []string{"--geoip needs --ip"}},
		{name: "explain ip and country", args: []string{"explain", "--policy", devPolicy, "--ip", "203.0.113.9", "--geoip", f["geo.mmdb"], "--country", "DE"}, code: 2, wantErr: []string{"not both"}},
		{name: "explain bad ip", args: []string{"explain", "--policy", devPolicy, "--ip", "203.0.113", "--geoip", f["geo.mmdb"]}, code: 2, wantErr: []string{`--ip: "203.0.113" is not an IP address`}},
		{name: "explain bad country", args: []string{"explain", "--policy", devPolicy, "--country", "DEU"}, code: 2, wantErr: []string{"--country"}},
		{name: "explain missing geoip file", args: []string{"explain", "--policy", devPolicy, "--ip", "203.0.113.9", "--geoip", f["missing.yaml"]}, code: 1, wantErr: []string{"open geo-IP database"}},
		{name: "explain extra argument", args: []string{"explain", "--policy", devPolicy, "x@acme.de"}, code: 2, wantErr: []string{"unexpected argument"}},

		// diff
		{name: "diff", args: []string{"diff", f["old.yaml"], f["new.yaml"]}, code: 0, wantOut: []string{
			"policy version 4 -> 5: 3 rules change region for new sign-ups (existing users keep theirs)\n" +
				"  tenant:globex         (no rule: falls through) -> ap-southeast\n" +
				"  email_domain:acme.de  eu-west -> us-east\n" +
				"  country:CA            us-east -> ap-southeast\n",
		}},
		{name: "diff same", args: []string{"diff", devPolicy, devPolicy}, code: 0, wantOut: []string{"policy version 1 -> 1: no rule changes region\n"}},
		{name: "diff invalid", args: []string{"diff", f["old.yaml"], bad}, code: 1,
			wantOut: []string{bad + ": line 4:"}, wantErr: []string{bad + ": invalid policy: 3 problems"}, notOut: []string{"policy version"}},
		{name: "diff both unreadable", args: []string{"diff", f["missing.yaml"], f["syntax.yaml"]}, code: 1, wantErr: []string{"no such file", "parse policy"}},
		{name: "diff one file", args: []string{"diff", devPolicy}, code: 2, wantErr: []string{"want 2 argument(s), old.yaml new.yaml; got 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"residency"}, tt.args...), &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out.String(), errb.String())
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, out.String())
				}
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(errb.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, errb.String())
				}
			}
			for _, not := range tt.notOut {
				if strings.Contains(out.String(), not) {
					t.Errorf("stdout contains %q:\n%s", not, out.String())
				}
			}
		})
	}
}
