// Package routesig signs and verifies the Domicile-Route header, the proof
// that a request reaching a region came through the global router and was
// meant for that region.
//
// The router holds a [Signer] and adds the header to every request it
// forwards; each region holds a [Verifier] and refuses requests whose header
// is missing, forged, stale, replayed or addressed to another region. Both
// sides share one secret key (at least 32 bytes). The package is
// framework-free: wiring into HTTP middleware is left to the caller.
//
// # Header format (version 1)
//
//	Domicile-Route: v1;r=<region>;t=<unix millis>;n=<nonce>;s=<mac>
//
// where:
//
//   - region is the home region the router chose, [A-Za-z0-9._-]{1,64};
//   - t is the signing time in Unix milliseconds, decimal, no sign and no
//     leading zeros;
//   - nonce is <routerID>.<16 hex digits>.<counter in base 36>: the hex part
//     is random per Signer, so a restarted router never repeats a nonce even
//     though its counter starts again at 1;
//   - mac is the 32-byte HMAC-SHA256 in unpadded base64url (43 characters).
//
// The fields appear in exactly this order; anything else is malformed.
//
// # What the MAC covers
//
// The MAC is HMAC-SHA256(key, m) where m is the domain-separation string
// "domicile-route\x00" followed by, in order, the version ("v1"), the HTTP
// method, the path, the region, the timestamp and the nonce. Every string
// field is encoded as a 4-byte big-endian length followed by its bytes, and
// the timestamp as an 8-byte big-endian signed integer, so the encoding is
// unambiguous whatever bytes the fields contain. The Verifier nevertheless
// rejects methods and paths containing control characters (CR, LF, NUL...),
// which never appear in a well-formed request line.
//
// "Path" is whatever string both sides agree to sign. Use the request-target
// as the region will see it, r.URL.RequestURI() (path plus query), so that
// neither the path nor the query can be changed in transit; if the router
// rewrites the path, sign the rewritten one.
//
// # Replay protection
//
// A Verifier accepts a timestamp t only while |now - t| <= window. A header
// first accepted at time a therefore carries t <= a+window, and can pass the
// timestamp check again only until t+window <= a+2*window: a nonce must be
// remembered for 2*window after it is first seen, and no longer.
//
// The replay cache is split into 64 shards, each holding two generations
// (current and previous) of nonce hashes. A nonce is a replay if it is in
// either generation. A shard's generations rotate every 2*window (the
// previous generation is dropped, the current becomes the previous), so
// every nonce is kept for at least 2*window and at most 4*window. Rotating
// every window would not be enough: a nonce signed by a router whose clock
// is ahead (t = a+window) and recorded just before a rotation would be
// forgotten after a little more than one window while its timestamp is still
// acceptable.
//
// Memory is bounded both in time (the rotation above) and in size: a
// Verifier keeps at most [DefaultMaxNonces] nonces in all. When a shard's
// current generation is full, Verify fails closed with [ErrBusy] rather than
// forget nonces early. Only validly signed headers reach the cache (the
// signature is checked first), so forged traffic can never fill it; the
// bound protects against a router misbehaving or a sustained load above
// DefaultMaxNonces / (4*window) requests per second (about 35,000 per second
// with the default 30 s window).
package routesig
