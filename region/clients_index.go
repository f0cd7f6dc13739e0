package region

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/domicile/domicile/region/store"
)

// ClientIndex is the part of the home index client that keeps the OAuth
// client registry (*homeindex.Client implements it).
type ClientIndex interface {
	SetClient(ctx context.Context, id string, metadata []byte) error
	DeleteClient(ctx context.Context, id string) error
	GetClient(ctx context.Context, id string) ([]byte, bool, error)
	ClientIDs(ctx context.Context) ([]string, error)
}

// IndexClients is the OAuth/OpenID client registry kept in the home index:
// a client registered through the admin API of any region is replicated to
// every region and router (client metadata is not personal data; a
// client's secret is kept only as its SHA-256). It implements ClientAdmin
// and oidc.Clients.
type IndexClients struct {
	Index ClientIndex
	Now   func() time.Time // default time.Now
}

// visibleWithin bounds how long a write waits to be readable back from the
// replica the registry reads (a follower applies a commit a little after
// the leader).
const visibleWithin = 3 * time.Second

// waitVisible polls the replica until done says the client's state is
// there, so that an admin who just wrote a client reads it back.
func (r *IndexClients) waitVisible(ctx context.Context, id string, done func(store.Client, error) bool) error {
	deadline := time.Now().Add(visibleWithin)
	for {
		c, err := r.read(ctx, id)
		if done(c, err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("client registry: client %s: the write is committed but not yet readable here", truncateID(id))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// indexClient is a client as the index stores it.
type indexClient struct {
	V                      int      `json:"v"` // format, 1
	ID                     string   `json:"id"`
	Name                   string   `json:"name,omitempty"`
	SecretHash             []byte   `json:"secret_sha256,omitempty"`
	RedirectURIs           []string `json:"redirect_uris,omitempty"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes             []string `json:"grant_types,omitempty"`
	Scopes                 []string `json:"scopes,omitempty"`
	BackchannelLogoutURI   string   `json:"backchannel_logout_uri,omitempty"`
	AccessTokenTTL         int64    `json:"access_token_ttl_ms,omitempty"`
	IDTokenTTL             int64    `json:"id_token_ttl_ms,omitempty"`
	RefreshTokenTTL        int64    `json:"refresh_token_ttl_ms,omitempty"`
	CreatedAt              int64    `json:"created_us"`
	UpdatedAt              int64    `json:"updated_us"`
}

func (r *IndexClients) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC().Truncate(time.Microsecond)
	}
	return time.Now().UTC().Truncate(time.Microsecond)
}

func encodeIndexClient(c store.Client) ([]byte, error) {
	return json.Marshal(indexClient{
		V: 1, ID: c.ID, Name: c.Name, SecretHash: c.SecretHash,
		RedirectURIs: c.RedirectURIs, PostLogoutRedirectURIs: c.PostLogoutRedirectURIs,
		GrantTypes: c.GrantTypes, Scopes: c.Scopes, BackchannelLogoutURI: c.BackchannelLogoutURI,
		AccessTokenTTL: c.AccessTokenTTL.Milliseconds(), IDTokenTTL: c.IDTokenTTL.Milliseconds(), RefreshTokenTTL: c.RefreshTokenTTL.Milliseconds(),
		CreatedAt: c.CreatedAt.UnixMicro(), UpdatedAt: c.UpdatedAt.UnixMicro(),
	})
}

func decodeIndexClient(id string, b []byte) (store.Client, error) {
	var w indexClient
	if err := json.Unmarshal(b, &w); err != nil || w.V != 1 || w.ID != id {
		return store.Client{}, fmt.Errorf("client registry: client %s: unreadable record (format %d): %v", id, w.V, err)
	}
	return store.Client{
		ID: w.ID, Name: w.Name, SecretHash: w.SecretHash,
		RedirectURIs: w.RedirectURIs, PostLogoutRedirectURIs: w.PostLogoutRedirectURIs,
		GrantTypes: w.GrantTypes, Scopes: w.Scopes, BackchannelLogoutURI: w.BackchannelLogoutURI,
		AccessTokenTTL: time.Duration(w.AccessTokenTTL) * time.Millisecond, IDTokenTTL: time.Duration(w.IDTokenTTL) * time.Millisecond,
		RefreshTokenTTL: time.Duration(w.RefreshTokenTTL) * time.Millisecond,
		CreatedAt:       time.UnixMicro(w.CreatedAt).UTC(), UpdatedAt: time.UnixMicro(w.UpdatedAt).UTC(),
	}, nil
}

// Client returns a client; its error wraps store.ErrNotFound if there is
// none.
func (r *IndexClients) Client(ctx context.Context, id string) (store.Client, error) {
	return r.read(ctx, id)
}

func (r *IndexClients) read(ctx context.Context, id string) (store.Client, error) {
	b, ok, err := r.Index.GetClient(ctx, id)
	if err != nil {
		return store.Client{}, fmt.Errorf("client registry: client %s: %w", truncateID(id), err)
	}
	if !ok {
		return store.Client{}, fmt.Errorf("client registry: client %s: %w", truncateID(id), store.ErrNotFound)
	}
	return decodeIndexClient(id, b)
}

// CreateClient registers c; its error wraps store.ErrDuplicate if the id
// is taken.
func (r *IndexClients) CreateClient(ctx context.Context, c store.Client) error {
	if _, err := r.Client(ctx, c.ID); err == nil {
		return fmt.Errorf("client registry: create client %s: %w", c.ID, store.ErrDuplicate)
	} else if !isNotFound(err) {
		return err
	}
	now := r.now()
	c.CreatedAt, c.UpdatedAt = now, now
	return r.put(ctx, c)
}

// UpdateClient replaces a client's metadata (not its secret or creation
// time); its error wraps store.ErrNotFound if there is no such client.
func (r *IndexClients) UpdateClient(ctx context.Context, c store.Client) error {
	old, err := r.Client(ctx, c.ID)
	if err != nil {
		return err
	}
	c.SecretHash, c.CreatedAt, c.UpdatedAt = old.SecretHash, old.CreatedAt, r.now()
	return r.put(ctx, c)
}

// SetClientSecret replaces a client's secret hash (nil: public client).
func (r *IndexClients) SetClientSecret(ctx context.Context, id string, hash []byte) error {
	c, err := r.Client(ctx, id)
	if err != nil {
		return err
	}
	c.SecretHash, c.UpdatedAt = hash, r.now()
	return r.put(ctx, c)
}

// DeleteClient removes a client; its error wraps store.ErrNotFound if there
// is none.
func (r *IndexClients) DeleteClient(ctx context.Context, id string) error {
	if _, err := r.Client(ctx, id); err != nil {
		return err
	}
	if err := r.Index.DeleteClient(ctx, id); err != nil {
		return fmt.Errorf("client registry: delete client %s: %w", id, err)
	}
	return r.waitVisible(ctx, id, func(_ store.Client, err error) bool { return isNotFound(err) })
}

// ListClients returns up to limit clients whose id sorts after after, in
// id order.
func (r *IndexClients) ListClients(ctx context.Context, after string, limit int) ([]store.Client, error) {
	ids, err := r.Index.ClientIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("client registry: list clients: %w", err)
	}
	slices.Sort(ids)
	var out []store.Client
	for _, id := range ids {
		if id <= after {
			continue
		}
		if len(out) >= limit {
			break
		}
		c, err := r.Client(ctx, id)
		if isNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (r *IndexClients) put(ctx context.Context, c store.Client) error {
	b, err := encodeIndexClient(c)
	if err != nil {
		return err
	}
	if err := r.Index.SetClient(ctx, c.ID, b); err != nil {
		return fmt.Errorf("client registry: client %s: %w", c.ID, err)
	}
	return r.waitVisible(ctx, c.ID, func(got store.Client, err error) bool { return err == nil && got.UpdatedAt.Equal(c.UpdatedAt) })
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

func truncateID(id string) string {
	if len(id) > 128 {
		return id[:128] + "…"
	}
	return id
}
