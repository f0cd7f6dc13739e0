// Package session keeps the server side of a logged-in user's session: who
// it belongs to, which region is their home, and when it ends. A Session
// holds identifiers only, never personal data, so any region or router may
// hold or read it without moving personal data out of the user's home.
//
// Two stores implement [Store]: [Memory], in-process, for `domicile dev` and
// tests; and [Redis], the home region's Redis in production, which keys each
// session by the SHA-256 of its id so that a dump of Redis yields no session
// id that could be replayed.
package session
