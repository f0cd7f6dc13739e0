package residency

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"
)

// GeoIP resolves IP addresses to ISO 3166-1 alpha-2 country codes using a
// country database in MMDB format. Two kinds of database are supported:
//
//   - MaxMind GeoIP2/GeoLite2 Country, City or Enterprise databases (and the
//     DB-IP databases compatible with them), read with
//     github.com/oschwald/geoip2-golang/v2;
//   - "flat" country databases whose records are {"country_code": "XX"},
//     such as the free geo-whois-asn-country database of ip-location-db
//     (npm package @ip-location-db/geo-whois-asn-country-mmdb, installed by
//     `make geoip`; CC BY 4.0, see NOTICE), read with
//     github.com/oschwald/maxminddb-golang/v2.
//
// [OpenGeoIP] tells them apart by the database type in the file's metadata.
//
// A GeoIP is safe for concurrent use, including calling Close while lookups
// are in flight: Close waits for them, and lookups after Close return "".
// That makes it safe to swap in a fresh database and close the old one while
// the router keeps serving.
type GeoIP struct {
	mu sync.RWMutex
	// reader reads MaxMind databases: geoip2-golang recognises their types
	// and decodes whole records (Record). Country does not use it: it
	// decodes only country.iso_code from mm, the same file read through
	// the maxminddb reader geoip2-golang is built on, which costs a
	// fraction of decoding the record (the router does it per request).
	reader *geoip2.Reader    // MaxMind format; nil if flat or closed
	mm     *maxminddb.Reader // MaxMind format, path lookups; nil if flat or closed
	flat   *maxminddb.Reader // flat format; nil if MaxMind or closed
	dbType string
}

// OpenGeoIP opens the MMDB file at path (memory-mapped). The database type in
// its metadata decides how it is read:
//
//   - a MaxMind type known to geoip2-golang ("GeoIP2-Country",
//     "GeoLite2-Country", "GeoIP2-City", ...) is read as a MaxMind database;
//     a type without country data (such as "GeoLite2-ASN") is an error;
//   - any other type containing "country" in any case (ip-location-db
//     writes "country ipvAll", "country ipv4" or "country ipv6") is read as
//     a flat database, provided one of its first records has a string
//     country_code;
//   - anything else is an error.
func OpenGeoIP(path string) (*GeoIP, error) {
	r, err := geoip2.Open(path)
	if err == nil {
		// Probe once so that, say, an ASN database is rejected now rather
		// than silently returning "" for every address.
		if _, err := r.Country(netip.IPv4Unspecified()); err != nil {
			var ime geoip2.InvalidMethodError
			if errors.As(err, &ime) {
				_ = r.Close()
				return nil, fmt.Errorf("residency: open geo-IP database %s: %w", path, err)
			}
		}
		mm, err := maxminddb.Open(path)
		if err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("residency: open geo-IP database: %w", err)
		}
		return &GeoIP{reader: r, mm: mm, dbType: r.Metadata().DatabaseType}, nil
	}
	if r != nil {
		_ = r.Close()
	}
	var ute geoip2.UnknownDatabaseTypeError
	if !errors.As(err, &ute) {
		return nil, fmt.Errorf("residency: open geo-IP database: %w", err)
	}
	if !strings.Contains(strings.ToLower(ute.DatabaseType), "country") {
		return nil, fmt.Errorf("residency: open geo-IP database %s: database type %q is neither a MaxMind country database nor a flat country_code database",
			path, ute.DatabaseType)
	}
	m, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("residency: open geo-IP database: %w", err)
	}
	if err := checkFlat(m); err != nil {
		_ = m.Close()
		return nil, fmt.Errorf("residency: open geo-IP database %s (type %q): %w", path, ute.DatabaseType, err)
	}
	return &GeoIP{flat: m, dbType: m.Metadata.DatabaseType}, nil
}

// checkFlat checks that the database's records have a string country_code,
// so that a database of some other shape is rejected when it is opened
// rather than answering "" for every address. It looks at the first
// flatSample records and passes if any of them has one (or if the database
// is empty).
func checkFlat(m *maxminddb.Reader) error {
	seen := 0
	var first netip.Prefix
	for res := range m.Networks() {
		var rec map[string]any
		if err := res.Decode(&rec); err != nil {
			return fmt.Errorf("record for %s: %w", res.Prefix(), err)
		}
		if _, ok := rec["country_code"].(string); ok {
			return nil
		}
		if seen == 0 {
			first = res.Prefix()
		}
		if seen++; seen == flatSample {
			break
		}
	}
	if seen == 0 {
		return nil
	}
	return fmt.Errorf("none of the first %d records (from %s) has a country_code string: not a flat country database", seen, first)
}

// flatSample is how many records checkFlat looks at.
const flatSample = 16

// DatabaseType returns the database type recorded in the database's metadata,
// for example "GeoLite2-Country" or "country ipvAll", or "" if g is nil.
func (g *GeoIP) DatabaseType() string {
	if g == nil {
		return ""
	}
	return g.dbType
}

// Country returns the ISO 3166-1 alpha-2 code of the country where ip is
// located, upper-case, or "" if the database does not know ip, ip is not
// valid, the lookup fails, the database's answer is not two ASCII letters,
// or g is nil or closed. IPv4-mapped IPv6 addresses are looked up as IPv4.
// Country never panics.
func (g *GeoIP) Country(ip netip.Addr) string {
	if g == nil || !ip.IsValid() {
		return ""
	}
	ip = ip.Unmap().WithZone("")
	g.mu.RLock()
	defer g.mu.RUnlock()
	switch {
	case g.mm != nil:
		var code string
		if err := g.mm.Lookup(ip).DecodePath(&code, "country", "iso_code"); err != nil {
			return ""
		}
		return normCountry(code)
	case g.flat != nil:
		var code string
		if err := g.flat.Lookup(ip).DecodePath(&code, "country_code"); err != nil {
			return ""
		}
		return normCountry(code)
	}
	return ""
}

// normCountry returns code upper-cased if it is two ASCII letters, else "".
func normCountry(code string) string {
	if _, ok := countryIndex(code); !ok {
		return ""
	}
	if validCountry(code) {
		return code
	}
	return strings.ToUpper(code)
}

// Close releases the database. It waits for lookups in progress, is
// idempotent, and is safe to call on a nil *GeoIP.
func (g *GeoIP) Close() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var err error
	switch {
	case g.reader != nil:
		err = errors.Join(g.reader.Close(), g.mm.Close())
	case g.flat != nil:
		err = g.flat.Close()
	}
	g.reader, g.mm, g.flat = nil, nil, nil
	return err
}
