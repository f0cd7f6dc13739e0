package oidc

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/domicile/domicile/session"
)

// AccessTokenType is the "typ" header of access tokens (RFC 9068).
const AccessTokenType = "at+jwt"

// opaqueBytes of randomness in a code or refresh token.
const opaqueBytes = 32

// newOpaque returns "<region>.<base64url of 32 random bytes>": a code or
// refresh token, whose prefix tells a router which region to send it to.
func newOpaque(region string) (string, error) {
	b := make([]byte, opaqueBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return region + "." + base64.RawURLEncoding.EncodeToString(b), nil
}

// opaqueRegion returns the region prefix of an opaque token and whether
// the token has the right shape.
func opaqueRegion(tok string) (string, bool) {
	region, rest, ok := strings.Cut(tok, ".")
	if !ok || region == "" || len(rest) != base64.RawURLEncoding.EncodedLen(opaqueBytes) {
		return "", false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return region, true
}

// newID returns n random bytes, base64url: a family id or a jti part.
func newID(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newJTI returns the id of an access token: "<family>.<random>" for one
// issued from a grant (so that revoking the family reaches it), random for
// a client's own (client credentials).
func newJTI(family string) (string, error) {
	r, err := newID(12)
	if err != nil || family == "" {
		return r, err
	}
	return family + "." + r, nil
}

// jtiFamily is the family part of a jti ("" for none).
func jtiFamily(jti string) string {
	f, _, ok := strings.Cut(jti, ".")
	if !ok {
		return ""
	}
	return f
}

// accessClaims are the claims of an access token (RFC 9068).
type accessClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope,omitempty"`
	IssuedAt int64    `json:"iat"`
	Expiry   int64    `json:"exp"`
	JTI      string   `json:"jti"`
	// SessionID and AuthTime: for a user's token.
	SessionID string `json:"sid,omitempty"`
	AuthTime  int64  `json:"auth_time,omitempty"`
}

func (c accessClaims) scopes() []string { return strings.Fields(c.Scope) }

// signAccess signs claims with the ring's signing key.
func signAccess(k *KeyRing, c accessClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := k.signer().atSigner.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("oidc: sign access token: %w", err)
	}
	return jws.CompactSerialize()
}

// Errors of verifyAccess.
var (
	errTokenInvalid = errors.New("access token invalid")
	errTokenExpired = errors.New("access token expired")
	// errForeignToken: signed by another region's key; that region holds
	// its state.
	errForeignToken = errors.New("access token of another region")
)

// maxTokenLen bounds the tokens looked at.
const maxTokenLen = 8 << 10

// verifyAccess checks an access token of this region at now: EdDSA only (so
// no "none", no HS256 made with a public key), typ at+jwt, a published key
// of this region, the issuer, and the times. The error wraps
// errTokenInvalid, errTokenExpired or errForeignToken.
func verifyAccess(k *KeyRing, issuer, token string, now time.Time) (accessClaims, error) {
	var c accessClaims
	if len(token) > maxTokenLen {
		return c, fmt.Errorf("%w: too long", errTokenInvalid)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return c, fmt.Errorf("%w: %v", errTokenInvalid, err)
	}
	if len(jws.Signatures) != 1 {
		return c, fmt.Errorf("%w: %d signatures", errTokenInvalid, len(jws.Signatures))
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, AccessTokenType) && !strings.EqualFold(typ, "application/"+AccessTokenType) {
		return c, fmt.Errorf("%w: typ %q, want %s", errTokenInvalid, typ, AccessTokenType)
	}
	if region, err := session.KIDRegion(h.KeyID); err != nil {
		return c, fmt.Errorf("%w: kid %q", errTokenInvalid, h.KeyID)
	} else if region != k.region {
		return c, fmt.Errorf("%w: kid %s", errForeignToken, h.KeyID)
	}
	pub, ok := k.publicKey(h.KeyID, now)
	if !ok {
		return c, fmt.Errorf("%w: kid %s is not a published key", errTokenInvalid, h.KeyID)
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		return c, fmt.Errorf("%w: signature", errTokenInvalid)
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, fmt.Errorf("%w: claims: %v", errTokenInvalid, err)
	}
	switch {
	case c.Issuer != issuer:
		return c, fmt.Errorf("%w: iss %q", errTokenInvalid, c.Issuer)
	case c.Subject == "" || c.ClientID == "" || c.JTI == "" || c.Expiry <= 0:
		return c, fmt.Errorf("%w: sub, client_id, jti or exp missing", errTokenInvalid)
	case c.IssuedAt > now.Add(time.Minute).Unix():
		return c, fmt.Errorf("%w: issued in the future", errTokenInvalid)
	case now.Unix() >= c.Expiry:
		return c, errTokenExpired
	}
	return c, nil
}

// tokenKIDRegion returns the region named by the kid of a JWS, without
// verifying anything ("" if it has none).
func tokenKIDRegion(token string) string {
	h, _, ok := strings.Cut(token, ".")
	if !ok || len(h) > 1024 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return ""
	}
	var hdr struct {
		KID string `json:"kid"`
	}
	if json.Unmarshal(b, &hdr) != nil {
		return ""
	}
	r, _ := session.KIDRegion(hdr.KID)
	return r
}
