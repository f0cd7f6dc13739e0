// Package store is a region's SQL storage: the only place a user's personal
// data is written. One small API, [DB], runs on three backends chosen by
// [Config]: SQLite files (the embedded default for `domicile dev`, no cgo,
// nothing to install), PostgreSQL and CockroachDB (production, one database
// per residency zone).
//
// Every write goes through internal/sqltx, so transactions that lose a
// serialization race are retried whole and a failed commit is never reported
// as a success. Open migrates the schema forward from a versioned
// schema_migrations table; reopening is a no-op.
//
// # Personal data and crypto-shredding
//
// Every personal-data column (email, name, the profile attributes, and the
// password hash) is stored encrypted with AES-256-GCM under a data key of
// the user's own, with the user id and column name as additional data, so a
// ciphertext is bound to its user and column. Data keys are kept wrapped by
// the region's master key (Config.MasterKey) in a key store apart from the
// main database (see Config for where it is for each driver), so that the
// database's backups do not hold them. [DB.DeleteUser] deletes the user's
// rows and then their data key: from then on no copy of their rows, in a
// backup, a replica or a dump, can be decrypted. Logins find users through a
// blind index, an HMAC of the normalised email under a key derived from the
// master key.
//
// The master key must therefore never change for the life of the data, and
// losing it or the key store loses every user's personal data: back the key
// store up on its own schedule, or not at all if restoring a backup must not
// bring deleted users back.
//
// Passkeys (WebAuthn credentials, [DB.AddPasskey]) are looked up by their
// credential id, which with the public key and the signature counter is
// not personal data and stays in clear; the name a user gives a passkey is
// sealed like the rest. The challenges of the WebAuthn ceremonies already
// answered are kept until they expire ([DB.UseChallenge]), so that an
// answer cannot be replayed on any node of the region.
//
// Besides accounts the store keeps single-use tokens (only their SHA-256),
// failed-login records for lockout, and an append-only audit log whose
// entries form a SHA-256 hash chain ([DB.AppendAudit], [DB.VerifyAudit]).
// The audit log outlives the users it names, so it holds ids, never personal
// data. [DB.ExportUser] gathers everything stored about a user.
//
// Callers that only need users depend on the [Users] interface.
package store
