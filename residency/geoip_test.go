package residency_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/domicile/domicile/internal/testmmdb"
	"github.com/domicile/domicile/residency"
)

func openTestGeoIP(tb testing.TB) *residency.GeoIP {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "geo", "country.mmdb")
	if err := testmmdb.Write(path); err != nil {
		tb.Fatalf("testmmdb.Write: %v", err)
	}
	g, err := residency.OpenGeoIP(path)
	if err != nil {
		tb.Fatalf("OpenGeoIP: %v", err)
	}
	tb.Cleanup(func() {
		if err := g.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return g
}

func TestGeoIPCountry(t *testing.T) {
	g := openTestGeoIP(t)
	tests := []struct {
		ip   string
		want string
	}{
		{"203.0.113.9", "SG"},
		{"203.0.113.0", "SG"},
		{"203.0.113.255", "SG"},
		{"192.0.2.1", "DE"},
		{"198.51.100.7", "US"},
		{"2001:db8::1", "FR"},
		{"2001:db8:ffff:ffff::1", "FR"},
		{"2001:db8::1%eth0", "FR"},
		{"::ffff:203.0.113.9", "SG"}, // IPv4-mapped IPv6
		{"203.0.114.1", ""},          // just outside TEST-NET-3
		{"2001:db9::1", ""},          // just outside 2001:db8::/32
		{"8.8.8.8", ""},
		{"127.0.0.1", ""},
		{"::1", ""},
		{"0.0.0.0", ""},
		{"255.255.255.255", ""},
	}
	for _, tt := range tests {
		if got := g.Country(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("Country(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
	if got := g.Country(netip.Addr{}); got != "" {
		t.Errorf("Country(invalid Addr) = %q, want \"\"", got)
	}
}

func TestGeoIPWithPolicy(t *testing.T) {
	g := openTestGeoIP(t)
	p, err := residency.Load(devPolicyPath)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ ip, region, rule string }{
		{"203.0.113.9", "ap-southeast", "country:SG"},
		{"192.0.2.1", "eu-west", "country:DE"},
		{"2001:db8::1", "eu-west", "country:FR"},
		{"198.51.100.7", "us-east", "country:US"},
		{"8.8.8.8", "us-east", "default"},
	}
	for _, tt := range tests {
		d := p.Evaluate(residency.Facts{Email: "someone@gmail.com", Country: g.Country(netip.MustParseAddr(tt.ip))})
		if d.Region != tt.region || d.Rule != tt.rule {
			t.Errorf("%s: Evaluate = {%s %s}, want {%s %s}", tt.ip, d.Region, d.Rule, tt.region, tt.rule)
		}
	}
}

func TestGeoIPNilAndClosed(t *testing.T) {
	ip := netip.MustParseAddr("203.0.113.9")

	var nilGeo *residency.GeoIP
	if got := nilGeo.Country(ip); got != "" {
		t.Errorf("nil GeoIP: Country = %q, want \"\"", got)
	}
	if err := nilGeo.Close(); err != nil {
		t.Errorf("nil GeoIP: Close = %v, want nil", err)
	}

	g := openTestGeoIP(t) // also closed by cleanup: Close must be idempotent
	if got := g.Country(ip); got != "SG" {
		t.Fatalf("Country before Close = %q, want SG", got)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := g.Country(ip); got != "" {
		t.Errorf("Country after Close = %q, want \"\"", got)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestGeoIPCloseDuringLookups(t *testing.T) {
	g := openTestGeoIP(t)
	ip := netip.MustParseAddr("192.0.2.1")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 2000 {
				if got := g.Country(ip); got != "DE" && got != "" {
					t.Errorf("Country = %q, want DE or \"\" (closed)", got)
					return
				}
			}
		})
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
}

func TestOpenGeoIPErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.mmdb")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a maxmind database\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"missing": filepath.Join(dir, "missing.mmdb"),
		"garbage": garbage,
		"empty":   writeFile(t, filepath.Join(dir, "empty.mmdb"), nil),
	} {
		g, err := residency.OpenGeoIP(path)
		if err == nil {
			g.Close()
			t.Errorf("%s: OpenGeoIP succeeded, want error", name)
			continue
		}
		if g != nil {
			t.Errorf("%s: OpenGeoIP returned a GeoIP with error %v", name, err)
		}
		if !strings.HasPrefix(err.Error(), "residency: open geo-IP database") {
			t.Errorf("%s: error %q lacks package prefix", name, err)
		}
	}
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var sinkCountry string

func BenchmarkGeoIPCountry(b *testing.B) {
	g := openTestGeoIP(b)
	for _, bc := range []struct{ name, ip string }{
		{"ipv4_hit", "203.0.113.9"},
		{"ipv6_hit", "2001:db8::1"},
		{"miss", "8.8.8.8"},
	} {
		ip := netip.MustParseAddr(bc.ip)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkCountry = g.Country(ip)
			}
		})
	}
}
