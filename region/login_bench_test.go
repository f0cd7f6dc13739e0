package region

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/routesig"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// noIndex stands in for the home index, which a login does not use.
type noIndex struct{}

func (noIndex) ClaimByRule(context.Context, []homeindex.Key, string, string, string) error {
	return nil
}
func (noIndex) Release(context.Context, []homeindex.Key, string) error { return nil }

// benchRegion is a regional server on a real database and session store,
// with one user, and what it takes to send it routed logins.
type benchRegion struct {
	srv    *Server
	signer *routesig.Signer
	ident  [routesig.IdentLen]byte
	body   string
}

func newBenchRegion(b *testing.B, dbCfg store.Config, sessions session.Store) *benchRegion {
	b.Helper()
	ctx := context.Background()
	dbCfg.MasterKey = make([]byte, 32)
	rand.Read(dbCfg.MasterKey)
	db, err := store.Open(ctx, dbCfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	key, _ := session.GenerateSigningKey("eu-west", 1)
	routeKey := []byte(strings.Repeat("r", 32))
	hasher, _ := homeindex.NewHasher([]byte(strings.Repeat("k", 32)))
	srv, err := New(Config{
		Name: "eu-west", Users: db, Accounts: db, MFA: db, Consent: db, Admin: db, Audit: db, Passkeys: db, Sessions: sessions, Index: noIndex{}, Hasher: hasher,
		RouteKey: routeKey, SessionKey: key, Mailer: mail.NewOutbox(0, nil), PublicURL: "http://id.example.com",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Wait) // before the database closes: audit records are written after answering
	const pw = "correct horse battery staple"
	hash, err := hashPassword(DefaultArgon2, pw)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.CreateUser(ctx, store.User{ID: "eu-west.bench", Email: "ana@acme.de", PasswordHash: hash}); err != nil {
		b.Fatal(err)
	}
	signer, _ := routesig.NewSigner(routeKey, "bench")
	return &benchRegion{srv: srv, signer: signer, ident: [16]byte(hasher.EmailKey("ana@acme.de")),
		body: `{"email":"ana@acme.de","password":"` + pw + `"}`}
}

// login sends one routed login and fails the benchmark unless it succeeds.
func (r *benchRegion) login(b *testing.B) {
	req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(r.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(routesig.Header, string(r.signer.AppendHeaderFor(nil, http.MethodPost, "/login", "eu-west", &r.ident, time.Now())))
	rec := httptest.NewRecorder()
	r.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("login: HTTP %d %s", rec.Code, rec.Body)
	}
}

// BenchmarkPasswordLogin measures a complete password login on a regional
// node (route header check, user lookup and decryption, argon2id at the
// production cost, lockout bookkeeping, session stored, token signed,
// audit entry appended) beside the argon2id verification alone. Run with
// -cpu 1 for logins per second per core; p50-ms is the median login.
func BenchmarkPasswordLogin(b *testing.B) {
	hash, _ := hashPassword(DefaultArgon2, "correct horse battery staple")
	b.Run("argon2id-alone", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t := time.Now()
			if ok, _ := verifyPassword(hash, "correct horse battery staple"); !ok {
				b.Fatal("verify failed")
			}
			lat = append(lat, time.Since(t))
		}
		reportP50(b, lat)
	})
	run := func(b *testing.B, r *benchRegion) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t := time.Now()
			r.login(b)
			lat = append(lat, time.Since(t))
		}
		reportP50(b, lat)
	}
	b.Run("sqlite+memory", func(b *testing.B) {
		run(b, newBenchRegion(b, store.Config{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "r.db")}, session.NewMemory()))
	})
	b.Run("postgres+redis", func(b *testing.B) {
		rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b)})
		b.Cleanup(func() { rc.Close() })
		run(b, newBenchRegion(b, store.Config{Driver: "postgres", DSN: testenv.PostgresDSN(b)}, session.NewRedis(rc, testenv.RedisPrefix(b))))
	})
}

func reportP50(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
}
