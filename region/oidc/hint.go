package oidc

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/domicile/domicile/session"
)

// hintKeySet verifies an id_token_hint (logout): signed by a published key
// of this region, or, with Config.ForeignKeys, of another region.
type hintKeySet struct{ p *Provider }

func (h *hintKeySet) VerifySignature(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, error) {
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want one signature")
	}
	hdr := jws.Signatures[0].Protected
	if hdr.Algorithm != string(jose.EdDSA) {
		return nil, fmt.Errorf("alg %q, want EdDSA", hdr.Algorithm)
	}
	region, err := session.KIDRegion(hdr.KeyID)
	if err != nil {
		return nil, err
	}
	now := h.p.now()
	var pub ed25519.PublicKey
	ok := false
	switch {
	case region == h.p.cfg.Region:
		pub, ok = h.p.cfg.Keys.publicKey(hdr.KeyID, now)
	case h.p.foreign != nil:
		pub, ok = h.p.foreign.key(ctx, hdr.KeyID, now)
	}
	if !ok {
		return nil, fmt.Errorf("kid %s: unknown key", hdr.KeyID)
	}
	return jws.Verify(pub)
}

// remoteKeys caches the public keys of a KeySource (the union JWKS of the
// regions' OpenID keys), fetched again when older than maxAge or asked for
// an unknown kid, at most once per minInterval.
type remoteKeys struct {
	src                 session.KeySource
	maxAge, minInterval time.Duration

	mu     sync.Mutex
	keys   map[string]ed25519.PublicKey
	loaded time.Time
	tried  time.Time
}

func (r *remoteKeys) key(ctx context.Context, kid string, now time.Time) (ed25519.PublicKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[kid]
	if ok && now.Sub(r.loaded) < r.maxAge {
		return k, true
	}
	if !r.tried.IsZero() && now.Sub(r.tried) < r.minInterval {
		return k, ok
	}
	r.tried = now
	keys, err := r.src.SessionKeys(ctx)
	if err != nil {
		return k, ok // keep what we had
	}
	m := make(map[string]ed25519.PublicKey, len(keys))
	for _, pk := range keys {
		m[pk.KID] = pk.Key
	}
	r.keys, r.loaded = m, now
	k, ok = m[kid]
	return k, ok
}
