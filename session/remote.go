package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// A region verifies its own users' session tokens with its own key. To
// serve a travelling user (a session signed by their home region) it needs
// the other regions' public keys too: a KeySource gives the union of them,
// and a RemoteVerifier keeps a Verifier loaded from it.

// KeySource yields the public session-token keys of every region.
type KeySource interface {
	SessionKeys(ctx context.Context) ([]PublicKey, error)
}

// StaticKeys is a KeySource of fixed keys (tests, or a deployment that
// distributes keys by configuration).
type StaticKeys []PublicKey

// SessionKeys returns the keys.
func (s StaticKeys) SessionKeys(context.Context) ([]PublicKey, error) { return s, nil }

// maxJWKSBytes bounds a fetched JWKS.
const maxJWKSBytes = 1 << 20

// HTTPKeySource fetches a JWKS in [MarshalJWKS] format, such as the union
// of every region's session keys the routers serve at
// /.well-known/session-keys.
type HTTPKeySource struct {
	URL    string
	Client *http.Client // default: a client with a 5-second timeout
}

var defaultKeyClient = &http.Client{Timeout: 5 * time.Second}

// SessionKeys fetches and parses the JWKS.
func (h *HTTPKeySource) SessionKeys(ctx context.Context) ([]PublicKey, error) {
	c := h.Client
	if c == nil {
		c = defaultKeyClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("session: fetch keys: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("session: fetch keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("session: fetch keys from %s: HTTP %d", h.URL, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("session: fetch keys from %s: %w", h.URL, err)
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("session: fetch keys from %s: larger than %d bytes", h.URL, maxJWKSBytes)
	}
	return ParseJWKS(b)
}

// RemoteOptions tune a RemoteVerifier; zero values take the defaults.
type RemoteOptions struct {
	// MaxAge is how long fetched keys are used before they are fetched
	// again (default 5 minutes). A failed refresh keeps the old keys.
	MaxAge time.Duration
	// MinInterval is the least time between two fetches caused by tokens
	// with an unknown kid (default 10 seconds), so that forged kids
	// cannot make the verifier hammer the source.
	MinInterval time.Duration
	// Verifier options (leeway, revocation hook, cache size).
	Verifier []VerifierOption
}

// RemoteVerifier verifies the session tokens of every region with the keys
// of a KeySource, fetched on first use and refreshed when they are older
// than MaxAge or a token names a kid they lack. It is safe for concurrent
// use.
type RemoteVerifier struct {
	src    KeySource
	opts   RemoteOptions
	v      *Verifier
	mu     sync.Mutex // serialises fetches; guards the fields below
	loaded time.Time  // when the keys were last fetched successfully
	tried  time.Time  // when a fetch was last attempted
	known  map[string]bool
}

// NewRemoteVerifier returns a verifier over src. It fetches nothing until
// the first Verify.
func NewRemoteVerifier(src KeySource, opts RemoteOptions) *RemoteVerifier {
	if opts.MaxAge <= 0 {
		opts.MaxAge = 5 * time.Minute
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = 10 * time.Second
	}
	return &RemoteVerifier{src: src, opts: opts, v: NewVerifier(opts.Verifier...), known: map[string]bool{}}
}

// Verify checks a session token of any region at time now, as
// [Verifier.Verify] does, fetching keys as needed.
func (r *RemoteVerifier) Verify(ctx context.Context, token string, now time.Time) (Claims, error) {
	r.mu.Lock()
	stale := r.loaded.IsZero() || now.Sub(r.loaded) >= r.opts.MaxAge
	r.mu.Unlock()
	var fetchErr error
	if stale {
		fetchErr = r.refresh(ctx, now, false)
	}
	c, err := r.v.Verify(token, now)
	if errors.Is(err, ErrUnknownKey) {
		if rerr := r.refresh(ctx, now, true); rerr == nil {
			c, err = r.v.Verify(token, now)
		} else if fetchErr == nil {
			fetchErr = rerr
		}
	}
	if err != nil && fetchErr != nil && errors.Is(err, ErrUnknownKey) {
		return Claims{}, fmt.Errorf("%w (and the keys could not be fetched: %v)", err, fetchErr)
	}
	return c, err
}

// refresh fetches the keys unless another call did so meanwhile; for an
// unknown kid (forced) at most once per MinInterval.
func (r *RemoteVerifier) refresh(ctx context.Context, now time.Time, forced bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !forced && !r.loaded.IsZero() && now.Sub(r.loaded) < r.opts.MaxAge {
		return nil // refreshed by another call while this one waited
	}
	if !r.tried.IsZero() && now.Sub(r.tried) >= 0 && now.Sub(r.tried) < r.opts.MinInterval {
		return nil // fetched (or failed to) a moment ago
	}
	r.tried = now
	keys, err := r.src.SessionKeys(ctx)
	if err != nil {
		return err
	}
	byRegion := map[string][]PublicKey{}
	for _, k := range keys {
		region, err := KIDRegion(k.KID)
		if err != nil {
			return err
		}
		byRegion[region] = append(byRegion[region], k)
	}
	for region, ks := range byRegion {
		if err := r.v.SetRegionKeys(region, ks); err != nil {
			return err
		}
	}
	for region := range r.known {
		if _, ok := byRegion[region]; !ok {
			if err := r.v.SetRegionKeys(region, nil); err != nil {
				return err
			}
			delete(r.known, region)
		}
	}
	for region := range byRegion {
		r.known[region] = true
	}
	r.loaded = now
	return nil
}
