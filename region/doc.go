// Package region is a regional Domicile node: the only place where a user's
// personal data (profile, credentials, sessions) is stored and processed.
// It serves the identity flows that routers forward to it, keeps its own
// database (see region/store) and session store, and claims identifiers in
// the global home index before it writes a user, so that an email can exist
// in one region only.
//
// With Config.OIDC it is also an OpenID Provider (region/oidc): the
// protocol endpoints under /oauth2/ and /userinfo, its signing keys at
// /internal/oidc-keys, and the OAuth client registry under
// /admin/v1/clients. An authorization request without a session is sent to
// the hosted login page, which returns to it once the user has signed in.
package region
