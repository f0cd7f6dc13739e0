package residency_test

import (
	"slices"
	"testing"

	"github.com/domicile/domicile/residency"
)

// nextPolicy is testPolicy (version 7) after a round of changes, each
// commented with its expected effect.
const nextPolicy = `
version: 8
regions:
  eu-west:      {jurisdiction: EU, countries: [DE, FR, IE, GB]} # GB: uk-south -> eu-west
  us-east:      {jurisdiction: US, countries: [US]}             # CA: now unmapped, so the (new) default
  ap-southeast: {jurisdiction: SG, countries: [SG, AU, NZ]}     # NZ: default -> ap-southeast
  uk-south:     {jurisdiction: UK}
default: eu-west                # us-east -> eu-west
email_domains:
  acme.de: us-east              # eu-west -> us-east
  "*.acme.de": ap-southeast     # unchanged
  "*.gov.uk": eu-west           # unchanged
                                # *.police.gov.uk removed: covered by *.gov.uk
  mod.gov.uk: us-east           # unchanged
  hmrc.gov.uk: eu-west          # new, but *.gov.uk already sent it to eu-west
                                # example.sg removed: no email rule any more
  "*.example.com": us-east      # new
tenants: {acme-corp: uk-south, initech: eu-west} # globex removed, initech new
preference: {allowed: true, only_within: [EU]}   # uk-south may no longer be chosen
transfers: {travel_sessions: deny}               # not a routing change
`

func TestDiff(t *testing.T) {
	old, next := mustParse(t, testPolicy), mustParse(t, nextPolicy)
	none := residency.Outcome{}
	o := func(region, by string) residency.Outcome { return residency.Outcome{Region: region, By: by} }
	want := []residency.Change{
		{"preference:uk-south", o("uk-south", "preference:uk-south"), none},
		{"tenant:globex", o("ap-southeast", "tenant:globex"), none},
		{"tenant:initech", none, o("eu-west", "tenant:initech")},
		{"email_domain:*.example.com", none, o("us-east", "email_domain:*.example.com")},
		{"email_domain:*.police.gov.uk", o("uk-south", "email_domain:*.police.gov.uk"), o("eu-west", "email_domain:*.gov.uk")},
		{"email_domain:acme.de", o("eu-west", "email_domain:acme.de"), o("us-east", "email_domain:acme.de")},
		{"email_domain:example.sg", o("ap-southeast", "email_domain:example.sg"), none},
		{"country:CA", o("us-east", "country:CA"), o("eu-west", "default")},
		{"country:GB", o("uk-south", "country:GB"), o("eu-west", "country:GB")},
		{"country:NZ", o("us-east", "default"), o("ap-southeast", "country:NZ")},
		{"default", o("us-east", "default"), o("eu-west", "default")},
	}
	d := old.Diff(next)
	if d.FromVersion != 7 || d.ToVersion != 8 {
		t.Errorf("versions %d -> %d, want 7 -> 8", d.FromVersion, d.ToVersion)
	}
	if !slices.Equal(d.Changes, want) {
		t.Errorf("Changes:\n%v\nwant:\n%v", d.Changes, want)
	}

	const wantString = `policy version 7 -> 8: 11 rules change region for new sign-ups (existing users keep theirs)
  preference:uk-south           uk-south -> (no rule: falls through)
  tenant:globex                 ap-southeast -> (no rule: falls through)
  tenant:initech                (no rule: falls through) -> eu-west
  email_domain:*.example.com    (no rule: falls through) -> us-east
  email_domain:*.police.gov.uk  uk-south -> eu-west (by email_domain:*.gov.uk)
  email_domain:acme.de          eu-west -> us-east
  email_domain:example.sg       ap-southeast -> (no rule: falls through)
  country:CA                    us-east -> eu-west (by default)
  country:GB                    uk-south -> eu-west
  country:NZ                    us-east (by default) -> ap-southeast
  default                       us-east -> eu-west
`
	if got := d.String(); got != wantString {
		t.Errorf("String():\n%s\nwant:\n%s", got, wantString)
	}

	// The reverse diff has the same rules with From and To swapped.
	back := next.Diff(old)
	if len(back.Changes) != len(want) {
		t.Fatalf("reverse diff has %d changes, want %d", len(back.Changes), len(want))
	}
	for i, c := range back.Changes {
		if w := want[i]; c.Rule != w.Rule || c.From != w.To || c.To != w.From {
			t.Errorf("reverse change %d = %+v, want %+v reversed", i, c, w)
		}
	}
}

func TestDiffNoChange(t *testing.T) {
	p := mustParse(t, testPolicy)
	if d := p.Diff(p); len(d.Changes) != 0 || d.String() != "policy version 7 -> 7: no rule changes region\n" {
		t.Errorf("Diff with itself = %+v, %q", d, d.String())
	}

	// More specific rules that agree with the general ones, a renumbered
	// policy, reordered keys and a changed transfer change no region.
	a := mustParse(t, "version: 1\nregions: {a: {jurisdiction: X, countries: [DE, FR]}, b: {jurisdiction: Y}}\ndefault: b\n"+
		"email_domains: {\"*.gov.uk\": a}\n")
	b := mustParse(t, "version: 5\nregions: {b: {jurisdiction: Y}, a: {jurisdiction: X, countries: [FR, DE]}}\ndefault: b\n"+
		"email_domains: {\"*.GOV.uk\": a, \"*.police.gov.uk\": a, hmrc.gov.uk: a}\ntransfers: {travel_sessions: allow}\n")
	if d := a.Diff(b); len(d.Changes) != 0 {
		t.Errorf("Diff = %s", d)
	}
}

func TestDiffOneChange(t *testing.T) {
	a := mustParse(t, "version: 1\nregions: {a: {jurisdiction: X}, b: {jurisdiction: Y}}\ndefault: b\n")
	b := mustParse(t, "version: 2\nregions: {a: {jurisdiction: X}, b: {jurisdiction: Y}}\ndefault: a\n")
	const want = "policy version 1 -> 2: 1 rule changes region for new sign-ups (existing users keep theirs)\n  default  b -> a\n"
	if got := a.Diff(b).String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
