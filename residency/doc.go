// Package residency decides the home region of a new Domicile user.
//
// Every Domicile user has exactly one home region, the only region that
// stores and processes their personal data. For users that are already known
// the router finds the home region in its session token or in the home index;
// this package covers the remaining case, a user who does not exist yet, by
// applying a residency policy: a small YAML document owned by compliance.
//
// # Policy file
//
// A policy looks like this:
//
//	version: 1
//	regions:
//	  eu-west:      {jurisdiction: EU, countries: [DE, FR, IE, NL, ES, IT, AT, BE]}
//	  us-east:      {jurisdiction: US, countries: [US, CA]}
//	  ap-southeast: {jurisdiction: SG, countries: [SG, AU, NZ, JP]}
//	default: us-east
//	email_domains: {"acme.de": eu-west, "*.gov.uk": eu-west}
//	preference: {allowed: true, only_within: [EU]}          # optional
//	transfers: {travel_sessions: allow, analytics_export: deny} # optional
//
// [Parse] and [Load] decode a policy strictly (unknown fields are errors) and
// validate it with [Policy.Validate], which reports every problem at once in a
// [*ValidationError] so that a compliance author can fix a file in one pass.
//
// # Evaluation
//
// [Policy.Evaluate] maps the [Facts] known about a prospective user to a
// [Decision]. It is a pure function of the policy and the facts: no I/O, no
// clock, no randomness. Rules are tried in this order, and the first hit
// decides:
//
//  1. email domain: an exact domain rule ("acme.de") beats any wildcard rule;
//     a wildcard rule "*.gov.uk" matches every subdomain of gov.uk at any
//     depth but not gov.uk itself, and among matching wildcards the longest
//     suffix wins;
//  2. country: the client's ISO 3166-1 alpha-2 country, usually from geo-IP;
//  3. the policy default.
//
// Domain matching is ASCII case-insensitive. All lookup tables are built once
// when the policy is parsed, so Evaluate does a handful of map lookups and
// does not allocate. A *Policy is immutable after Parse and safe for
// concurrent use.
//
// Decisions carry a machine-readable Rule ("email_domain:*.gov.uk",
// "country:SG", "default") and a human-readable Explanation for
// "domicile residency explain". Neither contains the email address, so both
// may be logged by the router, which must not log identifiers.
//
// # Geo-IP
//
// [GeoIP] resolves a client IP address to a country code using a MaxMind
// GeoIP2/GeoLite2 country (or city) database in MMDB format.
package residency
