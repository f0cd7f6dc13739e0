// Package router is Domicile's global edge. It resolves the home region of
// each request (from a session token, from the home index for known
// identifiers, from the residency policy — email domain, geo-IP country,
// default — for new ones) and forwards the request to that region. The
// OAuth endpoints are routed by the region their token names (oauth.go),
// and identity-only SSO of travelling users goes to the router's local
// region. It serves the global OpenID Connect discovery document and the
// union JWKS of every region's keys itself (oidc.go). It embeds a replica
// of the home index and serves the index's internal API, but it stores no
// personal data: identifiers appear in its logs only as keyed hashes.
package router
