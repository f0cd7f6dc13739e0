package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/region/store"
)

// testClients is part of the conformance suite TestStore runs on every
// backend.
func testClients(t *testing.T, db *store.DB) {
	ctx := context.Background()
	secret := sha256.Sum256([]byte("a secret"))
	conf := store.Client{
		ID: "web-app", Name: "Web app", SecretHash: secret[:],
		RedirectURIs:           []string{"https://app.example.com/cb", "https://app.example.com/cb2"},
		PostLogoutRedirectURIs: []string{"https://app.example.com/bye"},
		GrantTypes:             []string{"authorization_code", "refresh_token"},
		Scopes:                 []string{"openid", "email", "offline_access"},
		BackchannelLogoutURI:   "https://app.example.com/bcl",
		AccessTokenTTL:         5 * time.Minute, IDTokenTTL: time.Hour, RefreshTokenTTL: 24 * time.Hour,
	}
	public := store.Client{ID: "spa", RedirectURIs: []string{"http://127.0.0.1:8080/cb"}, GrantTypes: []string{"authorization_code"}}

	t.Run("create and read back", func(t *testing.T) {
		for _, c := range []store.Client{conf, public} {
			if err := db.CreateClient(ctx, c); err != nil {
				t.Fatalf("CreateClient(%s): %v", c.ID, err)
			}
			got, err := db.Client(ctx, c.ID)
			if err != nil {
				t.Fatalf("Client(%s): %v", c.ID, err)
			}
			if got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) || time.Since(got.CreatedAt) > time.Minute {
				t.Errorf("Client(%s): created %v updated %v", c.ID, got.CreatedAt, got.UpdatedAt)
			}
			got.CreatedAt, got.UpdatedAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("Client(%s) = %+v, want %+v", c.ID, got, c)
			}
		}
		if got, _ := db.Client(ctx, "spa"); !got.Public() {
			t.Error("a client stored without a secret hash is not public")
		}
	})
	t.Run("duplicate id refused", func(t *testing.T) {
		wantIs(t, "CreateClient(duplicate)", db.CreateClient(ctx, public), store.ErrDuplicate)
	})
	t.Run("unknown", func(t *testing.T) {
		_, err := db.Client(ctx, "nobody")
		wantIs(t, "Client(unknown)", err, store.ErrNotFound)
		wantIs(t, "UpdateClient(unknown)", db.UpdateClient(ctx, store.Client{ID: "nobody"}), store.ErrNotFound)
		wantIs(t, "SetClientSecret(unknown)", db.SetClientSecret(ctx, "nobody", nil), store.ErrNotFound)
		wantIs(t, "DeleteClient(unknown)", db.DeleteClient(ctx, "nobody"), store.ErrNotFound)
	})
	t.Run("invalid records refused", func(t *testing.T) {
		for _, c := range []store.Client{
			{ID: ""}, {ID: "has space"}, {ID: strings.Repeat("x", store.MaxClientIDLen+1)},
			{ID: "ok", SecretHash: []byte("short")},
			{ID: "ok", RedirectURIs: []string{""}},
			{ID: "ok", Name: strings.Repeat("n", store.MaxClientNameLen+1)},
			{ID: "ok", AccessTokenTTL: -time.Second},
		} {
			if err := db.CreateClient(ctx, c); err == nil || errors.Is(err, store.ErrDuplicate) {
				t.Errorf("CreateClient(%.60v) = %v, want a validation error", c, err)
			}
		}
	})
	t.Run("update keeps the secret", func(t *testing.T) {
		up := conf
		up.SecretHash = nil
		up.Name = "Renamed"
		up.RedirectURIs = []string{"https://app.example.com/new"}
		if err := db.UpdateClient(ctx, up); err != nil {
			t.Fatal(err)
		}
		got, err := db.Client(ctx, conf.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "Renamed" || !reflect.DeepEqual(got.RedirectURIs, up.RedirectURIs) || !reflect.DeepEqual(got.SecretHash, conf.SecretHash) || got.UpdatedAt.Before(got.CreatedAt) {
			t.Fatalf("after update: %+v", got)
		}
	})
	t.Run("secret replaced and removed", func(t *testing.T) {
		other := sha256.Sum256([]byte("another"))
		if err := db.SetClientSecret(ctx, conf.ID, other[:]); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.Client(ctx, conf.ID); !reflect.DeepEqual(got.SecretHash, other[:]) {
			t.Fatalf("secret hash = %x, want %x", got.SecretHash, other)
		}
		if err := db.SetClientSecret(ctx, conf.ID, nil); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.Client(ctx, conf.ID); !got.Public() {
			t.Fatal("client still has a secret after it was removed")
		}
	})
	t.Run("list pages in id order", func(t *testing.T) {
		for i := range 5 {
			if err := db.CreateClient(ctx, store.Client{ID: fmt.Sprintf("list-%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		var ids []string
		after := ""
		for {
			page, err := db.ListClients(ctx, after, 3)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range page {
				ids = append(ids, c.ID)
			}
			if len(page) < 3 {
				break
			}
			after = page[len(page)-1].ID
		}
		want := []string{"list-0", "list-1", "list-2", "list-3", "list-4", "spa", "web-app"}
		if !reflect.DeepEqual(ids, want) {
			t.Fatalf("listed %v, want %v", ids, want)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if err := db.DeleteClient(ctx, "spa"); err != nil {
			t.Fatal(err)
		}
		_, err := db.Client(ctx, "spa")
		wantIs(t, "Client(deleted)", err, store.ErrNotFound)
	})
}
