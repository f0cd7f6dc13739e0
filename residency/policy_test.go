package residency_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/domicile/domicile/residency"
)

// devPolicyPath is the development policy shipped in the repository.
const devPolicyPath = "../deploy/dev/policy.yaml"

// testPolicy exercises every kind of email rule: exact, wildcard, nested
// wildcards (longest suffix wins) and an exact rule inside a wildcard.
const testPolicy = `
version: 7
regions:
  eu-west:      {jurisdiction: EU, countries: [DE, FR, IE]}
  us-east:      {jurisdiction: US, countries: [US, CA]}
  ap-southeast: {jurisdiction: SG, countries: [SG, AU]}
  uk-south:     {jurisdiction: UK, countries: [GB]}
default: us-east
email_domains:
  acme.de: eu-west
  "*.acme.de": ap-southeast
  "*.gov.uk": eu-west
  "*.police.gov.uk": uk-south
  mod.gov.uk: us-east
  Example.SG: ap-southeast
tenants: {acme-corp: uk-south, globex: ap-southeast}
preference: {allowed: true, only_within: [EU, UK]}
transfers: {travel_sessions: allow, analytics_export: deny}
`

func mustParse(t testing.TB, src string) *residency.Policy {
	t.Helper()
	p, err := residency.Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestLoadDevPolicy(t *testing.T) {
	p, err := residency.Load(devPolicyPath)
	if err != nil {
		t.Fatalf("Load(%s): %v", devPolicyPath, err)
	}
	if got := p.Version(); got != 1 {
		t.Errorf("Version() = %d, want 1", got)
	}
	if got, want := p.Regions(), []string{"ap-southeast", "eu-west", "us-east"}; !slices.Equal(got, want) {
		t.Errorf("Regions() = %q, want %q", got, want)
	}
	if got := p.Default(); got != "us-east" {
		t.Errorf("Default() = %q, want us-east", got)
	}
	for region, want := range map[string]string{"eu-west": "EU", "us-east": "US", "ap-southeast": "SG", "nowhere": ""} {
		if got := p.Jurisdiction(region); got != want {
			t.Errorf("Jurisdiction(%q) = %q, want %q", region, got, want)
		}
	}
	tests := []struct {
		facts          residency.Facts
		region, rule   string
		explainContain string
	}{
		{residency.Facts{Email: "jo@acme.de", Country: "US"}, "eu-west", "email_domain:acme.de", "acme.de"},
		{residency.Facts{Email: "jo@hmrc.gov.uk"}, "eu-west", "email_domain:*.gov.uk", "gov.uk"},
		{residency.Facts{Email: "jo@example.sg"}, "ap-southeast", "email_domain:example.sg", "ap-southeast"},
		{residency.Facts{Email: "jo@gmail.com", Country: "SG"}, "ap-southeast", "country:SG", "SG"},
		{residency.Facts{Email: "jo@gmail.com", Country: "JP"}, "ap-southeast", "country:JP", "JP"},
		{residency.Facts{Country: "BE"}, "eu-west", "country:BE", "eu-west"},
		{residency.Facts{Country: "CA"}, "us-east", "country:CA", "us-east"},
		{residency.Facts{Country: "BR"}, "us-east", "default", "default"},
		{residency.Facts{}, "us-east", "default", "us-east"},
	}
	for _, tt := range tests {
		got := p.Evaluate(tt.facts)
		if got.Region != tt.region || got.Rule != tt.rule {
			t.Errorf("Evaluate(%+v) = {%s %s}, want {%s %s}", tt.facts, got.Region, got.Rule, tt.region, tt.rule)
		}
		if !strings.Contains(got.Explanation, tt.explainContain) {
			t.Errorf("Evaluate(%+v).Explanation = %q, want it to contain %q", tt.facts, got.Explanation, tt.explainContain)
		}
	}
}

func TestEvaluate(t *testing.T) {
	p := mustParse(t, testPolicy)
	long := strings.Repeat("a.", 150) + "x.gov.uk" // 308 bytes, longer than any legal domain
	tests := []struct {
		name    string
		facts   residency.Facts
		region  string
		rule    string
		explain string // exact Explanation, if non-empty
	}{
		{"exact domain", residency.Facts{Email: "jo@acme.de"}, "eu-west", "email_domain:acme.de",
			`email domain is acme.de (rule "acme.de"), which policy version 7 maps to region eu-west (jurisdiction EU)`},
		{"exact domain upper-case email", residency.Facts{Email: "Jo@ACME.DE"}, "eu-west", "email_domain:acme.de", ""},
		{"exact rule written in mixed case", residency.Facts{Email: "jo@example.sg"}, "ap-southeast", "email_domain:example.sg", ""},
		{"email beats country", residency.Facts{Email: "jo@acme.de", Country: "SG"}, "eu-west", "email_domain:acme.de", ""},
		{"last @ is the separator", residency.Facts{Email: `"a@b"@acme.de`}, "eu-west", "email_domain:acme.de", ""},
		{"wildcard subdomain", residency.Facts{Email: "jo@sub.acme.de"}, "ap-southeast", "email_domain:*.acme.de", ""},
		{"wildcard mixed case", residency.Facts{Email: "jo@Sub.ACME.de"}, "ap-southeast", "email_domain:*.acme.de", ""},
		{"wildcard one level", residency.Facts{Email: "jo@hmrc.gov.uk"}, "eu-west", "email_domain:*.gov.uk",
			`email domain is a subdomain of gov.uk (rule "*.gov.uk"), which policy version 7 maps to region eu-west (jurisdiction EU)`},
		{"wildcard any depth", residency.Facts{Email: "jo@a.b.c.hmrc.gov.uk"}, "eu-west", "email_domain:*.gov.uk", ""},
		{"wildcard does not match its own domain", residency.Facts{Email: "jo@gov.uk", Country: "SG"}, "ap-southeast", "country:SG", ""},
		{"longest wildcard suffix wins", residency.Facts{Email: "jo@met.police.gov.uk"}, "uk-south", "email_domain:*.police.gov.uk", ""},
		{"longest wildcard suffix wins at depth", residency.Facts{Email: "jo@a.b.met.police.gov.uk"}, "uk-south", "email_domain:*.police.gov.uk", ""},
		{"shorter wildcard covers the longer one's apex", residency.Facts{Email: "jo@police.gov.uk"}, "eu-west", "email_domain:*.gov.uk", ""},
		{"exact beats wildcard", residency.Facts{Email: "jo@mod.gov.uk"}, "us-east", "email_domain:mod.gov.uk", ""},
		{"exact rule does not cover subdomains", residency.Facts{Email: "jo@army.mod.gov.uk"}, "eu-west", "email_domain:*.gov.uk", ""},
		{"label boundary respected", residency.Facts{Email: "jo@notacme.de"}, "us-east", "default", ""},
		{"label boundary respected for wildcard", residency.Facts{Email: "jo@xgov.uk"}, "us-east", "default", ""},
		{"trailing dot is not normalised", residency.Facts{Email: "jo@acme.de."}, "us-east", "default", ""},
		{"over-long domain still matches wildcard", residency.Facts{Email: "jo@" + long}, "eu-west", "email_domain:*.gov.uk", ""},
		{"over-long domain never matches exact", residency.Facts{Email: "jo@" + strings.Repeat("a", 300) + ".acme.de"}, "ap-southeast", "email_domain:*.acme.de", ""},
		{"no @ means no domain", residency.Facts{Email: "acme.de", Country: "DE"}, "eu-west", "country:DE", ""},
		{"empty domain", residency.Facts{Email: "jo@", Country: "FR"}, "eu-west", "country:FR", ""},
		{"country", residency.Facts{Email: "jo@gmail.com", Country: "SG"}, "ap-southeast", "country:SG",
			`client country SG is mapped to region ap-southeast (jurisdiction SG) by policy version 7`},
		{"country lower-case", residency.Facts{Country: "gb"}, "uk-south", "country:GB", ""},
		{"unmapped country", residency.Facts{Country: "BR"}, "us-east", "default", ""},
		{"malformed country", residency.Facts{Country: "SGP"}, "us-east", "default", ""},
		{"non-letter country", residency.Facts{Country: "S@"}, "us-east", "default", ""},
		{"tenant", residency.Facts{Tenant: "globex"}, "ap-southeast", "tenant:globex",
			`tenant globex is assigned to region ap-southeast (jurisdiction SG) by policy version 7`},
		{"tenant beats email and country", residency.Facts{Email: "jo@acme.de", Country: "US", Tenant: "acme-corp"}, "uk-south", "tenant:acme-corp", ""},
		{"unknown tenant falls through", residency.Facts{Email: "jo@acme.de", Tenant: "initech"}, "eu-west", "email_domain:acme.de", ""},
		{"tenant ids are matched exactly", residency.Facts{Country: "SG", Tenant: "ACME-CORP"}, "ap-southeast", "country:SG", ""},
		{"preference honoured", residency.Facts{Email: "jo@example.sg", Tenant: "globex", Preference: "eu-west"}, "eu-west", "preference:eu-west",
			`the user asked for region eu-west (jurisdiction EU), and policy version 7 lets users choose regions in jurisdictions EU, UK`},
		{"preference in second jurisdiction", residency.Facts{Preference: "uk-south"}, "uk-south", "preference:uk-south", ""},
		{"preference outside only_within ignored", residency.Facts{Email: "jo@acme.de", Preference: "us-east"}, "eu-west", "email_domain:acme.de",
			`the user's preference for region us-east was ignored because policy version 7 only lets users choose regions in jurisdictions EU, UK; ` +
				`email domain is acme.de (rule "acme.de"), which policy version 7 maps to region eu-west (jurisdiction EU)`},
		{"ignored preference falls through to tenant", residency.Facts{Tenant: "globex", Preference: "ap-southeast"}, "ap-southeast", "tenant:globex", ""},
		{"unknown preference ignored", residency.Facts{Country: "BR", Preference: "mars-base-1"}, "us-east", "default",
			`the user's preferred region was ignored because it is not a region of policy version 7; ` +
				`no tenant, email-domain or country rule matched, so the default of policy version 7 applies: region us-east (jurisdiction US)`},
		{"preferred regions are matched exactly", residency.Facts{Country: "SG", Preference: "EU-WEST"}, "ap-southeast", "country:SG",
			`the user's preferred region was ignored because it is not a region of policy version 7; ` +
				`client country SG is mapped to region ap-southeast (jurisdiction SG) by policy version 7`},
		{"nothing known", residency.Facts{}, "us-east", "default",
			`no tenant, email-domain or country rule matched, so the default of policy version 7 applies: region us-east (jurisdiction US)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Evaluate(tt.facts)
			if got.Region != tt.region || got.Rule != tt.rule {
				t.Fatalf("Evaluate(%+v) = {Region:%s Rule:%s}, want {Region:%s Rule:%s}",
					tt.facts, got.Region, got.Rule, tt.region, tt.rule)
			}
			if tt.explain != "" && got.Explanation != tt.explain {
				t.Errorf("Explanation = %q, want %q", got.Explanation, tt.explain)
			}
			if got.Explanation == "" {
				t.Error("Explanation is empty")
			}
			if at := strings.LastIndexByte(tt.facts.Email, '@'); at > 1 && strings.Contains(got.Explanation, tt.facts.Email[:at]) {
				local := tt.facts.Email[:at]
				t.Errorf("Explanation %q leaks the email's local part %q", got.Explanation, local)
			}
		})
	}
}

func TestAccessors(t *testing.T) {
	p := mustParse(t, testPolicy)
	if got := p.Version(); got != 7 {
		t.Errorf("Version() = %d, want 7", got)
	}
	want := []string{"ap-southeast", "eu-west", "uk-south", "us-east"}
	regions := p.Regions()
	if !slices.Equal(regions, want) {
		t.Fatalf("Regions() = %q, want %q", regions, want)
	}
	regions[0] = "mutated"
	if got := p.Regions(); !slices.Equal(got, want) {
		t.Errorf("Regions() after mutating a returned slice = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"eu-west", true}, {"uk-south", true}, {"EU-WEST", false}, {"eu", false}, {"", false},
	} {
		if got := p.HasRegion(tt.name); got != tt.want {
			t.Errorf("HasRegion(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestAllowsPreference(t *testing.T) {
	p := mustParse(t, testPolicy)
	dev, err := residency.Load(devPolicyPath)
	if err != nil {
		t.Fatal(err)
	}
	anywhere := mustParse(t, "version: 1\nregions: {a: {jurisdiction: X}, b: {jurisdiction: Y}}\ndefault: a\npreference: {allowed: true}\n")
	disallowed := mustParse(t, "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\npreference: {allowed: false, only_within: [X]}\n")
	tests := []struct {
		name   string
		p      *residency.Policy
		region string
		want   bool
	}{
		{"within EU", p, "eu-west", true},
		{"within UK", p, "uk-south", true},
		{"outside only_within", p, "us-east", false},
		{"unknown region", p, "mars", false},
		{"no preference section", dev, "eu-west", false},
		{"no only_within means any region", anywhere, "b", true},
		{"no only_within, unknown region", anywhere, "c", false},
		{"allowed false", disallowed, "a", false},
	}
	for _, tt := range tests {
		if got := tt.p.AllowsPreference(tt.region); got != tt.want {
			t.Errorf("%s: AllowsPreference(%q) = %v, want %v", tt.name, tt.region, got, tt.want)
		}
	}
}

// TestEvaluatePreferencePolicies covers the preference section's variants:
// absent, not allowed, allowed for any region.
func TestEvaluatePreferencePolicies(t *testing.T) {
	const base = "version: 2\nregions: {a: {jurisdiction: X, countries: [DE]}, b: {jurisdiction: Y}}\ndefault: b\n"
	tests := []struct {
		name, pref        string
		preference        string
		region, rule      string
		explainStartsWith string
	}{
		{"no preference section", "", "a", "b", "default",
			"the user's preference for region a was ignored because policy version 2 does not let users choose their region; no tenant"},
		{"allowed false", "preference: {allowed: false, only_within: [X]}\n", "a", "b", "default",
			"the user's preference for region a was ignored because policy version 2 does not let users choose their region; "},
		{"allowed, any region", "preference: {allowed: true}\n", "a", "a", "preference:a",
			"the user asked for region a (jurisdiction X), and policy version 2 lets users choose any region"},
		{"allowed, empty only_within", "preference: {allowed: true, only_within: []}\n", "b", "b", "preference:b", ""},
		{"allowed within Y", "preference: {allowed: true, only_within: [Y]}\n", "a", "b", "default",
			"the user's preference for region a was ignored because policy version 2 only lets users choose regions in jurisdictions Y; "},
		{"no preference given", "preference: {allowed: true}\n", "", "b", "default", "no tenant, email-domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, base+tt.pref)
			got := p.Evaluate(residency.Facts{Preference: tt.preference})
			if got.Region != tt.region || got.Rule != tt.rule || !strings.HasPrefix(got.Explanation, tt.explainStartsWith) {
				t.Errorf("Evaluate(preference %q) = %+v, want {%s %s %q...}", tt.preference, got, tt.region, tt.rule, tt.explainStartsWith)
			}
			if allowed := tt.preference != "" && p.AllowsPreference(tt.preference); allowed != (got.Rule == "preference:"+tt.preference) {
				t.Errorf("AllowsPreference(%q) = %v disagrees with Evaluate's rule %s", tt.preference, allowed, got.Rule)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{testPolicy, "version 7, 4 regions, 8 countries, 6 email-domain rules, 2 tenant rules, default us-east, preference allowed within [EU UK]"},
		{"version: 1\nregions: {a: {jurisdiction: X, countries: [DE]}}\ndefault: a\nemail_domains: {a.de: a}\ntenants: {t: a}\npreference: {allowed: true}\n",
			"version 1, 1 region, 1 country, 1 email-domain rule, 1 tenant rule, default a, preference allowed for any region"},
		{"version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\n",
			"version 1, 1 region, 0 countries, 0 email-domain rules, 0 tenant rules, default a, preference not allowed"},
	} {
		if got := mustParse(t, tt.src).Summary(); got != tt.want {
			t.Errorf("Summary() = %q, want %q", got, tt.want)
		}
	}
}

func TestTransferAllowed(t *testing.T) {
	p := mustParse(t, testPolicy)
	for kind, want := range map[string]bool{
		"travel_sessions":  true,
		"analytics_export": false,
		"unlisted":         false,
		"":                 false,
	} {
		if got := p.TransferAllowed(kind); got != want {
			t.Errorf("TransferAllowed(%q) = %v, want %v", kind, got, want)
		}
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	const valid = "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\n"
	mustParse(t, valid) // the base of the cases below is fine on its own
	tests := []struct {
		name, src, want string
	}{
		{"empty", "", "empty document"},
		{"only a comment", "# nothing\n", "empty document"},
		{"unknown top-level field", valid + "defaults: a\n", "field defaults not found"},
		{"unknown region field", "version: 1\nregions: {a: {jurisdiction: X, country: [DE]}}\ndefault: a\n", "field country not found"},
		{"unknown preference field", valid + "preference: {allow: true}\n", "field allow not found"},
		{"duplicate key", valid + "version: 2\n", `"version" already defined`},
		{"wrong type", "version: one\nregions: {a: {jurisdiction: X}}\ndefault: a\n", "cannot unmarshal"},
		{"countries not a list", "version: 1\nregions: {a: {jurisdiction: X, countries: DE}}\ndefault: a\n", "cannot unmarshal"},
		{"not a mapping", "- a\n- b\n", "cannot unmarshal"},
		{"bad syntax", "version: 1\nregions: [\n", "parse policy"},
		{"two documents", valid + "---\n" + valid, "more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := residency.Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded (%v), want error containing %q", p, tt.want)
			}
			if p != nil {
				t.Errorf("Parse returned a policy along with error %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			var ve *residency.ValidationError
			if errors.As(err, &ve) {
				t.Errorf("syntax error %v is a *ValidationError", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	const invalidName = `invalid region name %q: must be 1-32 lower-case letters, digits or '-'`
	const badDomain = `invalid domain: want a host name like "example.com" or a wildcard like "*.example.com"`
	const badCountry = `invalid country code %q: must be 2 upper-case letters (ISO 3166-1 alpha-2)`
	pr := func(line int, field, msg string) residency.Problem {
		return residency.Problem{Field: field, Line: line, Message: msg}
	}
	tests := []struct {
		name string
		src  string
		want []residency.Problem
	}{
		{
			name: "unknown region in email domain",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU}}\ndefault: eu-west\nemail_domains: {acme.de: eu-wst}\n",
			want: []residency.Problem{pr(4, `email_domains["acme.de"]`, `unknown region "eu-wst"`)},
		},
		{
			name: "country mapped twice",
			src:  "version: 1\nregions:\n  eu-west: {jurisdiction: EU, countries: [DE]}\n  us-east: {jurisdiction: US, countries: [US, DE]}\ndefault: us-east\n",
			want: []residency.Problem{pr(4, "regions.us-east.countries[1]", `country "DE" is already mapped to eu-west`)},
		},
		{
			name: "country listed twice in one region",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU, countries: [DE, FR, DE]}}\ndefault: eu-west\n",
			want: []residency.Problem{pr(2, "regions.eu-west.countries[2]", `country "DE" is listed twice`)},
		},
		{
			name: "default missing",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU}}\n",
			want: []residency.Problem{pr(0, "default", "required")},
		},
		{
			name: "default unknown",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU}}\ndefault: x\n",
			want: []residency.Problem{pr(3, "default", `unknown region "x"`)},
		},
		{
			name: "version missing",
			src:  "regions: {eu-west: {jurisdiction: EU}}\ndefault: eu-west\n",
			want: []residency.Problem{pr(0, "version", "must be >= 1")},
		},
		{
			name: "version negative",
			src:  "version: -3\nregions: {eu-west: {jurisdiction: EU}}\ndefault: eu-west\n",
			want: []residency.Problem{pr(1, "version", "must be >= 1")},
		},
		{
			name: "no regions",
			src:  "version: 1\ndefault: eu-west\n",
			want: []residency.Problem{
				pr(0, "regions", "at least one region is required"),
				pr(2, "default", `unknown region "eu-west"`),
			},
		},
		{
			name: "empty regions mapping",
			src:  "version: 1\nregions: {}\ndefault: eu-west\n",
			want: []residency.Problem{
				pr(2, "regions", "at least one region is required"),
				pr(3, "default", `unknown region "eu-west"`),
			},
		},
		{
			name: "region names",
			src: "version: 1\nregions:\n  EU: {jurisdiction: EU}\n  eu_west: {jurisdiction: EU}\n  " +
				strings.Repeat("a", 33) + ": {jurisdiction: EU}\n  " + strings.Repeat("b", 32) + ": {jurisdiction: EU}\n  0-ok-: {jurisdiction: EU}\n" +
				"default: 0-ok-\n",
			want: []residency.Problem{
				pr(3, `regions["EU"]`, fmt.Sprintf(invalidName, "EU")),
				pr(5, `regions["`+strings.Repeat("a", 33)+`"]`, fmt.Sprintf(invalidName, strings.Repeat("a", 33))),
				pr(4, `regions["eu_west"]`, fmt.Sprintf(invalidName, "eu_west")),
			},
		},
		{
			name: "jurisdictions",
			src:  "version: 1\nregions: {a: {countries: [DE]}, b: {jurisdiction: eu}, c: {jurisdiction: EU-1}, d: {jurisdiction: EU27}}\ndefault: a\n",
			want: []residency.Problem{
				pr(2, "regions.a.jurisdiction", "required"),
				pr(2, "regions.b.jurisdiction", `invalid jurisdiction "eu": must be 1-16 upper-case letters or digits`),
				pr(2, "regions.c.jurisdiction", `invalid jurisdiction "EU-1": must be 1-16 upper-case letters or digits`),
			},
		},
		{
			name: "country codes",
			src:  "version: 1\nregions: {a: {jurisdiction: X, countries: [de, DEU, D, \"\", D1, ÄÖ, DE]}}\ndefault: a\n",
			want: []residency.Problem{
				pr(2, "regions.a.countries[0]", fmt.Sprintf(badCountry, "de")),
				pr(2, "regions.a.countries[1]", fmt.Sprintf(badCountry, "DEU")),
				pr(2, "regions.a.countries[2]", fmt.Sprintf(badCountry, "D")),
				pr(2, "regions.a.countries[3]", fmt.Sprintf(badCountry, "")),
				pr(2, "regions.a.countries[4]", fmt.Sprintf(badCountry, "D1")),
				pr(2, "regions.a.countries[5]", fmt.Sprintf(badCountry, "ÄÖ")),
			},
		},
		{
			name: "domains",
			src: "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\nemail_domains:\n" +
				"  acme.de: a\n  \"*.uk\": a\n  xn--mnchen-3ya.de: a\n  a-b.c0.io: a\n" + // valid
				"  de: a\n  \"*.\": a\n  \"*\": a\n  \"**.uk\": a\n  \"a.*.uk\": a\n  acme..de: a\n  .acme.de: a\n  acme.de.: a\n" +
				"  -acme.de: a\n  acme-.de: a\n  acme_corp.de: a\n  münchen.de: a\n  \"@acme.de\": a\n  \"acme.de \": a\n" +
				"  " + strings.Repeat("x", 64) + ".de: a\n  " + strings.Repeat("abcdefghi.", 26) + "com: a\n",
			want: []residency.Problem{
				pr(11, `email_domains["*"]`, badDomain),
				pr(12, `email_domains["**.uk"]`, badDomain),
				pr(10, `email_domains["*."]`, badDomain),
				pr(17, `email_domains["-acme.de"]`, badDomain),
				pr(15, `email_domains[".acme.de"]`, badDomain),
				pr(21, `email_domains["@acme.de"]`, badDomain),
				pr(13, `email_domains["a.*.uk"]`, badDomain),
				pr(24, `email_domains["`+strings.Repeat("abcdefghi.", 26)+`com"]`, badDomain),
				pr(18, `email_domains["acme-.de"]`, badDomain),
				pr(14, `email_domains["acme..de"]`, badDomain),
				pr(22, `email_domains["acme.de "]`, badDomain),
				pr(16, `email_domains["acme.de."]`, badDomain),
				pr(19, `email_domains["acme_corp.de"]`, badDomain),
				pr(9, `email_domains["de"]`, badDomain),
				pr(20, `email_domains["münchen.de"]`, badDomain),
				pr(23, `email_domains["`+strings.Repeat("x", 64)+`.de"]`, badDomain),
			},
		},
		{
			name: "domains equal up to case",
			src:  "version: 1\nregions: {a: {jurisdiction: X}, b: {jurisdiction: Y}}\ndefault: a\nemail_domains: {\"*.Gov.UK\": a, \"*.gov.uk\": b, acme.de: a}\n",
			want: []residency.Problem{
				pr(4, `email_domains["*.gov.uk"]`, `same domain as "*.Gov.UK" (domains are case-insensitive)`),
			},
		},
		{
			name: "domain without region",
			src:  "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\nemail_domains: {acme.de: \"\", acme.fr: }\n",
			want: []residency.Problem{
				pr(4, `email_domains["acme.de"]`, "region required"),
				pr(4, `email_domains["acme.fr"]`, "region required"),
			},
		},
		{
			name: "preference and transfers",
			src: "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\npreference: {allowed: true, only_within: [X, Y]}\n" +
				"transfers: {travel_sessions: allow, analytics_export: maybe, Bad: deny, _x: allow, ok_2: deny}\n",
			want: []residency.Problem{
				pr(4, "preference.only_within[1]", `unknown jurisdiction "Y"`),
				pr(5, `transfers["Bad"]`, "invalid name: must be lower-case letters, digits or '_', starting with a letter"),
				pr(5, `transfers["_x"]`, "invalid name: must be lower-case letters, digits or '_', starting with a letter"),
				pr(5, `transfers["analytics_export"]`, `invalid value "maybe": must be allow or deny`),
			},
		},
		{
			name: "tenants",
			src: "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\ntenants:\n" +
				"  acme-corp: a\n  0-x-: a\n  " + strings.Repeat("t", 64) + ": a\n" + // valid
				"  Acme: a\n  acme_corp: a\n  " + strings.Repeat("t", 65) + ": a\n  globex: b\n  initech: \"\"\n  hooli:\n",
			want: []residency.Problem{
				pr(8, `tenants["Acme"]`, `invalid tenant id "Acme": must be 1-64 lower-case letters, digits or '-'`),
				pr(9, `tenants["acme_corp"]`, `invalid tenant id "acme_corp": must be 1-64 lower-case letters, digits or '-'`),
				pr(11, `tenants["globex"]`, `unknown region "b"`),
				pr(13, `tenants["hooli"]`, "region required"),
				pr(12, `tenants["initech"]`, "region required"),
				pr(10, `tenants["`+strings.Repeat("t", 65)+`"]`, fmt.Sprintf(`invalid tenant id %q: must be 1-64 lower-case letters, digits or '-'`, strings.Repeat("t", 65))),
			},
		},
		{
			name: "preference only_within",
			src: "version: 1\nregions: {a: {jurisdiction: EU}, b: {jurisdiction: US}}\ndefault: a\npreference:\n  allowed: true\n  only_within:\n" +
				"    - EU\n    - eu\n    - US\n    - EU\n    - UK\n",
			want: []residency.Problem{
				pr(8, "preference.only_within[1]", `unknown jurisdiction "eu"`),
				pr(10, "preference.only_within[3]", `jurisdiction "EU" is listed twice`),
				pr(11, "preference.only_within[4]", `unknown jurisdiction "UK"`),
			},
		},
		{
			name: "block style: every problem on its own line",
			src: `# a comment
version: 3
regions:
  eu-west:
    jurisdiction: EU
    countries:
      - DE
      - FR
  us-east:
    countries: [US, FR]
default:
  us-wst
email_domains:
  "acme.de":
    eu-wst
tenants:
  acme-corp: ap
`,
			want: []residency.Problem{
				pr(9, "regions.us-east.jurisdiction", "required"),
				pr(10, "regions.us-east.countries[1]", `country "FR" is already mapped to eu-west`),
				pr(12, "default", `unknown region "us-wst"`),
				pr(15, `email_domains["acme.de"]`, `unknown region "eu-wst"`),
				pr(17, `tenants["acme-corp"]`, `unknown region "ap"`),
			},
		},
		{
			// A value that comes through an alias or a merge key is reported
			// where it is written (the anchor); an aliased value where it is used.
			name: "aliases and merge keys",
			src: `version: 1
regions:
  bad: &b {jurisdiction: eu, countries: [DE]}
  other:
    <<: *b
    countries: [FR]
  third: *b
default: other
tenants:
  t1: &r nowhere
  t2: *r
`,
			want: []residency.Problem{
				pr(3, "regions.bad.jurisdiction", `invalid jurisdiction "eu": must be 1-16 upper-case letters or digits`),
				pr(3, "regions.other.jurisdiction", `invalid jurisdiction "eu": must be 1-16 upper-case letters or digits`),
				pr(3, "regions.third.jurisdiction", `invalid jurisdiction "eu": must be 1-16 upper-case letters or digits`),
				pr(3, "regions.third.countries[0]", `country "DE" is already mapped to bad`),
				pr(10, `tenants["t1"]`, `unknown region "nowhere"`),
				pr(11, `tenants["t2"]`, `unknown region "nowhere"`),
			},
		},
		{
			name: "everything at once, in document order",
			src: `
version: 0
regions:
  eu-west: {jurisdiction: EU, countries: [DE, fr, DE]}
  us-east: {jurisdiction: US, countries: [US, DE]}
  "EU West": {jurisdiction: eu, countries: []}
  x: {countries: [DEU]}
default: nowhere
email_domains: {"acme.de": eu-wst, "ACME.de": eu-west, "bad..domain": us-east, "*.gov.uk": "", "*.": us-east}
preference: {allowed: true, only_within: [EU, XX]}
transfers: {analytics_export: maybe}
`,
			want: []residency.Problem{
				pr(2, "version", "must be >= 1"),
				pr(6, `regions["EU West"]`, fmt.Sprintf(invalidName, "EU West")),
				pr(6, `regions["EU West"].jurisdiction`, `invalid jurisdiction "eu": must be 1-16 upper-case letters or digits`),
				pr(4, "regions.eu-west.countries[1]", fmt.Sprintf(badCountry, "fr")),
				pr(4, "regions.eu-west.countries[2]", `country "DE" is listed twice`),
				pr(5, "regions.us-east.countries[1]", `country "DE" is already mapped to eu-west`),
				pr(7, "regions.x.jurisdiction", "required"),
				pr(7, "regions.x.countries[0]", fmt.Sprintf(badCountry, "DEU")),
				pr(8, "default", `unknown region "nowhere"`),
				pr(9, `email_domains["*."]`, badDomain),
				pr(9, `email_domains["*.gov.uk"]`, "region required"),
				pr(9, `email_domains["acme.de"]`, `same domain as "ACME.de" (domains are case-insensitive)`),
				pr(9, `email_domains["acme.de"]`, `unknown region "eu-wst"`),
				pr(9, `email_domains["bad..domain"]`, badDomain),
				pr(10, "preference.only_within[1]", `unknown jurisdiction "XX"`),
				pr(11, `transfers["analytics_export"]`, `invalid value "maybe": must be allow or deny`),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := residency.Parse([]byte(tt.src))
			if p != nil {
				t.Errorf("Parse returned a policy for an invalid document")
			}
			var ve *residency.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse error = %v (%T), want *residency.ValidationError", err, err)
			}
			if !slices.Equal(ve.Problems, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", formatProblems(ve.Problems), formatProblems(tt.want))
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want.String()) {
					t.Errorf("Error() = %q, missing %q", err, want)
				}
			}
		})
	}
}

func TestValidateValidPolicies(t *testing.T) {
	for name, src := range map[string]string{
		"test policy": testPolicy,
		"minimal":     "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\n",
		"region without countries": "version: 2\nregions: {a: {jurisdiction: X, countries: [DE]}, b: {jurisdiction: Y}}\ndefault: b\n" +
			"email_domains: {b.example: b}\n",
	} {
		p, err := residency.Parse([]byte(src))
		if err != nil {
			t.Errorf("%s: Parse: %v", name, err)
			continue
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: Validate after Parse: %v", name, err)
		}
	}
}

func TestValidationErrorString(t *testing.T) {
	tests := []struct {
		problems []residency.Problem
		want     string
	}{
		{
			[]residency.Problem{{Field: "default", Message: "required"}},
			"residency: invalid policy: default: required",
		},
		{
			[]residency.Problem{{Field: "version", Message: "must be >= 1"}, {Field: "default", Message: "required"}},
			"residency: invalid policy: 2 problems: version: must be >= 1; default: required",
		},
		{
			[]residency.Problem{{Field: `email_domains["acme.de"]`, Line: 12, Message: `unknown region "eu-wst"`}, {Field: "default", Message: "required"}},
			`residency: invalid policy: 2 problems: line 12: email_domains["acme.de"]: unknown region "eu-wst"; default: required`,
		},
	}
	for _, tt := range tests {
		err := &residency.ValidationError{Problems: tt.problems}
		if got := err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestProblemString(t *testing.T) {
	for _, tt := range []struct {
		p    residency.Problem
		want string
	}{
		{residency.Problem{Field: `email_domains["acme.de"]`, Line: 12, Message: `unknown region "eu-wst"`},
			`line 12: email_domains["acme.de"]: unknown region "eu-wst"`},
		{residency.Problem{Field: "default", Message: "required"}, "default: required"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

// Validate on a parsed policy has no document to point into, but a parsed
// policy is valid anyway.
func TestValidateAfterParse(t *testing.T) {
	if err := mustParse(t, testPolicy).Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.yaml")
	if _, err := residency.Load(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want os.ErrNotExist", err)
	}

	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("version: 1\nregions: {a: {jurisdiction: X}}\ndefault: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := residency.Load(invalid)
	var ve *residency.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load(invalid) error = %v, want a wrapped *ValidationError", err)
	}
	if !strings.HasPrefix(err.Error(), invalid+": ") {
		t.Errorf("Load(invalid) error %q does not start with the path", err)
	}
	if want := []residency.Problem{{Field: "default", Line: 3, Message: `unknown region "b"`}}; !slices.Equal(ve.Problems, want) {
		t.Errorf("problems = %v, want %v", ve.Problems, want)
	}
}

func formatProblems(ps []residency.Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}
