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
//	tenants: {acme-corp: eu-west}                             # optional
//	preference: {allowed: true, only_within: [EU]}            # optional
//	transfers: {travel_sessions: allow, analytics_export: deny} # optional
//
// [Parse] and [Load] decode a policy strictly (unknown fields are errors) and
// validate it with [Policy.Validate], which reports every problem at once in a
// [*ValidationError] so that a compliance author can fix a file in one pass.
// Each [Problem] names the field and the line of the file it is on.
//
// # Evaluation
//
// [Policy.Evaluate] maps the [Facts] known about a prospective user to a
// [Decision]. It is a pure function of the policy and the facts: no I/O, no
// clock, no randomness. Rules are tried in this order, and the first hit
// decides:
//
//  1. preference: the region the user asked for, if the policy's preference
//     section allows it (allowed: true, and the region's jurisdiction is in
//     only_within, or only_within is empty). A preference the policy does not
//     allow is ignored, and the explanation of the decision says so;
//  2. tenant: the region the tenants section assigns to the user's tenant;
//  3. email domain: an exact domain rule ("acme.de") beats any wildcard rule;
//     a wildcard rule "*.gov.uk" matches every subdomain of gov.uk at any
//     depth but not gov.uk itself, and among matching wildcards the longest
//     suffix wins;
//  4. country: the client's ISO 3166-1 alpha-2 country, usually from geo-IP;
//  5. the policy default.
//
// The design (shared/design.md) orders preference, email domain, country,
// default; tenant rules are not in it. They come right after the preference
// because a tenant rule is a contract with one customer organisation, more
// specific than an email domain (a tenant's users may sign up with any
// address, including a gmail.com one), while a user's allowed preference
// still wins so that, for example, a tenant's employee working in the EU can
// be homed there when the policy allows EU preferences.
//
// Domain matching is ASCII case-insensitive; tenant ids and preferred regions
// are identifiers and are matched exactly. All lookup tables are built once
// when the policy is parsed, so Evaluate does a handful of map lookups and
// does not allocate (except to explain an ignored preference). A *Policy is
// immutable after Parse and safe for concurrent use.
//
// Decisions carry a machine-readable Rule ("preference:eu-west",
// "tenant:acme-corp", "email_domain:*.gov.uk", "country:SG", "default") and
// a human-readable Explanation for "domicile residency explain". Neither
// contains the email address, so both may be logged by the router, which
// must not log identifiers.
//
// [Policy.Diff] lists the rules whose outcome differs between two policies,
// the impact of a change before it is applied.
//
// # Geo-IP
//
// [GeoIP] resolves a client IP address to a country code using a country
// database in MMDB format: a MaxMind GeoIP2/GeoLite2 country (or city)
// database, or a flat {country_code} database such as the free
// geo-whois-asn-country database installed by `make geoip`.
package residency
