// Package homeindex is the global, Raft-replicated index that maps a keyed
// hash of a user identifier (email, phone, username) to the user's home
// region. It is the only global state in Domicile and holds no personal
// data: keys are HMAC-SHA256(index key, normalised identifier)[:16].
//
// Every router embeds a replica (a Node) and answers lookups from memory.
// Writes (Claim, Release) are linearizable: they are committed through the
// Raft leader; a follower forwards them to the leader over the internal
// HTTP API (see Handler). Regional nodes write through a Client that speaks
// that API to any router.
package homeindex
