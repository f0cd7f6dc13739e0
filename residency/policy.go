package residency

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Policy is a parsed, validated residency policy. Obtain one from [Parse] or
// [Load]; the zero value is not useful. A Policy is immutable and safe for
// concurrent use by multiple goroutines.
type Policy struct {
	doc document

	// Lookup tables built by compile once the document is valid.
	regionNames []string               // sorted
	pref        map[string]*preference // region -> how a preference for it is treated
	prefUnknown string                 // explanation prefix: preference for an unknown region ignored
	tenant      map[string]*Decision   // tenant id -> decision
	exact       map[string]*Decision   // lower-case domain -> decision
	wildcard    map[string]*Decision   // lower-case suffix of "*.suffix" -> decision
	country     [26 * 26]*Decision     // index countryIndex(code)
	def         Decision
}

// preference is the precomputed treatment of a user's preference for one
// region: honoured (dec != nil) or ignored (ignored explains why, as a
// prefix of the explanation of the decision that applies instead).
type preference struct {
	dec     *Decision
	ignored string
}

// document mirrors the YAML file. Fields are decoded strictly: a key that is
// not listed here is a parse error.
type document struct {
	Version      int                  `yaml:"version"`
	Regions      map[string]regionDoc `yaml:"regions"`
	Default      string               `yaml:"default"`
	EmailDomains map[string]string    `yaml:"email_domains"`
	Tenants      map[string]string    `yaml:"tenants"`
	Preference   *preferenceDoc       `yaml:"preference"`
	Transfers    map[string]string    `yaml:"transfers"`
}

type regionDoc struct {
	Jurisdiction string   `yaml:"jurisdiction"`
	Countries    []string `yaml:"countries"`
}

type preferenceDoc struct {
	Allowed    bool     `yaml:"allowed"`
	OnlyWithin []string `yaml:"only_within"`
}

// Facts are what the router knows about a prospective user when it has to
// pick a home region for them.
type Facts struct {
	// Email is the identifier the user typed, or "" if none (yet). Only the
	// domain, the part after the last '@', is used.
	Email string
	// Country is the client's ISO 3166-1 alpha-2 country code, usually from
	// [GeoIP.Country], or "" if unknown.
	Country string
	// Tenant is the id of the tenant (customer organisation) the user signs
	// up under, or "" if none. It is matched exactly against the policy's
	// tenants section (tenant ids are lower-case).
	Tenant string
	// Preference is the region the user explicitly asked for, or "" if
	// none. It is honoured only if the policy allows it (see
	// [Policy.AllowsPreference]); otherwise it is ignored and the
	// explanation says so. It is matched exactly (region names are
	// lower-case).
	Preference string
}

// Decision is the outcome of [Policy.Evaluate].
type Decision struct {
	// Region is the home region chosen for the user. It is always one of the
	// policy's regions.
	Region string
	// Rule identifies the rule that decided, in a stable machine-readable
	// form: "preference:eu-west", "tenant:acme-corp",
	// "email_domain:acme.de", "email_domain:*.gov.uk", "country:SG" or
	// "default". Domains are lower-cased.
	Rule string
	// Explanation is a human-readable sentence saying why Rule applied (and,
	// if the user's preference was ignored, why). It never contains the
	// email address or a preference that is not one of the policy's regions.
	Explanation string
}

// Rule identifiers for the default decision and the prefixes of the others.
const (
	RuleDefault           = "default"
	RulePrefixPreference  = "preference:"
	RulePrefixTenant      = "tenant:"
	RulePrefixEmailDomain = "email_domain:"
	RulePrefixCountry     = "country:"
)

// Limits of the policy syntax.
const (
	maxRegionNameLen   = 32
	maxJurisdictionLen = 16
	maxDomainLen       = 253
	maxLabelLen        = 63
	maxTransferNameLen = 64
	maxTenantIDLen     = 64
)

// Parse decodes and validates a residency policy from YAML. Unknown fields,
// duplicate keys, type mismatches and more than one YAML document are
// errors. If the policy decodes but is invalid, the error is a
// [*ValidationError] listing every problem (use errors.As to get it).
func Parse(data []byte) (*Policy, error) {
	doc, root, err := decode(data)
	if err != nil {
		return nil, err
	}
	p := &Policy{doc: doc}
	if err := p.validate(newLocator(root)); err != nil {
		return nil, err
	}
	p.compile()
	return p, nil
}

// decode decodes exactly one strict YAML document. It also returns the
// document's node tree, which validation uses to report line numbers (nil
// if it cannot be built). The YAML decoder is not expected to panic, but a
// policy checker must not crash on a hostile file, so a panic is turned into
// an error.
func decode(data []byte) (doc document, root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			root = nil
			err = fmt.Errorf("residency: parse policy: YAML decoder panic: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return doc, nil, errors.New("residency: parse policy: empty document")
		}
		return doc, nil, fmt.Errorf("residency: parse policy: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return doc, nil, fmt.Errorf("residency: parse policy: %w", err)
		}
		return doc, nil, errors.New("residency: parse policy: more than one YAML document")
	}
	// Decoding into a struct loses positions, so parse the (now known to be
	// well-formed, single) document a second time into a node tree.
	var node yaml.Node
	if yaml.Unmarshal(data, &node) == nil {
		root = &node
	}
	return doc, root, nil
}

// Load reads the policy file at path and parses it with [Parse]. Errors
// mention the path and wrap the underlying error, including any
// [*ValidationError].
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("residency: load policy: %w", err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Version returns the policy's version number (always >= 1 for a valid
// policy). Compliance bumps it on every change so that decisions can be
// traced to the policy that produced them.
func (p *Policy) Version() int { return p.doc.Version }

// Regions returns the names of all regions in the policy, sorted. The caller
// owns the returned slice.
func (p *Policy) Regions() []string { return slices.Clone(p.regionNames) }

// HasRegion reports whether name is a region of the policy. The comparison
// is exact (region names are lower-case).
func (p *Policy) HasRegion(name string) bool {
	_, ok := p.doc.Regions[name]
	return ok
}

// Default returns the region used when no other rule decides.
func (p *Policy) Default() string { return p.doc.Default }

// Jurisdiction returns the legal jurisdiction of region (for example "EU"),
// or "" if the policy has no such region.
func (p *Policy) Jurisdiction(region string) string {
	return p.doc.Regions[region].Jurisdiction
}

// AllowsPreference reports whether a user may explicitly choose region as
// their home region (a "region" hint or a tenant's ui_locales setting). It is
// false unless the policy's preference section sets allowed: true, and, when
// that section lists only_within jurisdictions, region belongs to one of
// them. Unknown regions are never allowed.
func (p *Policy) AllowsPreference(region string) bool {
	r, ok := p.doc.Regions[region]
	pref := p.doc.Preference
	if !ok || pref == nil || !pref.Allowed {
		return false
	}
	return len(pref.OnlyWithin) == 0 || slices.Contains(pref.OnlyWithin, r.Jurisdiction)
}

// TransferAllowed reports whether the policy's transfers section allows the
// named kind of cross-region transfer (for example "travel_sessions").
// Transfers that the policy does not mention are denied.
func (p *Policy) TransferAllowed(kind string) bool {
	return p.doc.Transfers[kind] == "allow"
}

// Summary describes the policy in one line for humans, for example
// "version 3, 3 regions, 14 countries, 2 email-domain rules, 1 tenant rule,
// default us-east, preference allowed within [EU]".
func (p *Policy) Summary() string {
	d := &p.doc
	countries := 0
	for _, r := range d.Regions {
		countries += len(r.Countries)
	}
	plural := func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	var pref string
	switch {
	case d.Preference == nil || !d.Preference.Allowed:
		pref = "preference not allowed"
	case len(d.Preference.OnlyWithin) == 0:
		pref = "preference allowed for any region"
	default:
		pref = "preference allowed within [" + strings.Join(d.Preference.OnlyWithin, " ") + "]"
	}
	return fmt.Sprintf("version %d, %s, %s, %s, %s, default %s, %s",
		d.Version, plural(len(d.Regions), "region", "regions"), plural(countries, "country", "countries"),
		plural(len(d.EmailDomains), "email-domain rule", "email-domain rules"),
		plural(len(d.Tenants), "tenant rule", "tenant rules"),
		d.Default, pref)
}

// Evaluate decides the home region for a new user described by f. Rules are
// tried in order, and the first that applies decides:
//
//  1. the user's preference, if the policy allows it ([Policy.AllowsPreference]);
//     a preference the policy does not allow is ignored, and the explanation
//     of the decision that applies instead says so;
//  2. the tenant rule for f.Tenant;
//  3. the email-domain rule for the domain of f.Email (exact beats
//     wildcard, longest wildcard suffix wins);
//  4. the country rule for f.Country;
//  5. the policy default.
//
// Evaluate is a pure function. It does not allocate, except for one string
// concatenation when it has to explain an ignored preference.
func (p *Policy) Evaluate(f Facts) Decision {
	if f.Preference != "" {
		pr := p.pref[f.Preference]
		if pr != nil && pr.dec != nil {
			return *pr.dec
		}
		note := p.prefUnknown
		if pr != nil {
			note = pr.ignored
		}
		d := p.evaluateRules(f)
		d.Explanation = note + d.Explanation
		return d
	}
	return p.evaluateRules(f)
}

// evaluateRules applies the rules after the preference: tenant, email
// domain, country, default.
func (p *Policy) evaluateRules(f Facts) Decision {
	if f.Tenant != "" {
		if d := p.tenant[f.Tenant]; d != nil {
			return *d
		}
	}
	if d := p.matchEmail(f.Email); d != nil {
		return *d
	}
	if d := p.matchCountry(f.Country); d != nil {
		return *d
	}
	return p.def
}

// matchEmail returns the decision of the email-domain rule that matches the
// domain of email, or nil.
func (p *Policy) matchEmail(email string) *Decision {
	at := strings.LastIndexByte(email, '@')
	if at < 0 {
		return nil
	}
	domain := email[at+1:]
	if domain == "" || (len(p.exact) == 0 && len(p.wildcard) == 0) {
		return nil
	}
	// Policy patterns are at most maxDomainLen bytes long, so an over-long
	// domain cannot match an exact rule, and only its last maxDomainLen bytes
	// can hold a wildcard suffix (every '.' in that tail is a real label
	// boundary of the full domain).
	long := len(domain) > maxDomainLen
	if long {
		domain = domain[len(domain)-maxDomainLen:]
	}
	n := len(domain)
	// Lower-case into a stack buffer; map lookups keyed by string(buf[i:j])
	// do not allocate.
	var buf [maxDomainLen]byte
	copy(buf[:], domain)
	for i := range n {
		if c := buf[i]; 'A' <= c && c <= 'Z' {
			buf[i] = c + ('a' - 'A')
		}
	}
	if !long {
		if d, ok := p.exact[string(buf[:n])]; ok {
			return d
		}
	}
	if len(p.wildcard) == 0 {
		return nil
	}
	// Proper suffixes after each '.', longest first.
	for i := range n {
		if buf[i] == '.' {
			if d, ok := p.wildcard[string(buf[i+1:n])]; ok {
				return d
			}
		}
	}
	return nil
}

// matchCountry returns the decision of the country rule for code, or nil.
// The code is matched ASCII case-insensitively.
func (p *Policy) matchCountry(code string) *Decision {
	i, ok := countryIndex(code)
	if !ok {
		return nil
	}
	return p.country[i]
}

// countryIndex maps a two-letter code (either case) to 0..675.
func countryIndex(code string) (int, bool) {
	if len(code) != 2 {
		return 0, false
	}
	a, b := code[0]|0x20, code[1]|0x20 // ASCII lower-case for letters
	if a < 'a' || a > 'z' || b < 'a' || b > 'z' {
		return 0, false
	}
	return int(a-'a')*26 + int(b-'a'), true
}

// compile builds the lookup tables. It must only be called on a document
// that passed Validate.
func (p *Policy) compile() {
	d := &p.doc
	p.regionNames = make([]string, 0, len(d.Regions))
	for name := range d.Regions {
		p.regionNames = append(p.regionNames, name)
	}
	sort.Strings(p.regionNames)

	where := func(region string) string {
		return fmt.Sprintf("region %s (jurisdiction %s)", region, d.Regions[region].Jurisdiction)
	}

	for _, region := range p.regionNames {
		for _, c := range d.Regions[region].Countries {
			i, _ := countryIndex(c)
			p.country[i] = &Decision{
				Region: region,
				Rule:   RulePrefixCountry + c,
				Explanation: fmt.Sprintf("client country %s is mapped to %s by policy version %d",
					c, where(region), d.Version),
			}
		}
	}

	p.exact = make(map[string]*Decision)
	p.wildcard = make(map[string]*Decision)
	for pattern, region := range d.EmailDomains {
		pattern = strings.ToLower(pattern)
		dec := &Decision{Region: region, Rule: RulePrefixEmailDomain + pattern}
		if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
			dec.Explanation = fmt.Sprintf("email domain is a subdomain of %s (rule %q), which policy version %d maps to %s",
				suffix, pattern, d.Version, where(region))
			p.wildcard[suffix] = dec
		} else {
			dec.Explanation = fmt.Sprintf("email domain is %s (rule %q), which policy version %d maps to %s",
				pattern, pattern, d.Version, where(region))
			p.exact[pattern] = dec
		}
	}

	p.tenant = make(map[string]*Decision, len(d.Tenants))
	for id, region := range d.Tenants {
		p.tenant[id] = &Decision{
			Region: region,
			Rule:   RulePrefixTenant + id,
			Explanation: fmt.Sprintf("tenant %s is assigned to %s by policy version %d",
				id, where(region), d.Version),
		}
	}

	// Preferences: one entry per region, honoured or ignored.
	pref := d.Preference
	var within string // "regions in jurisdictions EU, UK", "any region", or "" if not allowed
	if pref != nil && pref.Allowed {
		within = "any region"
		if len(pref.OnlyWithin) > 0 {
			within = "regions in jurisdictions " + strings.Join(pref.OnlyWithin, ", ")
		}
	}
	p.pref = make(map[string]*preference, len(p.regionNames))
	for _, region := range p.regionNames {
		switch {
		case p.AllowsPreference(region):
			p.pref[region] = &preference{dec: &Decision{
				Region: region,
				Rule:   RulePrefixPreference + region,
				Explanation: fmt.Sprintf("the user asked for %s, and policy version %d lets users choose %s",
					where(region), d.Version, within),
			}}
		case within == "":
			p.pref[region] = &preference{ignored: fmt.Sprintf(
				"the user's preference for region %s was ignored because policy version %d does not let users choose their region; ",
				region, d.Version)}
		default:
			p.pref[region] = &preference{ignored: fmt.Sprintf(
				"the user's preference for region %s was ignored because policy version %d only lets users choose %s; ",
				region, d.Version, within)}
		}
	}
	p.prefUnknown = fmt.Sprintf("the user's preferred region was ignored because it is not a region of policy version %d; ", d.Version)

	p.def = Decision{
		Region: d.Default,
		Rule:   RuleDefault,
		Explanation: fmt.Sprintf("no tenant, email-domain or country rule matched, so the default of policy version %d applies: %s",
			d.Version, where(d.Default)),
	}
}
