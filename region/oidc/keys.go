package oidc

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/domicile/domicile/internal/keyfile"
	"github.com/domicile/domicile/session"
)

// A KeyRing holds a region's OpenID signing keys: Ed25519 (EdDSA, which
// coreos/go-oidc and go-jose verify), kid "<region>-<n>" as session keys
// are named, apart from the session key. One key signs; the keys it
// replaced stay published until every token they signed has expired
// (Retention, at least MaxTokenTTL), then they are dropped.
//
// The ring lives in a file (mode 0600) that every node of the region
// shares: Rotate writes it, Reload picks up another node's rotation.
type KeyRing struct {
	region    string
	path      string // "" for a ring kept in memory (tests)
	retention time.Duration

	mu      sync.RWMutex
	keys    []*ringKey // newest first; keys[0] signs
	modTime time.Time  // of the file when last read or written
}

// ringKey is one key of the ring.
type ringKey struct {
	kid     string
	n       int
	priv    ed25519.PrivateKey
	pub     ed25519.PublicKey
	created time.Time
	retired time.Time // zero for the signing key
	// atSigner signs access tokens (typ at+jwt) with this key.
	atSigner jose.Signer
}

// keyRingFile is the JSON of the file.
type keyRingFile struct {
	Region string        `json:"region"`
	Keys   []keyFileItem `json:"keys"`
}

type keyFileItem struct {
	KID     string     `json:"kid"`
	Alg     string     `json:"alg"`  // "EdDSA"
	Seed    string     `json:"seed"` // RFC 8032 seed, base64url
	Created time.Time  `json:"created_at"`
	Retired *time.Time `json:"retired_at,omitempty"`
}

// NewKeyRing returns a ring of one new key kept in memory.
func NewKeyRing(region string, retention time.Duration) (*KeyRing, error) {
	k := &KeyRing{region: region, retention: max(retention, MaxTokenTTL)}
	key, err := newRingKey(region, 1, time.Now())
	if err != nil {
		return nil, err
	}
	k.keys = []*ringKey{key}
	return k, nil
}

// LoadOrCreateKeyRing reads the ring in the file at path, or creates the
// file (mode 0600, exclusively, so that nodes starting at once agree) with
// one new key "<region>-1". A file of another region is an error.
func LoadOrCreateKeyRing(path, region string, retention time.Duration) (*KeyRing, error) {
	if _, err := session.KID(region, 1); err != nil {
		return nil, err
	}
	k := &KeyRing{region: region, path: path, retention: max(retention, MaxTokenTTL)}
	err := k.Reload()
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	key, err := newRingKey(region, 1, time.Now())
	if err != nil {
		return nil, err
	}
	b, err := marshalRing(region, []*ringKey{key})
	if err != nil {
		return nil, err
	}
	// If another node made it first, use theirs.
	if _, err := keyfile.Create(path, b); err != nil {
		return nil, fmt.Errorf("oidc: create key file: %w", err)
	}
	return k, k.Reload()
}

func newRingKey(region string, n int, now time.Time) (*ringKey, error) {
	kid, err := session.KID(region, n)
	if err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("oidc: generate key: %w", err)
	}
	return finishKey(&ringKey{kid: kid, n: n, priv: priv, pub: pub, created: now.UTC().Truncate(time.Second)})
}

// finishKey makes the key's access-token signer.
func finishKey(k *ringKey) (*ringKey, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k.priv},
		(&jose.SignerOptions{}).WithType(AccessTokenType).WithHeader(jose.HeaderKey("kid"), k.kid))
	if err != nil {
		return nil, fmt.Errorf("oidc: key %s: %w", k.kid, err)
	}
	k.atSigner = s
	return k, nil
}

func marshalRing(region string, keys []*ringKey) ([]byte, error) {
	f := keyRingFile{Region: region}
	for _, k := range keys {
		it := keyFileItem{KID: k.kid, Alg: "EdDSA", Seed: base64.RawURLEncoding.EncodeToString(k.priv.Seed()), Created: k.created}
		if !k.retired.IsZero() {
			r := k.retired
			it.Retired = &r
		}
		f.Keys = append(f.Keys, it)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("oidc: key file: %w", err)
	}
	return append(b, '\n'), nil
}

func unmarshalRing(b []byte, region string) ([]*ringKey, error) {
	var f keyRingFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("oidc: key file: %w", err)
	}
	if f.Region != region {
		return nil, fmt.Errorf("oidc: key file holds the keys of region %q, want %q", f.Region, region)
	}
	var keys []*ringKey
	seen := map[string]bool{}
	for _, it := range f.Keys {
		r, err := session.KIDRegion(it.KID)
		if err != nil {
			return nil, fmt.Errorf("oidc: key file: %w", err)
		}
		if r != region || seen[it.KID] {
			return nil, fmt.Errorf("oidc: key file: kid %q: of another region or twice", it.KID)
		}
		seen[it.KID] = true
		n, _ := strconv.Atoi(it.KID[len(region)+1:]) // KIDRegion checked it
		if it.Alg != "EdDSA" {
			return nil, fmt.Errorf("oidc: key file: kid %s: alg %q, want EdDSA", it.KID, it.Alg)
		}
		seed, err := base64.RawURLEncoding.Strict().DecodeString(it.Seed)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("oidc: key file: kid %s: seed is not %d bytes of base64url", it.KID, ed25519.SeedSize)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		k := &ringKey{kid: it.KID, n: n, priv: priv, pub: priv.Public().(ed25519.PublicKey), created: it.Created}
		if it.Retired != nil {
			k.retired = *it.Retired
		}
		if k, err = finishKey(k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b *ringKey) int { return b.n - a.n })
	if len(keys) == 0 || !keys[0].retired.IsZero() {
		return nil, errors.New("oidc: key file: no signing key (the newest key is retired)")
	}
	for _, k := range keys[1:] {
		if k.retired.IsZero() {
			return nil, fmt.Errorf("oidc: key file: kid %s is older than the signing key but not retired", k.kid)
		}
	}
	return keys, nil
}

// Reload reads the file again if it changed since it was last read (a
// rotation made by another node of the region).
func (k *KeyRing) Reload() error {
	if k.path == "" {
		return nil
	}
	st, err := os.Stat(k.path)
	if err != nil {
		return fmt.Errorf("oidc: key file: %w", err)
	}
	k.mu.RLock()
	same := !k.modTime.IsZero() && st.ModTime().Equal(k.modTime)
	k.mu.RUnlock()
	if same {
		return nil
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("oidc: key file: %w", err)
	}
	keys, err := unmarshalRing(b, k.region)
	if err != nil {
		return fmt.Errorf("%w (in %s)", err, k.path)
	}
	k.mu.Lock()
	k.keys, k.modTime = keys, st.ModTime()
	k.mu.Unlock()
	return nil
}

// Rotate makes a new key the signer and retires the current one, which
// stays published for the retention; keys retired longer than that are
// dropped. With a file, the ring is written (atomically) before the new
// key signs anything.
func (k *KeyRing) Rotate(now time.Time) (string, error) {
	if err := k.Reload(); err != nil {
		return "", err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	next, err := newRingKey(k.region, k.keys[0].n+1, now)
	if err != nil {
		return "", err
	}
	keys := []*ringKey{next}
	for _, old := range k.keys {
		o := *old
		if o.retired.IsZero() {
			o.retired = now.UTC().Truncate(time.Second)
		}
		if now.Sub(o.retired) < k.retention {
			keys = append(keys, &o)
		}
	}
	if k.path != "" {
		b, err := marshalRing(k.region, keys)
		if err != nil {
			return "", err
		}
		if err := keyfile.Replace(k.path, b); err != nil {
			return "", fmt.Errorf("oidc: key file: %w", err)
		}
		if st, err := os.Stat(k.path); err == nil {
			k.modTime = st.ModTime()
		}
	}
	k.keys = keys
	return next.kid, nil
}

// signer returns the signing key.
func (k *KeyRing) signer() *ringKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[0]
}

// SigningKeyCreated is when the signing key was made.
func (k *KeyRing) SigningKeyCreated() time.Time { return k.signer().created }

// SigningKID is the kid of the key that signs now.
func (k *KeyRing) SigningKID() string { return k.signer().kid }

// publicKey returns the published key kid at now.
func (k *KeyRing) publicKey(kid string, now time.Time) (ed25519.PublicKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, key := range k.keys {
		if key.kid == kid {
			return key.pub, k.published(key, now)
		}
	}
	return nil, false
}

// published: the signing key, or a retired key within the retention.
func (k *KeyRing) published(key *ringKey, now time.Time) bool {
	return key.retired.IsZero() || now.Sub(key.retired) < k.retention
}

// Public returns the keys published at now: the signer and the retired keys
// whose tokens may still be valid.
func (k *KeyRing) Public(now time.Time) []session.PublicKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]session.PublicKey, 0, len(k.keys))
	for _, key := range k.keys {
		if k.published(key, now) {
			out = append(out, session.PublicKey{KID: key.kid, Region: k.region, Key: key.pub})
		}
	}
	return out
}

// JWKS is Public as a JSON Web Key Set, in the format of the session keys
// (session.MarshalJWKS: kty OKP, crv Ed25519, use sig, alg EdDSA).
func (k *KeyRing) JWKS(now time.Time) ([]byte, error) {
	return session.MarshalJWKS(k.Public(now))
}
