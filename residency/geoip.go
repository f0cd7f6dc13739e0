package residency

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/oschwald/geoip2-golang/v2"
)

// GeoIP resolves IP addresses to ISO 3166-1 alpha-2 country codes using a
// MaxMind database (GeoIP2/GeoLite2 Country, City or Enterprise) in MMDB
// format. It is safe for concurrent use, including calling Close while
// lookups are in flight: Close waits for them, and lookups after Close
// return "". That makes it safe to swap in a fresh database and close the
// old one while the router keeps serving.
type GeoIP struct {
	mu     sync.RWMutex
	reader *geoip2.Reader // nil once closed
}

// OpenGeoIP opens the MMDB file at path (memory-mapped). It fails if the file
// is not a MaxMind database or its type does not support country lookups.
func OpenGeoIP(path string) (*GeoIP, error) {
	r, err := geoip2.Open(path)
	if err != nil {
		if r != nil {
			_ = r.Close()
		}
		return nil, fmt.Errorf("residency: open geo-IP database: %w", err)
	}
	// Probe once so that, say, an ASN database is rejected now rather than
	// silently returning "" for every address.
	if _, err := r.Country(netip.IPv4Unspecified()); err != nil {
		var ime geoip2.InvalidMethodError
		if errors.As(err, &ime) {
			_ = r.Close()
			return nil, fmt.Errorf("residency: open geo-IP database %s: %w", path, err)
		}
	}
	return &GeoIP{reader: r}, nil
}

// Country returns the ISO 3166-1 alpha-2 code of the country where ip is
// located, upper-case, or "" if the database does not know ip, ip is not
// valid, the lookup fails, or g is nil or closed. IPv4-mapped IPv6 addresses
// are looked up as IPv4. Country never panics.
func (g *GeoIP) Country(ip netip.Addr) string {
	if g == nil || !ip.IsValid() {
		return ""
	}
	ip = ip.Unmap().WithZone("")
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.reader == nil {
		return ""
	}
	rec, err := g.reader.Country(ip)
	if err != nil || rec == nil {
		return ""
	}
	return rec.Country.ISOCode
}

// Close releases the database. It waits for lookups in progress, is
// idempotent, and is safe to call on a nil *GeoIP.
func (g *GeoIP) Close() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reader == nil {
		return nil
	}
	err := g.reader.Close()
	g.reader = nil
	return err
}
