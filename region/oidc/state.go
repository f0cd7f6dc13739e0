package oidc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// State keeps what the provider remembers between requests: codes (single
// use), refresh token families (rotated on every use), revocations of
// access tokens until they expire, and which clients got tokens in which
// session (for logout). It holds no personal data: user ids, session ids
// and client ids only, and tokens only as SHA-256 hashes. Memory and Redis
// implement it, and pass the same tests.
type State interface {
	// PutCode stores the grant a new code stands for, for ttl.
	PutCode(ctx context.Context, code string, g Grant, ttl time.Duration) error
	// PeekCode returns the grant of a code and whether it was used already,
	// changing nothing; ErrNotFound for an unknown or expired code.
	PeekCode(ctx context.Context, code string) (g Grant, used bool, err error)
	// UseCode marks a code used, atomically: exactly one of concurrent
	// calls succeeds; the others, and later ones, get ErrCodeUsed with the
	// grant (so that the caller can revoke what it issued).
	UseCode(ctx context.Context, code string) (Grant, error)

	// StartFamily stores a new refresh token family with its first token.
	StartFamily(ctx context.Context, f Family, token string) error
	// Refresh returns the family whose current token is token. A token
	// the family has rotated away is a reuse: the family is revoked and
	// the answer is ErrReused. ErrRevoked for a revoked family,
	// ErrNotFound for an unknown or expired token.
	Refresh(ctx context.Context, token string) (Family, error)
	// PeekRefresh returns the family of a token and whether it is the
	// current one, changing nothing (introspection).
	PeekRefresh(ctx context.Context, token string) (f Family, current bool, err error)
	// Rotate replaces the current token of family fid, old, with next,
	// atomically: if old is no longer current (a concurrent use), the
	// family is revoked and the answer is ErrReused.
	Rotate(ctx context.Context, fid, old, next string) error
	// RevokeFamily revokes a family (its refresh tokens, and its access
	// tokens while they are valid) until at least until. The family need
	// not exist yet: a code's reuse may be seen before its exchange ends.
	RevokeFamily(ctx context.Context, fid string, until time.Time) error

	// RevokeAccessToken revokes one access token until it expires.
	RevokeAccessToken(ctx context.Context, jti string, exp time.Time) error
	// AccessTokenRevoked reports whether the access token jti, of family
	// fid ("" for none), is revoked.
	AccessTokenRevoked(ctx context.Context, jti, fid string) (bool, error)

	// BindSession records that client got tokens in session sid, of
	// family fid ("" for none), until the session ends at until.
	BindSession(ctx context.Context, sid, client, fid string, until time.Time) error
	// EndSession forgets session sid, revokes the families bound to it,
	// and returns the clients that got tokens in it.
	EndSession(ctx context.Context, sid string) ([]string, error)
}

// Errors of a State.
var (
	ErrNotFound = errors.New("oidc state: not found or expired")
	ErrCodeUsed = errors.New("oidc state: code used already")
	ErrReused   = errors.New("oidc state: refresh token reused; family revoked")
	ErrRevoked  = errors.New("oidc state: revoked")
)

// Grant is what a code stands for: an authorization the user gave a client.
type Grant struct {
	ClientID    string   `json:"c"`
	RedirectURI string   `json:"r"`
	Scopes      []string `json:"s"`
	Nonce       string   `json:"n,omitempty"`
	// Challenge is the S256 PKCE code challenge ("" for none).
	Challenge string `json:"cc,omitempty"`
	Subject   string `json:"sub"`
	SessionID string `json:"sid"`
	AuthTime  int64  `json:"at"` // Unix seconds
	// AMR: RFC 8176 method references of the login.
	AMR []string `json:"amr,omitempty"`
	// Foreign: the user's home is another region (a travelling user's
	// prompt=none): identity only.
	Foreign bool `json:"fx,omitempty"`
	// Family is the id of the token family the code's exchange starts; its
	// tokens are revoked if the code is used twice.
	Family       string `json:"f"`
	FamilyExpiry int64  `json:"fe"` // Unix seconds: when its refresh tokens end
}

// Family is a refresh token family: the tokens of one grant, each
// replacing the last.
type Family struct {
	ID        string   `json:"id"`
	ClientID  string   `json:"c"`
	Subject   string   `json:"sub"`
	SessionID string   `json:"sid"`
	Scopes    []string `json:"s"`
	AuthTime  int64    `json:"at"`
	AMR       []string `json:"amr,omitempty"`
	Expiry    int64    `json:"exp"` // Unix seconds; the family ends then, however often it is rotated
}

// hashToken is the form under which a State keeps a token.
func hashToken(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }

func hashHex(tok string) string {
	h := hashToken(tok)
	return hex.EncodeToString(h[:])
}
