// Package oidc is a region's OpenID Provider: OAuth 2.0 and OpenID Connect
// on github.com/zitadel/oidc/v3's op package, which parses and routes the
// protocol requests; this package supplies its Server and Storage.
//
// Every region is the same issuer (the deployment's public URL, served by
// the routers) and signs with keys of its own (EdDSA, kid "<region>-<n>",
// see KeyRing); the routers publish the union of the regions' keys. Codes
// and refresh tokens are opaque, "<region>.<random>", so a router sends
// their exchange to the region that issued them; access tokens are JWTs
// (RFC 9068, typ "at+jwt") whose sub is the region-prefixed user id.
//
// A request for a user of this region is served in full. A travelling
// user's authorization with prompt=none and a live session of another
// region (a session token signed by their home region) is answered here
// with identity only: sub, sid, auth_time and amr, no personal data, no
// refresh token, and no read of the user store.
//
// Codes, refresh token families and revocations are kept in a State:
// Redis in production (the home region's), memory in development.
//
// What the op package does not do, and this package adds: the RFC 9207
// iss parameter in authorization responses, exact redirect URI matching
// (no loopback port leniency), S256 PKCE required of public clients and
// always checked when a challenge was sent, single-use codes whose reuse
// revokes what they issued, refresh token rotation with reuse detection,
// at+jwt access tokens, revocation that reaches access tokens, and
// introspection of refresh tokens.
package oidc
