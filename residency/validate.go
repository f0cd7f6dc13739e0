package residency

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a policy.
type Problem struct {
	// Field locates the problem in the YAML document, for example
	// `regions.us-east.countries[1]` or `email_domains["acme.de"]`.
	Field string
	// Line is the 1-based line of the YAML document where the offending key
	// or value is written. For a required key missing inside an entry (a
	// region without a jurisdiction) it is the line of that entry. It is 0
	// when there is no such place, for example when a required top-level
	// field is missing, or when the policy did not come from [Parse].
	Line int `json:",omitempty"`
	// Message says what is wrong, for example `unknown region "eu-wst"`.
	Message string
}

// String returns "line N: field: message", or "field: message" if Line is 0.
func (p Problem) String() string {
	if p.Line > 0 {
		return "line " + strconv.Itoa(p.Line) + ": " + p.Field + ": " + p.Message
	}
	return p.Field + ": " + p.Message
}

// ValidationError lists every problem found in a policy, in document order
// (map keys sorted). It is returned by [Policy.Validate], [Parse] and [Load].
type ValidationError struct {
	Problems []Problem
}

// Error joins all problems into one line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("residency: invalid policy: ")
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, "%d problems: ", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Validate checks the policy and returns a [*ValidationError] listing all
// problems, or nil if there are none. It checks that:
//
//   - version is >= 1;
//   - there is at least one region, every region name is 1-32 lower-case
//     letters, digits or '-', and every region has a jurisdiction of
//     upper-case letters or digits;
//   - every country is a two-letter upper-case code listed by one region
//     only, and only once;
//   - default is set and names a region;
//   - every email_domains key is a host name ("acme.de") or a wildcard
//     ("*.gov.uk"), no two keys differ only in case, and every value names a
//     region. Two rules of equal length can only both match an address if
//     they are the same domain up to case (an exact rule always beats a
//     wildcard, and two matching wildcards of equal length are the same
//     suffix), so this is the check for overlapping domains of equal length;
//   - every tenants key is a tenant id of 1-64 lower-case letters, digits or
//     '-', and every value names a region;
//   - preference.only_within names jurisdictions of the policy's regions,
//     each once. A preference can then only allow regions within those
//     jurisdictions: the regions a user may choose are derived from
//     only_within (see [Policy.AllowsPreference]), never listed separately;
//   - transfers values are "allow" or "deny".
//
// [Parse] calls Validate, so a *Policy obtained from Parse or [Load] is
// always valid. Problems returned by Parse carry line numbers; Validate
// called later on a parsed policy has no document to point into, but it
// then finds no problems anyway.
func (p *Policy) Validate() error { return p.validate(nil) }

// validate implements Validate; loc (which may be nil) supplies line numbers.
func (p *Policy) validate(loc *locator) error {
	var v validator
	d := &p.doc

	if d.Version < 1 {
		v.add("version", loc.value("version"), "must be >= 1")
	}

	// Regions and their countries.
	if len(d.Regions) == 0 {
		v.add("regions", loc.value("regions"), "at least one region is required")
	}
	jurisdictions := make(map[string]bool)
	owner := make(map[string]string) // country -> region listing it first
	for _, name := range sortedKeys(d.Regions) {
		r := d.Regions[name]
		field := "regions." + name
		if !ValidRegionName(name) {
			field = "regions[" + strconv.Quote(name) + "]"
			v.add(field, loc.key("regions", name), fmt.Sprintf("invalid region name %q: must be 1-%d lower-case letters, digits or '-'",
				name, maxRegionNameLen))
		}
		switch {
		case r.Jurisdiction == "":
			line := loc.value("regions", name, "jurisdiction")
			if line == 0 {
				line = loc.key("regions", name)
			}
			v.add(field+".jurisdiction", line, "required")
		case !validJurisdiction(r.Jurisdiction):
			v.add(field+".jurisdiction", loc.value("regions", name, "jurisdiction"),
				fmt.Sprintf("invalid jurisdiction %q: must be 1-%d upper-case letters or digits",
					r.Jurisdiction, maxJurisdictionLen))
		default:
			jurisdictions[r.Jurisdiction] = true
		}
		for i, c := range r.Countries {
			cf := fmt.Sprintf("%s.countries[%d]", field, i)
			line := loc.item(i, "regions", name, "countries")
			if !validCountry(c) {
				v.add(cf, line, fmt.Sprintf("invalid country code %q: must be 2 upper-case letters (ISO 3166-1 alpha-2)", c))
				continue
			}
			switch prev, dup := owner[c]; {
			case dup && prev == name:
				v.add(cf, line, fmt.Sprintf("country %q is listed twice", c))
			case dup:
				v.add(cf, line, fmt.Sprintf("country %q is already mapped to %s", c, prev))
			default:
				owner[c] = name
			}
		}
	}

	// Default.
	switch {
	case d.Default == "":
		v.add("default", loc.value("default"), "required")
	case !p.HasRegion(d.Default):
		v.add("default", loc.value("default"), fmt.Sprintf("unknown region %q", d.Default))
	}

	// Email domains.
	seen := make(map[string]string) // lower-case pattern -> key as written
	for _, pattern := range sortedKeys(d.EmailDomains) {
		region := d.EmailDomains[pattern]
		field := "email_domains[" + strconv.Quote(pattern) + "]"
		keyLine := loc.key("email_domains", pattern)
		if !validDomainPattern(pattern) {
			v.add(field, keyLine, `invalid domain: want a host name like "example.com" or a wildcard like "*.example.com"`)
		} else {
			lower := strings.ToLower(pattern)
			if prev, dup := seen[lower]; dup {
				v.add(field, keyLine, fmt.Sprintf("same domain as %q (domains are case-insensitive)", prev))
			} else {
				seen[lower] = pattern
			}
		}
		v.checkRegion(p, field, loc, region, "email_domains", pattern)
	}

	// Tenants.
	for _, id := range sortedKeys(d.Tenants) {
		field := "tenants[" + strconv.Quote(id) + "]"
		if !validTenantID(id) {
			v.add(field, loc.key("tenants", id), fmt.Sprintf("invalid tenant id %q: must be 1-%d lower-case letters, digits or '-'",
				id, maxTenantIDLen))
		}
		v.checkRegion(p, field, loc, d.Tenants[id], "tenants", id)
	}

	// Preference.
	if pref := d.Preference; pref != nil {
		listed := make(map[string]bool, len(pref.OnlyWithin))
		for i, j := range pref.OnlyWithin {
			field := fmt.Sprintf("preference.only_within[%d]", i)
			line := loc.item(i, "preference", "only_within")
			switch {
			case !jurisdictions[j]:
				v.add(field, line, fmt.Sprintf("unknown jurisdiction %q", j))
			case listed[j]:
				v.add(field, line, fmt.Sprintf("jurisdiction %q is listed twice", j))
			}
			listed[j] = true
		}
	}

	// Transfers.
	for _, kind := range sortedKeys(d.Transfers) {
		field := "transfers[" + strconv.Quote(kind) + "]"
		if !validTransferName(kind) {
			v.add(field, loc.key("transfers", kind), "invalid name: must be lower-case letters, digits or '_', starting with a letter")
		}
		if val := d.Transfers[kind]; val != "allow" && val != "deny" {
			v.add(field, loc.value("transfers", kind), fmt.Sprintf("invalid value %q: must be allow or deny", val))
		}
	}

	return v.err()
}

type validator struct{ problems []Problem }

func (v *validator) add(field string, line int, msg string) {
	v.problems = append(v.problems, Problem{Field: field, Line: line, Message: msg})
}

// checkRegion checks the region value of the mapping entry section[key].
func (v *validator) checkRegion(p *Policy, field string, loc *locator, region, section, key string) {
	switch {
	case region == "":
		line := loc.value(section, key)
		if line == 0 {
			line = loc.key(section, key)
		}
		v.add(field, line, "region required")
	case !p.HasRegion(region):
		v.add(field, loc.value(section, key), fmt.Sprintf("unknown region %q", region))
	}
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: slices.Clip(v.problems)}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ValidRegionName reports whether s is a well-formed region name: 1-32 of
// [a-z0-9-]. The home index applies the same rule to the regions it stores.
func ValidRegionName(s string) bool {
	if len(s) == 0 || len(s) > maxRegionNameLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validJurisdiction reports whether s is 1-16 of [A-Z0-9].
func validJurisdiction(s string) bool {
	if len(s) == 0 || len(s) > maxJurisdictionLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// validCountry reports whether s is two upper-case ASCII letters.
func validCountry(s string) bool {
	return len(s) == 2 && 'A' <= s[0] && s[0] <= 'Z' && 'A' <= s[1] && s[1] <= 'Z'
}

// validDomainPattern reports whether s is a host name of at least two labels
// ("acme.de") or "*." followed by a host name of at least one label
// ("*.gov.uk", "*.uk"). Labels are 1-63 ASCII letters, digits or '-', not
// starting or ending with '-'; the whole pattern is at most 253 bytes. IDNs
// must be written in their A-label (punycode) form.
func validDomainPattern(s string) bool {
	if len(s) > maxDomainLen {
		return false
	}
	host, wild := strings.CutPrefix(s, "*.")
	labels := strings.Split(host, ".")
	if !wild && len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if len(l) == 0 || len(l) > maxLabelLen || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := range len(l) {
		c := l[i] | 0x20 // ASCII lower-case for letters
		if !('a' <= c && c <= 'z' || '0' <= l[i] && l[i] <= '9' || l[i] == '-') {
			return false
		}
	}
	return true
}

// validTenantID reports whether s is 1-64 of [a-z0-9-].
func validTenantID(s string) bool {
	if len(s) == 0 || len(s) > maxTenantIDLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validTransferName reports whether s is 1-64 of [a-z0-9_] starting with a
// letter.
func validTransferName(s string) bool {
	if len(s) == 0 || len(s) > maxTransferNameLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// locator finds the lines of keys and values in the YAML node tree of a
// policy document, following aliases and merge keys ("<<") the way the
// decoder does. A nil *locator finds nothing: every line is 0.
type locator struct {
	root  *yaml.Node                    // top-level node of the document
	index map[*yaml.Node]map[string]int // mapping -> key -> position of the key in Content
	found map[string][2]*yaml.Node      // path joined with NUL -> key and value nodes
}

// newLocator returns a locator for the document node doc, or nil if doc is
// nil.
func newLocator(doc *yaml.Node) *locator {
	if doc == nil {
		return nil
	}
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	return &locator{root: root, index: make(map[*yaml.Node]map[string]int), found: make(map[string][2]*yaml.Node)}
}

// Limits that keep a hostile document (alias chains, deeply nested merges)
// from making the locator slow; beyond them a line is reported as 0.
const (
	maxAliasHops  = 16
	maxMergeDepth = 8
)

// key returns the line of the key at path (a sequence of mapping keys from
// the top level), or 0.
func (l *locator) key(path ...string) int {
	k, _ := l.find(path)
	return lineOf(k)
}

// value returns the line of the value at path, or 0.
func (l *locator) value(path ...string) int {
	_, v := l.find(path)
	return lineOf(v)
}

// item returns the line of element i of the sequence at path, or 0.
func (l *locator) item(i int, path ...string) int {
	_, v := l.find(path)
	v = resolve(v)
	if v == nil || v.Kind != yaml.SequenceNode || i < 0 || i >= len(v.Content) {
		return 0
	}
	return lineOf(v.Content[i])
}

// find returns the key and value nodes at path, remembering the answer so
// that many problems in one section do not walk merge chains again.
func (l *locator) find(path []string) (k, v *yaml.Node) {
	if l == nil || len(path) == 0 {
		return nil, nil
	}
	id := strings.Join(path, "\x00")
	if kv, ok := l.found[id]; ok {
		return kv[0], kv[1]
	}
	n := l.root
	for _, key := range path {
		k, v = l.lookup(resolve(n), key, 0)
		if v == nil {
			break
		}
		n = v
	}
	l.found[id] = [2]*yaml.Node{k, v}
	return k, v
}

// lookup finds key in mapping m: among its own entries first, then in the
// mappings merged into it, in order.
func (l *locator) lookup(m *yaml.Node, key string, depth int) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode || depth > maxMergeDepth {
		return nil, nil
	}
	idx, ok := l.index[m]
	if !ok {
		idx = make(map[string]int, len(m.Content)/2)
		for i := 0; i+1 < len(m.Content); i += 2 {
			kn := m.Content[i]
			if kn.Kind != yaml.ScalarNode || isMergeKey(kn) {
				continue
			}
			s := kn.Value
			if kn.ShortTag() == "!!null" {
				s = ""
			}
			if _, dup := idx[s]; !dup {
				idx[s] = i
			}
		}
		l.index[m] = idx
	}
	if i, ok := idx[key]; ok {
		return m.Content[i], m.Content[i+1]
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if !isMergeKey(m.Content[i]) {
			continue
		}
		src := resolve(m.Content[i+1])
		if src == nil {
			continue
		}
		merged := []*yaml.Node{src}
		if src.Kind == yaml.SequenceNode {
			merged = src.Content
		}
		for _, mm := range merged {
			if k, v := l.lookup(resolve(mm), key, depth+1); v != nil {
				return k, v
			}
		}
	}
	return nil, nil
}

func isMergeKey(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && (n.Tag == "!" || n.ShortTag() == "!!merge")
}

// resolve follows aliases to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for range maxAliasHops {
		if n == nil || n.Kind != yaml.AliasNode {
			return n
		}
		n = n.Alias
	}
	return nil
}

func lineOf(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	return n.Line
}
