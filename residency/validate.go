package residency

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a policy.
type Problem struct {
	// Field locates the problem in the YAML document, for example
	// `regions.us-east.countries[1]` or `email_domains["acme.de"]`.
	Field string
	// Message says what is wrong, for example `unknown region "eu-wst"`.
	Message string
}

// String returns "field: message".
func (p Problem) String() string { return p.Field + ": " + p.Message }

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
//     region;
//   - preference.only_within names jurisdictions of the policy's regions;
//   - transfers values are "allow" or "deny".
//
// [Parse] calls Validate, so a *Policy obtained from Parse or [Load] is
// always valid.
func (p *Policy) Validate() error {
	var v validator
	d := &p.doc

	if d.Version < 1 {
		v.add("version", "must be >= 1")
	}

	// Regions and their countries.
	if len(d.Regions) == 0 {
		v.add("regions", "at least one region is required")
	}
	jurisdictions := make(map[string]bool)
	owner := make(map[string]string) // country -> region listing it first
	for _, name := range sortedKeys(d.Regions) {
		r := d.Regions[name]
		field := "regions." + name
		if !validRegionName(name) {
			field = "regions[" + strconv.Quote(name) + "]"
			v.add(field, fmt.Sprintf("invalid region name %q: must be 1-%d lower-case letters, digits or '-'",
				name, maxRegionNameLen))
		}
		switch {
		case r.Jurisdiction == "":
			v.add(field+".jurisdiction", "required")
		case !validJurisdiction(r.Jurisdiction):
			v.add(field+".jurisdiction", fmt.Sprintf("invalid jurisdiction %q: must be 1-%d upper-case letters or digits",
				r.Jurisdiction, maxJurisdictionLen))
		default:
			jurisdictions[r.Jurisdiction] = true
		}
		for i, c := range r.Countries {
			cf := fmt.Sprintf("%s.countries[%d]", field, i)
			if !validCountry(c) {
				v.add(cf, fmt.Sprintf("invalid country code %q: must be 2 upper-case letters (ISO 3166-1 alpha-2)", c))
				continue
			}
			switch prev, dup := owner[c]; {
			case dup && prev == name:
				v.add(cf, fmt.Sprintf("country %q is listed twice", c))
			case dup:
				v.add(cf, fmt.Sprintf("country %q is already mapped to %s", c, prev))
			default:
				owner[c] = name
			}
		}
	}

	// Default.
	switch {
	case d.Default == "":
		v.add("default", "required")
	case !p.HasRegion(d.Default):
		v.add("default", fmt.Sprintf("unknown region %q", d.Default))
	}

	// Email domains.
	seen := make(map[string]string) // lower-case pattern -> key as written
	for _, pattern := range sortedKeys(d.EmailDomains) {
		region := d.EmailDomains[pattern]
		field := "email_domains[" + strconv.Quote(pattern) + "]"
		if !validDomainPattern(pattern) {
			v.add(field, `invalid domain: want a host name like "example.com" or a wildcard like "*.example.com"`)
		} else {
			lower := strings.ToLower(pattern)
			if prev, dup := seen[lower]; dup {
				v.add(field, fmt.Sprintf("same domain as %q (domains are case-insensitive)", prev))
			} else {
				seen[lower] = pattern
			}
		}
		switch {
		case region == "":
			v.add(field, "region required")
		case !p.HasRegion(region):
			v.add(field, fmt.Sprintf("unknown region %q", region))
		}
	}

	// Preference.
	if pref := d.Preference; pref != nil {
		for i, j := range pref.OnlyWithin {
			if !jurisdictions[j] {
				v.add(fmt.Sprintf("preference.only_within[%d]", i),
					fmt.Sprintf("unknown jurisdiction %q", j))
			}
		}
	}

	// Transfers.
	for _, kind := range sortedKeys(d.Transfers) {
		field := "transfers[" + strconv.Quote(kind) + "]"
		if !validTransferName(kind) {
			v.add(field, "invalid name: must be lower-case letters, digits or '_', starting with a letter")
		}
		if val := d.Transfers[kind]; val != "allow" && val != "deny" {
			v.add(field, fmt.Sprintf("invalid value %q: must be allow or deny", val))
		}
	}

	return v.err()
}

type validator struct{ problems []Problem }

func (v *validator) add(field, msg string) {
	v.problems = append(v.problems, Problem{Field: field, Message: msg})
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

// validRegionName reports whether s is 1-32 of [a-z0-9-].
func validRegionName(s string) bool {
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
