// Package ratelimit limits how often each client may call the credential
// endpoints (password login, token, MFA, reset), with one token bucket per
// client key held in memory.
//
// Callers turn a client into a 16-byte key with [KeyIP] (for an IP address)
// or [KeyString] (for an account name, client ID...), then ask
// [Limiter.Allow]. A limiter is local to one process: each router or region
// instance limits what it sees.
//
// # Algorithm
//
// Each bucket holds up to Burst tokens and refills at Rate tokens per
// second; a request takes one token. A bucket is stored as a single int64,
// its "theoretical arrival time" (tat): the instant at which the bucket
// will be full again (GCRA). With T = 1/Rate, a request at time now is
// allowed when max(tat, now) - now <= (Burst-1)*T, and then tat becomes
// max(tat, now) + T. This is exactly a token bucket with lazy refill; the
// bucket holds Burst - (tat-now)/T tokens. A bucket with tat <= now is full,
// which is the same as having no bucket at all.
//
// # Memory
//
// Keys are spread over 64 shards (by a seeded hash, so clients cannot aim at
// one shard), each behind a mutex. A shard keeps its buckets in a slice of
// at most MaxKeys/64 slots, {key, tat}, and a map from key to slot index;
// Allow does not allocate once a shard has reached its working size. When
// a new key arrives at a full shard, a clock hand scans up to 32 slots and
// reuses the first full bucket it finds, or else the one closest to full
// (smallest tat) among those scanned. So memory is bounded by about
// MaxKeys * 70 bytes (about 70 MiB for the default 1<<20 keys, measured)
// and never shrinks; and evicting a bucket that is not full forgives the client what it
// owes, so MaxKeys should comfortably exceed the number of clients active
// within Burst/Rate seconds. Under a flood of distinct keys the limiter
// stays bounded and keeps limiting the most indebted clients it sees.
package ratelimit
