// Package region is a regional Domicile node: the only place where a user's
// personal data (profile, credentials, sessions) is stored and processed.
// It serves the identity flows that routers forward to it, keeps its own
// database (see region/store) and session store, and claims identifiers in
// the global home index before it writes a user, so that an email can exist
// in one region only.
package region
