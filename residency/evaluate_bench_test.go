package residency_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/domicile/domicile/residency"
)

// largePolicy returns a policy with 10 regions, 250 countries, 1,000
// email-domain rules (500 exact, 500 wildcard), 100 tenant rules and a
// preference allowed within 3 of the 10 jurisdictions.
func largePolicy(tb testing.TB) *residency.Policy {
	tb.Helper()
	const regions = 10
	var b strings.Builder
	b.WriteString("version: 1\nregions:\n")
	for r := range regions {
		fmt.Fprintf(&b, "  r%d:\n    jurisdiction: J%d\n    countries: [", r, r)
		first := true
		for c := range 250 {
			if c%regions != r {
				continue
			}
			if !first {
				b.WriteString(", ")
			}
			first = false
			b.WriteByte(byte('A' + c/26))
			b.WriteByte(byte('A' + c%26))
		}
		b.WriteString("]\n")
	}
	b.WriteString("default: r0\nemail_domains:\n")
	for i := range 500 {
		fmt.Fprintf(&b, "  tenant%d.example.com: r%d\n", i, i%regions)
		fmt.Fprintf(&b, "  \"*.dept%d.example.org\": r%d\n", i, (i+1)%regions)
	}
	b.WriteString("tenants:\n")
	for i := range 100 {
		fmt.Fprintf(&b, "  tenant-%d: r%d\n", i, (i+2)%regions)
	}
	b.WriteString("preference: {allowed: true, only_within: [J0, J1, J2]}\n")
	p, err := residency.Parse([]byte(b.String()))
	if err != nil {
		tb.Fatalf("Parse(large policy): %v", err)
	}
	return p
}

var benchCases = []struct {
	name  string
	facts residency.Facts
	rule  string
}{
	{"exact", residency.Facts{Email: "user@tenant250.example.com", Country: "AB"}, "email_domain:tenant250.example.com"},
	{"exact_mixed_case", residency.Facts{Email: "User@Tenant250.Example.COM"}, "email_domain:tenant250.example.com"},
	{"wildcard_deep", residency.Facts{Email: "user@a.b.c.dept499.example.org"}, "email_domain:*.dept499.example.org"},
	{"country", residency.Facts{Email: "user@gmail.com", Country: "JP"}, "country:JP"},
	{"default", residency.Facts{Email: "user@mail.provider.example.net", Country: "ZZ"}, "default"},
	{"no_facts", residency.Facts{}, "default"},
	{"tenant", residency.Facts{Email: "user@tenant250.example.com", Country: "JP", Tenant: "tenant-42"}, "tenant:tenant-42"},
	{"unknown_tenant", residency.Facts{Email: "user@a.dept7.example.org", Tenant: "tenant-x"}, "email_domain:*.dept7.example.org"},
	{"preference", residency.Facts{Email: "user@tenant250.example.com", Tenant: "tenant-42", Preference: "r1"}, "preference:r1"},
}

// ignoredPreference is the one case in which Evaluate allocates: it prefixes
// the explanation of the decision with the reason the preference was ignored.
var ignoredPreference = struct {
	facts residency.Facts
	rule  string
}{residency.Facts{Email: "user@tenant250.example.com", Preference: "r9"}, "email_domain:tenant250.example.com"}

func TestLargePolicy(t *testing.T) {
	p := largePolicy(t)
	if got := len(p.Regions()); got != 10 {
		t.Fatalf("len(Regions()) = %d, want 10", got)
	}
	if got, want := p.Summary(), "version 1, 10 regions, 250 countries, 1000 email-domain rules, 100 tenant rules, default r0, preference allowed within [J0 J1 J2]"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
	if got := p.Evaluate(ignoredPreference.facts); got.Rule != ignoredPreference.rule || !strings.Contains(got.Explanation, "ignored") {
		t.Errorf("ignored preference: Evaluate = %+v", got)
	}
	for _, bc := range benchCases {
		got := p.Evaluate(bc.facts)
		if got.Rule != bc.rule || !p.HasRegion(got.Region) {
			t.Errorf("%s: Evaluate(%+v) = %+v, want rule %s", bc.name, bc.facts, got, bc.rule)
		}
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	p := largePolicy(t)
	for _, bc := range benchCases {
		allocs := testing.AllocsPerRun(100, func() { _ = p.Evaluate(bc.facts) })
		if allocs != 0 {
			t.Errorf("%s: Evaluate allocates %v times per call, want 0", bc.name, allocs)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = p.Evaluate(ignoredPreference.facts) }); allocs != 1 {
		t.Errorf("ignored preference: Evaluate allocates %v times per call, want 1", allocs)
	}
}

var sinkDecision residency.Decision

func BenchmarkEvaluate(b *testing.B) {
	p := largePolicy(b)
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkDecision = p.Evaluate(bc.facts)
			}
		})
	}
	b.Run("preference_ignored", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkDecision = p.Evaluate(ignoredPreference.facts)
		}
	})
}
