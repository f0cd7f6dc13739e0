package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Clients are the OAuth 2.0 / OpenID Connect relying parties registered
// with the region: configuration, not personal data, kept in clear. The
// secret of a confidential client is never stored, only its SHA-256: the
// secrets are generated with 256 bits of entropy, so a fast hash is as good
// as a slow one and keeps the token endpoint cheap.

// Limits on a client record.
const (
	MaxClientIDLen   = 128
	MaxClientNameLen = 200
	MaxClientURIs    = 32
	MaxClientURILen  = 2048
	MaxClientScopes  = 64
	maxClientScope   = 128
)

// Client is a registered OAuth/OpenID client.
type Client struct {
	// ID is the client_id: 1 to 128 of [A-Za-z0-9._~-].
	ID   string
	Name string
	// SecretHash is the SHA-256 of the client secret (32 bytes); nil for a
	// public client, which authenticates with PKCE alone.
	SecretHash []byte
	// RedirectURIs are matched exactly; PostLogoutRedirectURIs likewise.
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	// GrantTypes the client may use: "authorization_code",
	// "refresh_token", "client_credentials".
	GrantTypes []string
	// Scopes the client may ask for.
	Scopes []string
	// BackchannelLogoutURI receives OpenID Back-Channel Logout tokens.
	BackchannelLogoutURI string
	// Token lifetimes; zero means the provider's default.
	AccessTokenTTL  time.Duration
	IDTokenTTL      time.Duration
	RefreshTokenTTL time.Duration
	// CreatedAt and UpdatedAt are set by the store (microseconds, UTC).
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Public reports whether the client has no secret.
func (c Client) Public() bool { return c.SecretHash == nil }

// clientMetadata is the JSON of the metadata column.
type clientMetadata struct {
	Name                   string   `json:"name,omitempty"`
	RedirectURIs           []string `json:"redirect_uris,omitempty"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes             []string `json:"grant_types,omitempty"`
	Scopes                 []string `json:"scopes,omitempty"`
	BackchannelLogoutURI   string   `json:"backchannel_logout_uri,omitempty"`
	AccessTokenTTL         int64    `json:"access_token_ttl_ms,omitempty"`
	IDTokenTTL             int64    `json:"id_token_ttl_ms,omitempty"`
	RefreshTokenTTL        int64    `json:"refresh_token_ttl_ms,omitempty"`
}

// ValidClientID reports whether id can be a client_id.
func ValidClientID(id string) bool {
	if id == "" || len(id) > MaxClientIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

// checkClient checks the shape of a record (what the URIs and grant types
// mean is the provider's business).
func checkClient(c Client) error {
	switch {
	case !ValidClientID(c.ID):
		return fmt.Errorf("id %q: want 1 to %d of [A-Za-z0-9._~-]", truncate(c.ID, MaxClientIDLen), MaxClientIDLen)
	case c.SecretHash != nil && len(c.SecretHash) != 32:
		return fmt.Errorf("secret hash: want 32 bytes (SHA-256), got %d", len(c.SecretHash))
	case !utf8.ValidString(c.Name) || utf8.RuneCountInString(c.Name) > MaxClientNameLen:
		return fmt.Errorf("name: at most %d characters of UTF-8", MaxClientNameLen)
	case c.AccessTokenTTL < 0 || c.IDTokenTTL < 0 || c.RefreshTokenTTL < 0:
		return errors.New("token lifetimes: negative")
	case len(c.Scopes) > MaxClientScopes:
		return fmt.Errorf("scopes: more than %d", MaxClientScopes)
	case len(c.BackchannelLogoutURI) > MaxClientURILen:
		return fmt.Errorf("backchannel logout uri: longer than %d bytes", MaxClientURILen)
	}
	for name, list := range map[string][]string{"redirect uris": c.RedirectURIs, "post-logout redirect uris": c.PostLogoutRedirectURIs, "grant types": c.GrantTypes} {
		if len(list) > MaxClientURIs {
			return fmt.Errorf("%s: more than %d", name, MaxClientURIs)
		}
		for _, v := range list {
			if v == "" || len(v) > MaxClientURILen || !utf8.ValidString(v) {
				return fmt.Errorf("%s: %q: want 1 to %d bytes of UTF-8", name, truncate(v, 64), MaxClientURILen)
			}
		}
	}
	for _, s := range c.Scopes {
		if s == "" || len(s) > maxClientScope {
			return fmt.Errorf("scope %q: want 1 to %d bytes", truncate(s, 64), maxClientScope)
		}
	}
	return nil
}

func (c Client) metadata() ([]byte, error) {
	return json.Marshal(clientMetadata{
		Name: c.Name, RedirectURIs: c.RedirectURIs, PostLogoutRedirectURIs: c.PostLogoutRedirectURIs,
		GrantTypes: c.GrantTypes, Scopes: c.Scopes, BackchannelLogoutURI: c.BackchannelLogoutURI,
		AccessTokenTTL: c.AccessTokenTTL.Milliseconds(), IDTokenTTL: c.IDTokenTTL.Milliseconds(), RefreshTokenTTL: c.RefreshTokenTTL.Milliseconds(),
	})
}

// CreateClient registers c. Its error wraps ErrDuplicate when a client with
// the same id exists.
func (db *DB) CreateClient(ctx context.Context, c Client) error {
	if err := checkClient(c); err != nil {
		return fmt.Errorf("store: create client: %w", err)
	}
	meta, err := c.metadata()
	if err != nil {
		return fmt.Errorf("store: create client %s: %w", c.ID, err)
	}
	now := db.d.timeValue(time.Now().UTC().Truncate(time.Microsecond))
	err = db.tx.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execTx(ctx, tx, ErrDuplicate,
			`INSERT INTO oauth_clients (id, secret_hash, metadata, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			c.ID, secretArg(c.SecretHash), string(meta), now, now)
	})
	if err != nil {
		return fmt.Errorf("store: create client %s: %w", c.ID, bare(err, ErrDuplicate))
	}
	return nil
}

// Client returns the client with the given id; its error wraps ErrNotFound
// if there is none.
func (db *DB) Client(ctx context.Context, id string) (Client, error) {
	row := db.db.QueryRowContext(ctx, `SELECT id, secret_hash, metadata, created_at, updated_at FROM oauth_clients WHERE id = $1`, id)
	c, err := scanClient(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Client{}, fmt.Errorf("store: client %s: %w", truncate(id, MaxClientIDLen), ErrNotFound)
	}
	if err != nil {
		return Client{}, fmt.Errorf("store: client %s: %w", truncate(id, MaxClientIDLen), err)
	}
	return c, nil
}

// secretArg is a secret hash as a query argument: NULL for none.
func secretArg(hash []byte) any {
	if hash == nil {
		return nil
	}
	return hash
}

type rowScanner interface{ Scan(dest ...any) error }

func scanClient(row rowScanner) (Client, error) {
	var (
		c                Client
		meta             string
		created, updated timeScanner
		secret           []byte
	)
	if err := row.Scan(&c.ID, &secret, &meta, &created, &updated); err != nil {
		return Client{}, err
	}
	var m clientMetadata
	if err := json.Unmarshal([]byte(meta), &m); err != nil {
		return Client{}, fmt.Errorf("metadata: %w", err)
	}
	if len(secret) > 0 {
		c.SecretHash = secret
	}
	c.Name, c.RedirectURIs, c.PostLogoutRedirectURIs = m.Name, m.RedirectURIs, m.PostLogoutRedirectURIs
	c.GrantTypes, c.Scopes, c.BackchannelLogoutURI = m.GrantTypes, m.Scopes, m.BackchannelLogoutURI
	c.AccessTokenTTL = time.Duration(m.AccessTokenTTL) * time.Millisecond
	c.IDTokenTTL = time.Duration(m.IDTokenTTL) * time.Millisecond
	c.RefreshTokenTTL = time.Duration(m.RefreshTokenTTL) * time.Millisecond
	c.CreatedAt, c.UpdatedAt = created.t, updated.t
	return c, nil
}

// ListClients returns up to limit clients whose id sorts after after, in id
// order.
func (db *DB) ListClients(ctx context.Context, after string, limit int) ([]Client, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.db.QueryContext(ctx,
		`SELECT id, secret_hash, metadata, created_at, updated_at FROM oauth_clients WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list clients: %w", err)
	}
	out := []Client{}
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: list clients: %w", err)
		}
		out = append(out, c)
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("store: list clients: %w", err)
	}
	return out, nil
}

// UpdateClient replaces the metadata of client c.ID (everything but its
// secret and creation time). Its error wraps ErrNotFound if there is no
// such client.
func (db *DB) UpdateClient(ctx context.Context, c Client) error {
	c.SecretHash = nil
	if err := checkClient(c); err != nil {
		return fmt.Errorf("store: update client: %w", err)
	}
	meta, err := c.metadata()
	if err != nil {
		return fmt.Errorf("store: update client %s: %w", c.ID, err)
	}
	now := db.d.timeValue(time.Now().UTC().Truncate(time.Microsecond))
	if err := db.execOne(ctx, ErrNotFound, `UPDATE oauth_clients SET metadata = $1, updated_at = $2 WHERE id = $3`, string(meta), now, c.ID); err != nil {
		return fmt.Errorf("store: update client %s: %w", c.ID, err)
	}
	return nil
}

// SetClientSecret replaces the secret hash of a client (nil makes it
// public). Its error wraps ErrNotFound if there is no such client.
func (db *DB) SetClientSecret(ctx context.Context, id string, hash []byte) error {
	if hash != nil && len(hash) != 32 {
		return fmt.Errorf("store: set client secret %s: want 32 bytes (SHA-256), got %d", id, len(hash))
	}
	now := db.d.timeValue(time.Now().UTC().Truncate(time.Microsecond))
	if err := db.execOne(ctx, ErrNotFound, `UPDATE oauth_clients SET secret_hash = $1, updated_at = $2 WHERE id = $3`, secretArg(hash), now, id); err != nil {
		return fmt.Errorf("store: set client secret %s: %w", truncate(id, MaxClientIDLen), err)
	}
	return nil
}

// DeleteClient removes a client. Its error wraps ErrNotFound if there is
// no such client.
func (db *DB) DeleteClient(ctx context.Context, id string) error {
	if err := db.execOne(ctx, ErrNotFound, `DELETE FROM oauth_clients WHERE id = $1`, id); err != nil {
		return fmt.Errorf("store: delete client %s: %w", truncate(id, MaxClientIDLen), err)
	}
	return nil
}
