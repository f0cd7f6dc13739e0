package residency

import "slices"

// Countries returns the countries the policy maps to region, sorted.
func (p *Policy) Countries(region string) []string {
	r, ok := p.doc.Regions[region]
	if !ok {
		return nil
	}
	out := slices.Clone(r.Countries)
	slices.Sort(out)
	return out
}
