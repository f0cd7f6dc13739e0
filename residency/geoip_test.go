package residency_test

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/domicile/domicile/internal/testmmdb"
	"github.com/domicile/domicile/residency"
)

// flatNetworks are the records of the flat test database, in the shape of the
// free geo-whois-asn-country database ({"country_code": "XX"}), including
// answers Country must clean up or reject.
var flatNetworks = []struct {
	cidr string
	rec  mmdbtype.Map
}{
	{"203.0.113.0/24", mmdbtype.Map{"country_code": mmdbtype.String("SG")}},
	{"192.0.2.0/24", mmdbtype.Map{"country_code": mmdbtype.String("de")}},     // lower-case: DE
	{"198.51.100.0/25", mmdbtype.Map{"country_code": mmdbtype.String("USA")}}, // not alpha-2: ""
	{"198.51.100.128/25", mmdbtype.Map{"country_code": mmdbtype.Uint32(840)}}, // not a string: ""
	{"2001:db8::/32", mmdbtype.Map{"country_code": mmdbtype.String("FR")}},    // IPv6
	{"100.64.0.0/10", mmdbtype.Map{"asn": mmdbtype.Uint32(64512)}},            // no country_code: ""
}

// writeMMDB builds an MMDB file of the given database type holding records
// and returns its path.
func writeMMDB(tb testing.TB, dbType string, records []struct {
	cidr string
	rec  mmdbtype.Map
}) string {
	tb.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            dbType,
		IncludeReservedNetworks: true,
		IPVersion:               6,
		RecordSize:              24,
	})
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range records {
		_, ipnet, err := net.ParseCIDR(r.cidr)
		if err != nil {
			tb.Fatal(err)
		}
		if err := tree.Insert(ipnet, r.rec); err != nil {
			tb.Fatalf("insert %s: %v", r.cidr, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), strings.ReplaceAll(dbType, " ", "_")+".mmdb")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func openFlatGeoIP(tb testing.TB, dbType string) *residency.GeoIP {
	tb.Helper()
	g, err := residency.OpenGeoIP(writeMMDB(tb, dbType, flatNetworks))
	if err != nil {
		tb.Fatalf("OpenGeoIP(flat %q): %v", dbType, err)
	}
	tb.Cleanup(func() { g.Close() })
	return g
}

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

// TestGeoIPFlatCountry reads flat {country_code} databases, under the type
// used in the tests' own database and the type ip-location-db actually
// writes ("country ipvAll").
func TestGeoIPFlatCountry(t *testing.T) {
	for _, dbType := range []string{"geo-whois-asn-country", "country ipvAll", "Country IPv4"} {
		t.Run(dbType, func(t *testing.T) {
			g := openFlatGeoIP(t, dbType)
			if got := g.DatabaseType(); got != dbType {
				t.Errorf("DatabaseType() = %q, want %q", got, dbType)
			}
			for _, tt := range []struct{ ip, want string }{
				{"203.0.113.9", "SG"},
				{"::ffff:203.0.113.9", "SG"},
				{"192.0.2.1", "DE"},
				{"2001:db8::1", "FR"},
				{"2001:db8::1%eth0", "FR"},
				{"198.51.100.7", ""},
				{"198.51.100.200", ""},
				{"100.64.1.1", ""},
				{"8.8.8.8", ""},
				{"::1", ""},
			} {
				if got := g.Country(netip.MustParseAddr(tt.ip)); got != tt.want {
					t.Errorf("Country(%s) = %q, want %q", tt.ip, got, tt.want)
				}
			}
			if err := g.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got := g.Country(netip.MustParseAddr("203.0.113.9")); got != "" {
				t.Errorf("Country after Close = %q", got)
			}
			if err := g.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestGeoIPDatabaseType(t *testing.T) {
	if got := openTestGeoIP(t).DatabaseType(); got != testmmdb.DatabaseType {
		t.Errorf("DatabaseType() = %q, want %q", got, testmmdb.DatabaseType)
	}
	var nilGeo *residency.GeoIP
	if got := nilGeo.DatabaseType(); got != "" {
		t.Errorf("nil GeoIP: DatabaseType() = %q", got)
	}
}

// TestGeoIPInstalledDatabase checks the free database installed by
// `make geoip`, if it is there.
func TestGeoIPInstalledDatabase(t *testing.T) {
	const path = "../data/geoip/geo-whois-asn-country.mmdb"
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not installed (run make geoip): %v", path, err)
	}
	g, err := residency.OpenGeoIP(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for ip, want := range map[string]string{"8.8.8.8": "US", "2001:4860:4860::8888": "US"} {
		if got := g.Country(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Country(%s) = %q, want %q", ip, got, want)
		}
	}
	t.Logf("%s: type %q, 203.0.113.9 -> %q", path, g.DatabaseType(), g.Country(netip.MustParseAddr("203.0.113.9")))
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
	countryRec := []struct {
		cidr string
		rec  mmdbtype.Map
	}{{"203.0.113.0/24", mmdbtype.Map{"country_code": mmdbtype.String("SG")}}}
	asnRec := []struct {
		cidr string
		rec  mmdbtype.Map
	}{{"203.0.113.0/24", mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(64512)}}}
	for name, path := range map[string]string{
		"missing":                   filepath.Join(dir, "missing.mmdb"),
		"garbage":                   garbage,
		"empty":                     writeFile(t, filepath.Join(dir, "empty.mmdb"), nil),
		"MaxMind ASN database":      writeMMDB(t, "GeoLite2-ASN", asnRec),
		"unknown type":              writeMMDB(t, "Acme-City", countryRec),
		"country type, other shape": writeMMDB(t, "geo-whois-asn-country", asnRec),
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
	for _, db := range []struct {
		name string
		g    *residency.GeoIP
	}{
		{"maxmind", openTestGeoIP(b)},
		{"flat", openFlatGeoIP(b, "geo-whois-asn-country")},
	} {
		for _, bc := range []struct{ name, ip string }{
			{"ipv4_hit", "203.0.113.9"},
			{"ipv6_hit", "2001:db8::1"},
			{"miss", "8.8.8.8"},
		} {
			ip := netip.MustParseAddr(bc.ip)
			b.Run(db.name+"/"+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					sinkCountry = db.g.Country(ip)
				}
			})
		}
	}
}
