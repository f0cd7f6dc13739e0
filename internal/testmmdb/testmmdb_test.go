package testmmdb_test

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/domicile/domicile/internal/testmmdb"
	"github.com/oschwald/geoip2-golang/v2"
)

func TestBuildLookups(t *testing.T) {
	data, err := testmmdb.Build()
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	r, err := geoip2.OpenBytes(data)
	if err != nil {
		t.Fatalf("geoip2.OpenBytes: %v", err)
	}
	defer r.Close()
	if got := r.Metadata().DatabaseType; got != testmmdb.DatabaseType {
		t.Errorf("DatabaseType = %q, want %q", got, testmmdb.DatabaseType)
	}

	// Every listed network maps to its country at both ends of its range.
	for _, n := range testmmdb.Networks {
		prefix := netip.MustParsePrefix(n.CIDR)
		first := prefix.Addr()
		last := lastAddr(prefix)
		for _, ip := range []netip.Addr{first, last} {
			rec, err := r.Country(ip)
			if err != nil {
				t.Fatalf("Country(%s): %v", ip, err)
			}
			if rec.Country.ISOCode != n.Country {
				t.Errorf("Country(%s).ISOCode = %q, want %q", ip, rec.Country.ISOCode, n.Country)
			}
		}
	}
	// Nothing else is in the database.
	for _, s := range []string{"8.8.8.8", "127.0.0.1", "192.0.3.0", "::1", "2001:db9::"} {
		rec, err := r.Country(netip.MustParseAddr(s))
		if err != nil {
			t.Fatalf("Country(%s): %v", s, err)
		}
		if rec.Country.ISOCode != "" || rec.HasData() {
			t.Errorf("Country(%s) = %+v, want no data", s, rec.Country)
		}
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	a, err := testmmdb.Build()
	if err != nil {
		t.Fatal(err)
	}
	b, err := testmmdb.Build()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two Builds returned different bytes")
	}
}

func TestWrite(t *testing.T) {
	want, err := testmmdb.Build()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "country.mmdb")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T)
	}{
		{"creates parent directories", func(t *testing.T) {
			if err := os.RemoveAll(filepath.Dir(dir)); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaces an existing file", func(t *testing.T) {
			if err := os.WriteFile(path, []byte("old contents"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup(t)
			if err := testmmdb.Write(path); err != nil {
				t.Fatalf("Write: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("file contents (%d bytes) differ from Build (%d bytes)", len(got), len(want))
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm != 0o644 {
				t.Errorf("mode = %v, want 0644", perm)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != "country.mmdb" {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %q, want only country.mmdb (temporary file left behind?)", names)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	// The parent "directory" is a regular file, so Write must fail.
	parent := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(parent, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := testmmdb.Write(filepath.Join(parent, "country.mmdb")); err == nil {
		t.Error("Write under a regular file succeeded, want error")
	}
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
