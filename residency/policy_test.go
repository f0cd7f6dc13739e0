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
		{"nothing known", residency.Facts{}, "us-east", "default",
			`no email-domain or country rule matched, so the default of policy version 7 applies: region us-east (jurisdiction US)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Evaluate(tt.facts)
			if got.Region != tt.region || got.Rule != tt.rule {
				t.Fatalf("Evaluate(%q, %q) = {Region:%s Rule:%s}, want {Region:%s Rule:%s}",
					tt.facts.Email, tt.facts.Country, got.Region, got.Rule, tt.region, tt.rule)
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
	pr := func(field, msg string) residency.Problem { return residency.Problem{Field: field, Message: msg} }
	tests := []struct {
		name string
		src  string
		want []residency.Problem
	}{
		{
			name: "unknown region in email domain",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU}}\ndefault: eu-west\nemail_domains: {acme.de: eu-wst}\n",
			want: []residency.Problem{pr(`email_domains["acme.de"]`, `unknown region "eu-wst"`)},
		},
		{
			name: "country mapped twice",
			src:  "version: 1\nregions:\n  eu-west: {jurisdiction: EU, countries: [DE]}\n  us-east: {jurisdiction: US, countries: [US, DE]}\ndefault: us-east\n",
			want: []residency.Problem{pr("regions.us-east.countries[1]", `country "DE" is already mapped to eu-west`)},
		},
		{
			name: "country listed twice in one region",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU, countries: [DE, FR, DE]}}\ndefault: eu-west\n",
			want: []residency.Problem{pr("regions.eu-west.countries[2]", `country "DE" is listed twice`)},
		},
		{
			name: "default missing",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU}}\n",
			want: []residency.Problem{pr("default", "required")},
		},
		{
			name: "default unknown",
			src:  "version: 1\nregions: {eu-west: {jurisdiction: EU}}\ndefault: x\n",
			want: []residency.Problem{pr("default", `unknown region "x"`)},
		},
		{
			name: "version missing",
			src:  "regions: {eu-west: {jurisdiction: EU}}\ndefault: eu-west\n",
			want: []residency.Problem{pr("version", "must be >= 1")},
		},
		{
			name: "version negative",
			src:  "version: -3\nregions: {eu-west: {jurisdiction: EU}}\ndefault: eu-west\n",
			want: []residency.Problem{pr("version", "must be >= 1")},
		},
		{
			name: "no regions",
			src:  "version: 1\ndefault: eu-west\n",
			want: []residency.Problem{
				pr("regions", "at least one region is required"),
				pr("default", `unknown region "eu-west"`),
			},
		},
		{
			name: "empty regions mapping",
			src:  "version: 1\nregions: {}\ndefault: eu-west\n",
			want: []residency.Problem{
				pr("regions", "at least one region is required"),
				pr("default", `unknown region "eu-west"`),
			},
		},
		{
			name: "region names",
			src: "version: 1\nregions:\n  EU: {jurisdiction: EU}\n  eu_west: {jurisdiction: EU}\n  " +
				strings.Repeat("a", 33) + ": {jurisdiction: EU}\n  " + strings.Repeat("b", 32) + ": {jurisdiction: EU}\n  0-ok-: {jurisdiction: EU}\n" +
				"default: 0-ok-\n",
			want: []residency.Problem{
				pr(`regions["EU"]`, fmt.Sprintf(invalidName, "EU")),
				pr(`regions["`+strings.Repeat("a", 33)+`"]`, fmt.Sprintf(invalidName, strings.Repeat("a", 33))),
				pr(`regions["eu_west"]`, fmt.Sprintf(invalidName, "eu_west")),
			},
		},
		{
			name: "jurisdictions",
			src:  "version: 1\nregions: {a: {countries: [DE]}, b: {jurisdiction: eu}, c: {jurisdiction: EU-1}, d: {jurisdiction: EU27}}\ndefault: a\n",
			want: []residency.Problem{
				pr("regions.a.jurisdiction", "required"),
				pr("regions.b.jurisdiction", `invalid jurisdiction "eu": must be 1-16 upper-case letters or digits`),
				pr("regions.c.jurisdiction", `invalid jurisdiction "EU-1": must be 1-16 upper-case letters or digits`),
			},
		},
		{
			name: "country codes",
			src:  "version: 1\nregions: {a: {jurisdiction: X, countries: [de, DEU, D, \"\", D1, ÄÖ, DE]}}\ndefault: a\n",
			want: []residency.Problem{
				pr("regions.a.countries[0]", fmt.Sprintf(badCountry, "de")),
				pr("regions.a.countries[1]", fmt.Sprintf(badCountry, "DEU")),
				pr("regions.a.countries[2]", fmt.Sprintf(badCountry, "D")),
				pr("regions.a.countries[3]", fmt.Sprintf(badCountry, "")),
				pr("regions.a.countries[4]", fmt.Sprintf(badCountry, "D1")),
				pr("regions.a.countries[5]", fmt.Sprintf(badCountry, "ÄÖ")),
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
				pr(`email_domains["*"]`, badDomain),
				pr(`email_domains["**.uk"]`, badDomain),
				pr(`email_domains["*."]`, badDomain),
				pr(`email_domains["-acme.de"]`, badDomain),
				pr(`email_domains[".acme.de"]`, badDomain),
				pr(`email_domains["@acme.de"]`, badDomain),
				pr(`email_domains["a.*.uk"]`, badDomain),
				pr(`email_domains["`+strings.Repeat("abcdefghi.", 26)+`com"]`, badDomain),
				pr(`email_domains["acme-.de"]`, badDomain),
				pr(`email_domains["acme..de"]`, badDomain),
				pr(`email_domains["acme.de "]`, badDomain),
				pr(`email_domains["acme.de."]`, badDomain),
				pr(`email_domains["acme_corp.de"]`, badDomain),
				pr(`email_domains["de"]`, badDomain),
				pr(`email_domains["münchen.de"]`, badDomain),
				pr(`email_domains["`+strings.Repeat("x", 64)+`.de"]`, badDomain),
			},
		},
		{
			name: "domains equal up to case",
			src:  "version: 1\nregions: {a: {jurisdiction: X}, b: {jurisdiction: Y}}\ndefault: a\nemail_domains: {\"*.Gov.UK\": a, \"*.gov.uk\": b, acme.de: a}\n",
			want: []residency.Problem{
				pr(`email_domains["*.gov.uk"]`, `same domain as "*.Gov.UK" (domains are case-insensitive)`),
			},
		},
		{
			name: "domain without region",
			src:  "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\nemail_domains: {acme.de: \"\", acme.fr: }\n",
			want: []residency.Problem{
				pr(`email_domains["acme.de"]`, "region required"),
				pr(`email_domains["acme.fr"]`, "region required"),
			},
		},
		{
			name: "preference and transfers",
			src: "version: 1\nregions: {a: {jurisdiction: X}}\ndefault: a\npreference: {allowed: true, only_within: [X, Y]}\n" +
				"transfers: {travel_sessions: allow, analytics_export: maybe, Bad: deny, _x: allow, ok_2: deny}\n",
			want: []residency.Problem{
				pr("preference.only_within[1]", `unknown jurisdiction "Y"`),
				pr(`transfers["Bad"]`, "invalid name: must be lower-case letters, digits or '_', starting with a letter"),
				pr(`transfers["_x"]`, "invalid name: must be lower-case letters, digits or '_', starting with a letter"),
				pr(`transfers["analytics_export"]`, `invalid value "maybe": must be allow or deny`),
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
				pr("version", "must be >= 1"),
				pr(`regions["EU West"]`, fmt.Sprintf(invalidName, "EU West")),
				pr(`regions["EU West"].jurisdiction`, `invalid jurisdiction "eu": must be 1-16 upper-case letters or digits`),
				pr("regions.eu-west.countries[1]", fmt.Sprintf(badCountry, "fr")),
				pr("regions.eu-west.countries[2]", `country "DE" is listed twice`),
				pr("regions.us-east.countries[1]", `country "DE" is already mapped to eu-west`),
				pr("regions.x.jurisdiction", "required"),
				pr("regions.x.countries[0]", fmt.Sprintf(badCountry, "DEU")),
				pr("default", `unknown region "nowhere"`),
				pr(`email_domains["*."]`, badDomain),
				pr(`email_domains["*.gov.uk"]`, "region required"),
				pr(`email_domains["acme.de"]`, `same domain as "ACME.de" (domains are case-insensitive)`),
				pr(`email_domains["acme.de"]`, `unknown region "eu-wst"`),
				pr(`email_domains["bad..domain"]`, badDomain),
				pr("preference.only_within[1]", `unknown jurisdiction "XX"`),
				pr(`transfers["analytics_export"]`, `invalid value "maybe": must be allow or deny`),
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
	}
	for _, tt := range tests {
		err := &residency.ValidationError{Problems: tt.problems}
		if got := err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
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
	if want := []residency.Problem{{Field: "default", Message: `unknown region "b"`}}; !slices.Equal(ve.Problems, want) {
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
