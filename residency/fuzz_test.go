package residency_test

import (
	"os"
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
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := residency.Parse(data)
		if err != nil {
			if p != nil {
				t.Fatalf("Parse returned both a policy and error %v", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse accepted a policy that Validate rejects: %v", err)
		}
		if p.Version() < 1 || len(p.Regions()) == 0 || !p.HasRegion(p.Default()) {
			t.Fatalf("accepted policy has version %d, regions %q, default %q", p.Version(), p.Regions(), p.Default())
		}
		for _, f := range facts {
			d := p.Evaluate(f)
			if !p.HasRegion(d.Region) || d.Rule == "" || d.Explanation == "" {
				t.Fatalf("Evaluate(%+v) = %+v: not a configured region or missing rule/explanation", f, d)
			}
		}
		if d := p.Evaluate(residency.Facts{}); d.Region != p.Default() || d.Rule != residency.RuleDefault {
			t.Fatalf("Evaluate(no facts) = %+v, want the default %s", d, p.Default())
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

	reference := func(facts residency.Facts) (region, rule string) {
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

	for _, seed := range []struct{ email, country string }{
		{"jo@acme.de", "SG"},
		{"jo@a.b.acme.de", ""},
		{"jo@met.police.gov.uk", "US"},
		{"jo@police.gov.uk", ""},
		{"jo@gov.uk", "gb"},
		{"jo@MOD.gov.uk", ""},
		{"jo@x.mod.gov.uk", ""},
		{"jo@example.sg", ""},
		{"a@b@c.gov.uk", ""},
		{"jo@.gov.uk", ""},
		{"jo@acme.de.", "FR"},
		{"@", "S"},
		{"", ""},
		{"jo@" + strings.Repeat("x.", 200) + "gov.uk", ""},
		{"jo@\xffacme.de", "\xff\xff"},
	} {
		f.Add(seed.email, seed.country)
	}
	f.Fuzz(func(t *testing.T, email, country string) {
		facts := residency.Facts{Email: email, Country: country}
		got := p.Evaluate(facts)
		wantRegion, wantRule := reference(facts)
		if got.Region != wantRegion || got.Rule != wantRule {
			t.Fatalf("Evaluate(%q, %q) = {%s %s}, reference says {%s %s}",
				email, country, got.Region, got.Rule, wantRegion, wantRule)
		}
		if !p.HasRegion(got.Region) || got.Explanation == "" {
			t.Fatalf("Evaluate(%q, %q) = %+v: not a configured region or no explanation", email, country, got)
		}
		if again := p.Evaluate(residency.Facts{Email: asciiUpper(email), Country: asciiLower(country)}); again != got {
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
