// Package testmmdb builds a tiny MaxMind-format (MMDB) country database for
// tests and local development, so that nothing in the repository depends on
// downloading a real GeoIP2/GeoLite2 database.
//
// The database has type "GeoIP2-Country" and maps only the documentation
// networks listed in [Networks] (RFC 5737 and RFC 3849); every other address,
// including 8.8.8.8 and loopback, is not found. Each record has the shape of
// a GeoIP2 Country record reduced to {"country": {"iso_code": "XX"}}, which
// is what github.com/oschwald/geoip2-golang/v2 decodes into
// Country.Country.ISOCode.
//
// Output is deterministic: [Build] returns the same bytes every time.
package testmmdb
