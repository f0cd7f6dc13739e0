package region

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/oidc"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// oidcBench is a region with its OpenID Provider on a real client store
// (SQLite or PostgreSQL) and Redis state, called in process as a router
// would (signed route headers).
type oidcBench struct {
	srv            *Server
	db             *store.DB
	state          oidc.State
	signer         *routesig.Signer
	userID         string
	client, secret string
}

func newOIDCBench(b *testing.B, dbCfg store.Config, clientCache time.Duration) *oidcBench {
	b.Helper()
	ctx := context.Background()
	dbCfg.MasterKey = make([]byte, 32)
	rand.Read(dbCfg.MasterKey)
	db, err := store.Open(ctx, dbCfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b)})
	b.Cleanup(func() { rc.Close() })
	state := oidc.NewRedisState(rc, testenv.RedisPrefix(b))
	keys, err := oidc.NewKeyRing("eu-west", 0)
	if err != nil {
		b.Fatal(err)
	}
	skey, _ := session.GenerateSigningKey("eu-west", 1)
	routeKey := []byte(strings.Repeat("r", 32))
	hasher, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	srv, err := New(Config{
		Name: "eu-west", Users: db, Accounts: db, MFA: db, Consent: db, Admin: db, Audit: db, Passkeys: db, Sessions: session.NewMemory(),
		Index: noIndex{}, Hasher: hasher, RouteKey: routeKey, SessionKey: skey, Mailer: mail.NewOutbox(0, nil),
		PublicURL: "https://id.example.com", AdminToken: uiAdminToken,
		OIDC: &oidc.Config{Keys: keys, State: state, ClientCacheTTL: clientCache, NoBackchannel: true}, ClientAdmin: db,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Wait)
	secret, hash, _ := oidc.NewSecret()
	if err := db.CreateClient(ctx, store.Client{ID: "bench", SecretHash: hash, RedirectURIs: []string{"https://rp.example.com/cb"},
		GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"}, Scopes: []string{"openid", "offline_access", "api"}}); err != nil {
		b.Fatal(err)
	}
	uid, _ := newUserID("eu-west")
	if err := db.CreateUser(ctx, store.User{ID: uid, Email: "bench@acme.de", PasswordHash: "$argon2id$x"}); err != nil {
		b.Fatal(err)
	}
	signer, _ := routesig.NewSigner(routeKey, "bench")
	return &oidcBench{srv: srv, db: db, state: state, signer: signer, userID: uid, client: "bench", secret: secret}
}

// post sends a routed form POST and decodes the JSON answer; it fails the
// benchmark unless the answer is 200.
func (o *oidcBench) post(b *testing.B, path string, form url.Values) map[string]any {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(o.client, o.secret)
	req.Header.Set(routesig.Header, string(o.signer.AppendHeader(nil, http.MethodPost, path, "eu-west", time.Now())))
	rec := httptest.NewRecorder()
	o.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("%s: HTTP %d %s", path, rec.Code, rec.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		b.Fatal(err)
	}
	return m
}

// family starts a refresh token family for the bench user and returns its
// first token.
func (o *oidcBench) family(b *testing.B) string {
	raw := make([]byte, 32)
	rand.Read(raw)
	fid := make([]byte, 16)
	rand.Read(fid)
	tok := "eu-west." + base64.RawURLEncoding.EncodeToString(raw)
	f := oidc.Family{ID: base64.RawURLEncoding.EncodeToString(fid), ClientID: o.client, Subject: o.userID, SessionID: "bench-sid",
		Scopes: []string{"openid", "offline_access"}, AuthTime: time.Now().Unix(), AMR: []string{"pwd"}, Expiry: time.Now().Add(time.Hour).Unix()}
	if err := o.state.StartFamily(context.Background(), f, tok); err != nil {
		b.Fatal(err)
	}
	return tok
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkOIDC measures the hot protocol paths on Redis state: the
// refresh grant (rotation, user check, access token and ID token signed),
// the client credentials grant and introspection, with the client
// registry on SQLite and on PostgreSQL, read through the provider's
// 5-second client cache (the default) and without it. ops/s is the
// throughput; run with -cpu 1 for the figure per core.
func BenchmarkOIDC(b *testing.B) {
	stores := []struct {
		name string
		cfg  func(b *testing.B) store.Config
	}{
		{"sqlite", func(b *testing.B) store.Config {
			return store.Config{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "r.db")}
		}},
		{"postgres", func(b *testing.B) store.Config {
			return store.Config{Driver: "postgres", DSN: testenv.PostgresDSN(b)}
		}},
	}
	for _, st := range stores {
		for _, cache := range []struct {
			name string
			ttl  time.Duration
		}{{"cached", 0}, {"uncached", -1}} {
			prefix := st.name + "/" + cache.name
			b.Run("refresh/"+prefix, func(b *testing.B) {
				o := newOIDCBench(b, st.cfg(b), cache.ttl)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					rt := o.family(b)
					for pb.Next() {
						m := o.post(b, oidc.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
						rt = m["refresh_token"].(string)
						if m["id_token"] == nil {
							b.Fatal("no ID token")
						}
					}
				})
				reportRate(b)
			})
			b.Run("client_credentials/"+prefix, func(b *testing.B) {
				o := newOIDCBench(b, st.cfg(b), cache.ttl)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						o.post(b, oidc.PathToken, url.Values{"grant_type": {"client_credentials"}, "scope": {"api"}})
					}
				})
				reportRate(b)
			})
			b.Run("introspection/"+prefix, func(b *testing.B) {
				o := newOIDCBench(b, st.cfg(b), cache.ttl)
				at := o.post(b, oidc.PathToken, url.Values{"grant_type": {"client_credentials"}, "scope": {"api"}})["access_token"].(string)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if m := o.post(b, oidc.PathIntrospect, url.Values{"token": {at}}); m["active"] != true {
							b.Fatal(fmt.Sprint("inactive: ", m))
						}
					}
				})
				reportRate(b)
			})
		}
	}
}
