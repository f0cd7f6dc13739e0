package residency

import (
	"fmt"
	"sort"
	"strings"
)

// Diff says which rules of a policy would send new users to a different
// region if the policy were replaced by another: the impact of a policy
// change, to review before applying it. Obtain one from [Policy.Diff].
//
// A policy change only affects where NEW users are homed: existing users keep
// their home region (re-homing is an explicit operation). The issue that
// introduced Diff also asks how many home-index entries a change would have
// affected; that needs, per rule, the number of users it homed, which
// nothing records (the home index maps users to regions, not to the rule
// that chose the region), so Diff does not report it.
type Diff struct {
	FromVersion, ToVersion int
	// Changes lists every rule whose outcome differs, in evaluation order
	// (preference, tenant, email domain, country, default) and sorted by
	// rule within each kind.
	Changes []Change
}

// Change is one rule whose outcome differs between two policies.
type Change struct {
	// Rule names what changed, in the form of [Decision.Rule]:
	// "preference:us-east", "tenant:acme-corp", "email_domain:acme.de",
	// "email_domain:*.gov.uk", "country:DE" or "default". The rule may exist
	// in only one of the two policies.
	Rule     string
	From, To Outcome
}

// Outcome is where one policy sends the users that a [Change] is about.
type Outcome struct {
	// Region is the region chosen, or "" if no rule of this kind applies and
	// the decision falls through to the next kind of rule (which depends on
	// the other facts about the user).
	Region string
	// By is the rule that chooses Region, which differs from the Change's
	// Rule when a more general rule covers it: a removed "*.police.gov.uk"
	// rule is covered by "email_domain:*.gov.uk", an unmapped country by
	// "default". It is "" when Region is "".
	By string
}

// Diff compares p (the policy in force) with q (a proposed replacement) and
// returns every rule whose outcome differs:
//
//   - preference: for each region of either policy, whether a user asking
//     for it gets it (Region = that region) or not (Region = "");
//   - tenant: for each tenant id of either policy, its region or "";
//   - email domain: for each pattern of either policy, the region that the
//     email-domain rules give an address matching it ("" if none do: the
//     country or default decides). For a wildcard "*.gov.uk" this is the
//     region of a subdomain of gov.uk that no more specific rule names;
//   - country: for each country mapped by either policy, its region, or the
//     default's for an unmapped country;
//   - default: the default region. A changed default also affects every
//     country that neither policy maps, which are not listed one by one.
//
// Diff is a pure function of the two policies.
func (p *Policy) Diff(q *Policy) Diff {
	d := Diff{FromVersion: p.Version(), ToVersion: q.Version()}
	add := func(rule string, from, to Outcome) {
		if from.Region != to.Region {
			d.Changes = append(d.Changes, Change{Rule: rule, From: from, To: to})
		}
	}

	for _, region := range union(p.regionNames, q.regionNames) {
		add(RulePrefixPreference+region, p.preferenceOutcome(region), q.preferenceOutcome(region))
	}
	for _, id := range union(sortedKeys(p.tenant), sortedKeys(q.tenant)) {
		add(RulePrefixTenant+id, p.tenantOutcome(id), q.tenantOutcome(id))
	}
	patterns := func(x *Policy) []string {
		var out []string
		for dom := range x.exact {
			out = append(out, dom)
		}
		for suffix := range x.wildcard {
			out = append(out, "*."+suffix)
		}
		sort.Strings(out)
		return out
	}
	for _, pattern := range union(patterns(p), patterns(q)) {
		add(RulePrefixEmailDomain+pattern, p.emailOutcome(pattern), q.emailOutcome(pattern))
	}
	for i := range p.country {
		if p.country[i] == nil && q.country[i] == nil {
			continue
		}
		code := string([]byte{byte('A' + i/26), byte('A' + i%26)})
		add(RulePrefixCountry+code, p.countryOutcome(i), q.countryOutcome(i))
	}
	add(RuleDefault, Outcome{p.def.Region, RuleDefault}, Outcome{q.def.Region, RuleDefault})
	return d
}

func (p *Policy) preferenceOutcome(region string) Outcome {
	if pr := p.pref[region]; pr != nil && pr.dec != nil {
		return Outcome{region, pr.dec.Rule}
	}
	return Outcome{}
}

func (p *Policy) tenantOutcome(id string) Outcome {
	if d := p.tenant[id]; d != nil {
		return Outcome{d.Region, d.Rule}
	}
	return Outcome{}
}

// emailOutcome returns what the email-domain rules of p decide for an
// address matching pattern (lower-case, valid).
func (p *Policy) emailOutcome(pattern string) Outcome {
	var d *Decision
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		// A subdomain of suffix that no exact rule names: the wildcard for
		// suffix itself, or the longest wildcard covering suffix.
		if d = p.wildcard[suffix]; d == nil {
			d = p.wildcardAbove(suffix)
		}
	} else if d = p.exact[pattern]; d == nil {
		d = p.wildcardAbove(pattern)
	}
	if d == nil {
		return Outcome{}
	}
	return Outcome{d.Region, d.Rule}
}

// wildcardAbove returns the longest wildcard rule matching domain (which
// must be a proper subdomain of the rule's suffix), or nil.
func (p *Policy) wildcardAbove(domain string) *Decision {
	for i := range len(domain) {
		if domain[i] == '.' {
			if d := p.wildcard[domain[i+1:]]; d != nil {
				return d
			}
		}
	}
	return nil
}

func (p *Policy) countryOutcome(i int) Outcome {
	if d := p.country[i]; d != nil {
		return Outcome{d.Region, d.Rule}
	}
	return Outcome{p.def.Region, RuleDefault}
}

// union returns the sorted union of two sorted string slices.
func union(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i] < b[j]:
			out = append(out, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// String describes the diff for humans, one change per line:
//
//	policy version 1 -> 2: 3 rules change region for new sign-ups (existing users keep theirs)
//	  email_domain:*.police.gov.uk  uk-south -> eu-west (by email_domain:*.gov.uk)
//	  country:DE                    eu-west -> us-east (by default)
//	  default                       us-east -> eu-west
func (d Diff) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy version %d -> %d: ", d.FromVersion, d.ToVersion)
	switch len(d.Changes) {
	case 0:
		b.WriteString("no rule changes region\n")
		return b.String()
	case 1:
		b.WriteString("1 rule changes region")
	default:
		fmt.Fprintf(&b, "%d rules change region", len(d.Changes))
	}
	b.WriteString(" for new sign-ups (existing users keep theirs)\n")
	width := 0
	for _, c := range d.Changes {
		width = max(width, len(c.Rule))
	}
	for _, c := range d.Changes {
		fmt.Fprintf(&b, "  %-*s  %s -> %s\n", width, c.Rule, c.From.describe(c.Rule), c.To.describe(c.Rule))
	}
	return b.String()
}

func (o Outcome) describe(rule string) string {
	switch {
	case o.Region == "":
		return "(no rule: falls through)"
	case o.By != rule:
		return o.Region + " (by " + o.By + ")"
	}
	return o.Region
}
