package testmmdb

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Networks lists the networks in the database and their ISO 3166-1 alpha-2
// country codes.
var Networks = []struct{ CIDR, Country string }{
	{"192.0.2.0/24", "DE"},    // TEST-NET-1
	{"198.51.100.0/24", "US"}, // TEST-NET-2
	{"203.0.113.0/24", "SG"},  // TEST-NET-3
	{"2001:db8::/32", "FR"},   // IPv6 documentation prefix
}

// DatabaseType is the database_type recorded in the metadata.
const DatabaseType = "GeoIP2-Country"

// buildEpoch is a fixed build timestamp (2025-01-01T00:00:00Z) so that the
// output does not depend on the clock.
const buildEpoch = 1735689600

// Build returns the bytes of an IPv6 (IPv4-compatible) MMDB country database
// containing [Networks].
func Build() ([]byte, error) {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		BuildEpoch:   buildEpoch,
		DatabaseType: DatabaseType,
		Description: map[string]string{
			"en": "Domicile test country database (documentation networks only)",
		},
		// The documentation networks are reserved; without this mmdbwriter
		// refuses to insert them.
		IncludeReservedNetworks: true,
		IPVersion:               6,
		Languages:               []string{"en"},
		RecordSize:              24,
	})
	if err != nil {
		return nil, fmt.Errorf("testmmdb: new tree: %w", err)
	}
	for _, n := range Networks {
		_, ipnet, err := net.ParseCIDR(n.CIDR)
		if err != nil {
			return nil, fmt.Errorf("testmmdb: network %s: %w", n.CIDR, err)
		}
		rec := mmdbtype.Map{
			"country": mmdbtype.Map{"iso_code": mmdbtype.String(n.Country)},
		}
		if err := tree.Insert(ipnet, rec); err != nil {
			return nil, fmt.Errorf("testmmdb: insert %s: %w", n.CIDR, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("testmmdb: write: %w", err)
	}
	return buf.Bytes(), nil
}

// Write builds the database and writes it to path, creating the parent
// directory if needed. The file is written to a temporary file in the same
// directory and renamed into place, so readers never see a partial database.
func Write(path string) (err error) {
	data, err := Build()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testmmdb: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("testmmdb: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("testmmdb: %w", err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("testmmdb: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("testmmdb: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("testmmdb: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("testmmdb: %w", err)
	}
	return nil
}
