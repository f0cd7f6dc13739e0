package residency_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/domicile/domicile/residency"
)

// largePolicy returns a policy with 10 regions, 250 countries and 1,000
// email-domain rules (500 exact, 500 wildcard).
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
}

func TestLargePolicy(t *testing.T) {
	p := largePolicy(t)
	if got := len(p.Regions()); got != 10 {
		t.Fatalf("len(Regions()) = %d, want 10", got)
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
}
