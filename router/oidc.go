package router

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/internal/oidcmeta"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/session"
)

// OIDCKeysPath is where a region node serves the public keys its OpenID
// Provider signs with: a JWKS (RFC 7517) of Ed25519 (EdDSA) or P-256
// (ES256) public keys whose kids are "<region>-<n>".
const OIDCKeysPath = "/internal/oidc-keys"

// The OAuth 2.0 / OpenID Connect endpoints: the router forwards them, at
// the same paths, to the regions (but for discovery and the keys, which it
// serves itself).
const (
	pathDiscovery   = oidcmeta.PathDiscovery
	pathJWKS        = oidcmeta.PathKeys
	pathSessionKeys = oidcmeta.PathSessionKeys
	pathAuthorize   = oidcmeta.PathAuthorize
	pathToken       = oidcmeta.PathToken
	pathIntrospect  = oidcmeta.PathIntrospect
	pathRevoke      = oidcmeta.PathRevoke
	pathUserinfo    = oidcmeta.PathUserinfo
	pathLogout      = oidcmeta.PathLogout
)

// How long clients and caches may keep the documents the router serves.
// A region that rotates its OIDC key must publish the next key at least
// keysRefresh + jwksMaxAge before it signs with it, and keep the old key
// published until the last token it signed has expired.
const (
	jwksMaxAge        = 60 * time.Second
	discoveryMaxAge   = 300 * time.Second
	sessionKeysMaxAge = 30 * time.Second
)

// What the regions' OpenID Providers support (the regions hold the users;
// the router only advertises it). Keep in step with the regions'
// discovery (region/oidc).
var (
	// defaultSigningAlgs are advertised until the regions' keys are known.
	defaultSigningAlgs = []string{"EdDSA", "ES256"}
)

// checkIssuer validates the issuer URL (empty is allowed: no OIDC).
func checkIssuer(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("router: issuer: %q is not a URL", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return "", fmt.Errorf("router: issuer: %q: want an https URL", s)
	case u.Host == "" || u.User != nil:
		return "", fmt.Errorf("router: issuer: %q: want scheme and host only", s)
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#"):
		return "", fmt.Errorf("router: issuer: %q: want no path, query or fragment (the router serves the endpoints at the root)", s)
	}
	return s, nil
}

// document is a JSON document the router serves, with its entity tag.
type document struct {
	body []byte
	etag string
}

func newDocument(body []byte) document {
	sum := sha256.Sum256(body)
	return document{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// oidcDocs are the union JWKS and the discovery document that goes with it
// (its signing algorithms are those of the keys).
type oidcDocs struct {
	jwks, discovery document
}

// oidcState is the last good set of OIDC keys of every region and the
// documents made from them.
type oidcState struct {
	issuer  string
	mu      sync.Mutex // serialises setRegion
	regions map[string][]jose.JSONWebKey
	docs    atomic.Pointer[oidcDocs]
}

func newOIDCState(issuer string) *oidcState {
	s := &oidcState{issuer: issuer, regions: map[string][]jose.JSONWebKey{}}
	s.publish()
	return s
}

// setRegion replaces the keys of one region and publishes the new union.
func (s *oidcState) setRegion(region string, keys []jose.JSONWebKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.regions[region] = keys
	s.publish()
}

// publish rebuilds the documents. Caller holds s.mu (or owns s).
func (s *oidcState) publish() {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	algs := map[string]bool{}
	for _, ks := range s.regions {
		for _, k := range ks {
			set.Keys = append(set.Keys, k)
			algs[k.Algorithm] = true
		}
	}
	sort.Slice(set.Keys, func(i, j int) bool { return set.Keys[i].KeyID < set.Keys[j].KeyID })
	jwks, err := json.Marshal(set)
	if err != nil { // the keys were checked when they were read
		panic("router: marshal JWKS: " + err.Error())
	}
	list := defaultSigningAlgs
	if len(algs) > 0 {
		list = make([]string, 0, len(algs))
		for a := range algs {
			list = append(list, a)
		}
		slices.Sort(list)
	}
	disco, err := json.Marshal(oidcmeta.NewDiscovery(s.issuer, list, true))
	if err != nil {
		panic("router: marshal discovery: " + err.Error())
	}
	s.docs.Store(&oidcDocs{jwks: newDocument(jwks), discovery: newDocument(disco)})
}

// keys returns the union of the keys, for tests.
func (s *oidcState) keyIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, ks := range s.regions {
		for _, k := range ks {
			ids = append(ids, k.KeyID)
		}
	}
	slices.Sort(ids)
	return ids
}

// parseOIDCKeys parses the JWKS a node of region publishes. Every key
// must be a public Ed25519 (EdDSA) or P-256 (ES256) signing key whose kid
// names region; otherwise the whole set is refused (and the region's
// last good set kept), so that a region can neither publish a key under
// another region's kid nor have a broken set go unnoticed.
func parseOIDCKeys(region string, body []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys *[]jose.JSONWebKey `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`jwks: no "keys" member`)
	}
	out := make([]jose.JSONWebKey, 0, len(*set.Keys))
	seen := map[string]bool{}
	for i, k := range *set.Keys {
		where := fmt.Sprintf("jwks: key %d (kid %q)", i, k.KeyID)
		r, err := session.KIDRegion(k.KeyID)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if r != region {
			return nil, fmt.Errorf("%s: names region %q, not %q", where, r, region)
		}
		if seen[k.KeyID] {
			return nil, fmt.Errorf("%s: duplicate kid", where)
		}
		seen[k.KeyID] = true
		if !k.IsPublic() {
			return nil, fmt.Errorf("%s: holds a private key; publish public keys only", where)
		}
		if !k.Valid() {
			return nil, fmt.Errorf("%s: not a valid key", where)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("%s: use %q, want sig", where, k.Use)
		}
		var alg string
		switch key := k.Key.(type) {
		case ed25519.PublicKey:
			alg = string(jose.EdDSA)
		case *ecdsa.PublicKey:
			if key.Curve != elliptic.P256() {
				return nil, fmt.Errorf("%s: EC key not on P-256", where)
			}
			alg = string(jose.ES256)
		default:
			return nil, fmt.Errorf("%s: %T: only Ed25519 (EdDSA) and P-256 (ES256) keys are accepted", where, k.Key)
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			return nil, fmt.Errorf("%s: alg %q does not fit the key (%s)", where, k.Algorithm, alg)
		}
		// Only what a relying party needs: no certificates.
		out = append(out, jose.JSONWebKey{Key: k.Key, KeyID: k.KeyID, Algorithm: alg, Use: "sig"})
	}
	return out, nil
}

// fetchOIDCKeys reads the OIDC keys of region pl from its healthy nodes:
// the union of what they publish (during a rotation the nodes may differ
// for a moment). It fails if no node gave a usable set, or two nodes give
// one kid different keys.
func (rt *Router) fetchOIDCKeys(pl *pool) ([]jose.JSONWebKey, error) {
	byKID := map[string]jose.JSONWebKey{}
	var errs []error
	ok := false
	for _, n := range pl.nodes {
		if !n.healthy.Load() {
			continue
		}
		body, err := n.fetchInternal(OIDCKeysPath, rt.health.Timeout)
		if err == nil {
			var keys []jose.JSONWebKey
			if keys, err = parseOIDCKeys(pl.name, body); err == nil {
				for _, k := range keys {
					if prev, dup := byKID[k.KeyID]; dup && !sameKey(prev, k) {
						return nil, fmt.Errorf("nodes publish different keys under kid %q", k.KeyID)
					}
					byKID[k.KeyID] = k
				}
				ok = true
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.url, err))
	}
	if !ok {
		if len(errs) == 0 {
			return nil, errors.New("no healthy node")
		}
		return nil, errors.Join(errs...)
	}
	keys := make([]jose.JSONWebKey, 0, len(byKID))
	for _, k := range byKID {
		keys = append(keys, k)
	}
	return keys, nil
}

func sameKey(a, b jose.JSONWebKey) bool {
	ja, err1 := a.MarshalJSON()
	jb, err2 := b.MarshalJSON()
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// oidcKeysLoop keeps the OIDC keys of region pl current. A region that
// cannot be read keeps its last good keys: its users' tokens still verify
// while it is down.
func (rt *Router) oidcKeysLoop(pl *pool) {
	wait, backoff := time.Duration(0), time.Duration(0)
	for {
		select {
		case <-rt.stop:
			return
		case <-time.After(wait):
		}
		keys, err := rt.fetchOIDCKeys(pl)
		if err != nil {
			rt.log.Warn("cannot read OIDC keys; keeping the last good ones", "region", pl.name, "err", err)
			backoff = min(max(2*backoff, time.Second), rt.keysEvery)
			wait = backoff
			continue
		}
		rt.oidc.setRegion(pl.name, keys)
		wait, backoff = rt.keysEvery, 0
	}
}

// serveDocument writes a JSON document with caching headers, or 304 if the
// client has it.
func serveDocument(c echo.Context, d document, maxAge time.Duration) error {
	h := c.Response().Header()
	h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(maxAge.Seconds())))
	h.Set("ETag", d.etag)
	h.Set("Access-Control-Allow-Origin", "*") // read by browser-based relying parties
	h.Set("X-Content-Type-Options", "nosniff")
	if inm := c.Request().Header.Get("If-None-Match"); inm != "" && etagMatch(inm, d.etag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.JSONBlob(http.StatusOK, d.body)
}

// etagMatch reports whether an If-None-Match value names etag.
func etagMatch(inm, etag string) bool {
	for t := range strings.SplitSeq(inm, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// discovery serves GET /.well-known/openid-configuration.
func (rt *Router) discovery(c echo.Context) error {
	if rt.oidc == nil {
		return problem.New(http.StatusNotFound, "OpenID Connect is not configured on this router (issuer)")
	}
	return serveDocument(c, rt.oidc.docs.Load().discovery, discoveryMaxAge)
}

// jwks serves GET /oauth2/keys: the union of every region's OIDC keys.
func (rt *Router) jwks(c echo.Context) error {
	if rt.oidc == nil {
		return problem.New(http.StatusNotFound, "OpenID Connect is not configured on this router (issuer)")
	}
	return serveDocument(c, rt.oidc.docs.Load().jwks, jwksMaxAge)
}

// sessionKeys serves GET /.well-known/session-keys: the session-token
// public keys of every region the router knows, so that a region can
// verify the sessions of the others.
func (rt *Router) sessionKeys(c echo.Context) error {
	src, ok := rt.cfg.Sessions.(interface{ Keys() []session.PublicKey })
	if !ok {
		return problem.New(http.StatusNotFound, "this router holds no session keys")
	}
	keys := src.Keys()
	slices.SortFunc(keys, func(a, b session.PublicKey) int { return strings.Compare(a.KID, b.KID) })
	b, err := session.MarshalJWKS(keys)
	if err != nil {
		return err
	}
	return serveDocument(c, newDocument(b), sessionKeysMaxAge)
}
