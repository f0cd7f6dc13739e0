package residency_test

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/domicile/domicile/residency"
	"gopkg.in/yaml.v3"
)

// FuzzParse checks that Parse never panics and that whatever it accepts is a
// valid policy whose decisions always name one of its regions.
func FuzzParse(f *testing.F) {
	dev, err := os.ReadFile(devPolicyPath)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(dev),
		testPolicy,
		"version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\n",
		"version: 1\nregions: {a: {jurisdiction: X, countries: [DE]}}\ndefault: a\nemail_domains: {\"*.de\": a}\n",
		"version: 0\nregions: {}\n",
		"version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\n---\nversion: 2\n",
		"version: 1\nregions: {a: &x {jurisdiction: X}, b: *x}\ndefault: a\n",
		"version: 1\nregions: {a: &x {jurisdiction: X, countries: [DE]}, b: {<<: *x, countries: [FR]}}\ndefault: a\n",
		"version: 2\nregions: {a: {jurisdiction: X}, b: {jurisdiction: Y}}\ndefault: a\ntenants: {acme-corp: b, t: a}\n" +
			"preference: {allowed: true, only_within: [Y]}\n",
		"version: 2\nregions: {a: {jurisdiction: X}}\ndefault: a\ntenants: {Bad: a, t: c}\npreference: {only_within: [X, X, Z]}\n",
		"{",
		"- [",
		"\x00\xff",
		"",
	} {
		f.Add([]byte(seed))
	}
	facts := []residency.Facts{
		{},
		{Email: "a@acme.de", Country: "DE"},
		{Email: "x@y.z.gov.uk", Country: "SG"},
		{Email: "nobody", Country: "us"},
		{Email: "x@@", Country: "??"},
		{Tenant: "acme-corp", Preference: "b"},
		{Tenant: "t", Preference: "a", Email: "a@acme.de"},
		{Tenant: "x", Preference: "nowhere", Country: "FR"},
	}
	devPolicy := mustParse(f, string(dev))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := residency.Parse(data)
		if err != nil {
			if p != nil {
				t.Fatalf("Parse returned both a policy and error %v", err)
			}
			var ve *residency.ValidationError
			if errors.As(err, &ve) {
				if len(ve.Problems) == 0 {
					t.Fatal("ValidationError without problems")
				}
				// YAML breaks lines at LF, CR, CRLF, NEL, LS and PS.
				lines := 1
				for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
					lines += bytes.Count(data, []byte(br))
				}
				for _, pr := range ve.Problems {
					if pr.Line < 0 || pr.Line > lines || pr.Field == "" || pr.Message == "" {
						t.Fatalf("problem %+v: line outside 0..%d or empty field/message", pr, lines)
					}
				}
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse accepted a policy that Validate rejects: %v", err)
		}
		if p.Version() < 1 || len(p.Regions()) == 0 || !p.HasRegion(p.Default()) {
			t.Fatalf("accepted policy has version %d, regions %q, default %q", p.Version(), p.Regions(), p.Default())
		}
		regions := p.Regions()
		for _, f := range facts {
			// Every region, and a non-region, as the preference.
			for _, pref := range append(slices.Clone(regions), f.Preference) {
				f.Preference = pref
				d := p.Evaluate(f)
				if !p.HasRegion(d.Region) || d.Rule == "" || d.Explanation == "" {
					t.Fatalf("Evaluate(%+v) = %+v: not a configured region or missing rule/explanation", f, d)
				}
				if honoured := d.Rule == residency.RulePrefixPreference+pref; honoured != p.AllowsPreference(pref) {
					t.Fatalf("Evaluate(%+v) = %+v, but AllowsPreference(%q) = %v", f, d, pref, !honoured)
				}
			}
		}
		if d := p.Evaluate(residency.Facts{}); d.Region != p.Default() || d.Rule != residency.RuleDefault {
			t.Fatalf("Evaluate(no facts) = %+v, want the default %s", d, p.Default())
		}
		_ = p.Summary()
		if d := p.Diff(p); len(d.Changes) != 0 {
			t.Fatalf("Diff with itself: %s", d)
		}
		for _, d := range []residency.Diff{p.Diff(devPolicy), devPolicy.Diff(p)} {
			for _, c := range d.Changes {
				if c.From.Region == c.To.Region || c.Rule == "" || (c.From.Region == "") != (c.From.By == "") || (c.To.Region == "") != (c.To.By == "") {
					t.Fatalf("bad change %+v", c)
				}
			}
			_ = d.String()
		}
	})
}

// FuzzEvaluate compares Evaluate with a slow but obviously correct reference
// implementation of the matching rules.
func FuzzEvaluate(f *testing.F) {
	p := mustParse(f, testPolicy)
	var doc struct {
		Regions map[string]struct {
			Jurisdiction string
			Countries    []string
		}
		Default      string
		EmailDomains map[string]string `yaml:"email_domains"`
		Tenants      map[string]string
		Preference   struct {
			Allowed    bool
			OnlyWithin []string `yaml:"only_within"`
		}
	}
	if err := yaml.Unmarshal([]byte(testPolicy), &doc); err != nil {
		f.Fatal(err)
	}
	countries := make(map[string]string)
	for name, r := range doc.Regions {
		for _, c := range r.Countries {
			countries[c] = name
		}
	}

	// referenceRules applies the rules after the preference.
	referenceRules := func(facts residency.Facts) (region, rule string) {
		if r, ok := doc.Tenants[facts.Tenant]; ok {
			return r, "tenant:" + facts.Tenant
		}
		if at := strings.LastIndex(facts.Email, "@"); at >= 0 {
			domain := asciiLower(facts.Email[at+1:])
			var best, bestRegion string
			for pattern, r := range doc.EmailDomains {
				pattern = asciiLower(pattern)
				if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
					if strings.HasSuffix(domain, "."+suffix) && len(suffix) > len(best) {
						best, bestRegion = suffix, r
					}
				} else if domain == pattern {
					return r, "email_domain:" + pattern
				}
			}
			if best != "" {
				return bestRegion, "email_domain:*." + best
			}
		}
		if r, ok := countries[asciiUpper(facts.Country)]; ok {
			return r, "country:" + asciiUpper(facts.Country)
		}
		return doc.Default, "default"
	}

	// reference returns the region and rule that decide, and whether a
	// preference was given but ignored.
	reference := func(facts residency.Facts) (region, rule string, ignored bool) {
		region, rule = referenceRules(facts)
		if facts.Preference == "" {
			return region, rule, false
		}
		if r, ok := doc.Regions[facts.Preference]; ok && doc.Preference.Allowed &&
			(len(doc.Preference.OnlyWithin) == 0 || slices.Contains(doc.Preference.OnlyWithin, r.Jurisdiction)) {
			return facts.Preference, "preference:" + facts.Preference, false
		}
		return region, rule, true
	}

	for _, seed := range []struct{ email, country, tenant, preference string }{
		{"jo@acme.de", "SG", "", ""},
		{"jo@a.b.acme.de", "", "", ""},
		{"jo@met.police.gov.uk", "US", "", ""},
		{"jo@police.gov.uk", "", "", ""},
		{"jo@gov.uk", "gb", "", ""},
		{"jo@MOD.gov.uk", "", "", ""},
		{"jo@x.mod.gov.uk", "", "", ""},
		{"jo@example.sg", "", "", ""},
		{"a@b@c.gov.uk", "", "", ""},
		{"jo@.gov.uk", "", "", ""},
		{"jo@acme.de.", "FR", "", ""},
		{"@", "S", "", ""},
		{"", "", "", ""},
		{"jo@" + strings.Repeat("x.", 200) + "gov.uk", "", "", ""},
		{"jo@\xffacme.de", "\xff\xff", "", ""},
		{"jo@acme.de", "US", "acme-corp", ""},
		{"jo@acme.de", "", "globex", "eu-west"},
		{"jo@acme.de", "", "", "us-east"},
		{"", "SG", "initech", "uk-south"},
		{"jo@gov.uk", "", "ACME-CORP", "EU-WEST"},
		{"", "", "", "nowhere"},
	} {
		f.Add(seed.email, seed.country, seed.tenant, seed.preference)
	}
	f.Fuzz(func(t *testing.T, email, country, tenant, preference string) {
		facts := residency.Facts{Email: email, Country: country, Tenant: tenant, Preference: preference}
		got := p.Evaluate(facts)
		wantRegion, wantRule, ignored := reference(facts)
		if got.Region != wantRegion || got.Rule != wantRule {
			t.Fatalf("Evaluate(%+v) = {%s %s}, reference says {%s %s}", facts, got.Region, got.Rule, wantRegion, wantRule)
		}
		if !p.HasRegion(got.Region) || got.Explanation == "" {
			t.Fatalf("Evaluate(%+v) = %+v: not a configured region or no explanation", facts, got)
		}
		if ignored {
			// The note names the preferred region only if it is one of the
			// policy's regions; arbitrary input never reaches the explanation.
			want := "the user's preferred region was ignored because it is not a region of policy version 7; "
			if p.HasRegion(preference) {
				want = "the user's preference for region " + preference + " was ignored because "
			}
			if !strings.HasPrefix(got.Explanation, want) {
				t.Fatalf("Evaluate(%+v).Explanation = %q, want prefix %q", facts, got.Explanation, want)
			}
		} else if strings.Contains(got.Explanation, "ignored") {
			t.Fatalf("Evaluate(%+v).Explanation = %q mentions an ignored preference", facts, got.Explanation)
		}
		// Email domains and countries are case-insensitive; tenant ids and
		// regions are not.
		if again := p.Evaluate(residency.Facts{Email: asciiUpper(email), Country: asciiLower(country), Tenant: tenant, Preference: preference}); again != got {
			t.Fatalf("Evaluate is case-sensitive: %+v vs %+v", again, got)
		}
	})
}

func asciiLower(s string) string { return mapASCII(s, 'A', 'Z', 'a'-'A') }
func asciiUpper(s string) string { return mapASCII(s, 'a', 'z', 'A'-'a') }

func mapASCII(s string, lo, hi byte, delta int) string {
	b := []byte(s)
	for i, c := range b {
		if lo <= c && c <= hi {
			b[i] = byte(int(c) + delta)
		}
	}
	return string(b)
}
