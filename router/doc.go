// Package router is Domicile's global edge. It resolves the home region of
// each request (from the home index for known identifiers, from the
// residency policy — email domain, geo-IP country, default — for new ones)
// and forwards the request to that region. It embeds a replica of the home
// index and serves the index's internal API, but it stores no personal
// data: identifiers appear in its logs only as keyed hashes.
package router
