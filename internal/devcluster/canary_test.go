package devcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/domicile/domicile/internal/launch"
	"github.com/domicile/domicile/internal/testenv"
	"github.com/domicile/domicile/region/store"
)

// encodings returns the forms in which marker could hide: plain, hex and
// base64 (standard and URL alphabets, at every alignment).
func encodings(marker string) map[string][]byte {
	out := map[string][]byte{
		"plain":     []byte(marker),
		"hex":       []byte(hex.EncodeToString([]byte(marker))),
		"HEX":       []byte(strings.ToUpper(hex.EncodeToString([]byte(marker)))),
		"lowercase": []byte(strings.ToLower(marker)),
	}
	for pad := 0; pad < 3; pad++ {
		for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
			full := enc.EncodeToString(append(bytes.Repeat([]byte{0}, pad), marker...))
			// Drop the characters that depend on neighbouring bytes.
			start := (pad*8 + 5) / 6
			stable := full[start : len(full)-4]
			out[fmt.Sprintf("%s+%d", name, pad)] = []byte(stable)
		}
	}
	return out
}

type scanner struct {
	t       *testing.T
	forms   map[string][]byte
	scanned int64
	hits    []string
}

func (s *scanner) scan(where string, data []byte) {
	s.scanned += int64(len(data))
	for form, b := range s.forms {
		if bytes.Contains(data, b) {
			s.hits = append(s.hits, where+" ("+form+")")
		}
	}
}

func (s *scanner) scanTree(root string) {
	s.t.Helper()
	if _, err := os.Stat(root); os.IsNotExist(err) {
		return // e.g. a region whose database is PostgreSQL
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		s.scan(path, data)
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

// scanSchema dumps every row of every table in a PostgreSQL schema as JSON.
func (s *scanner) scanSchema(dsn string) {
	s.t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		s.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) == 0 {
		s.t.Fatalf("no tables in %s", dsn)
	}
	for _, tbl := range tables {
		r, err := db.Query(fmt.Sprintf(`SELECT row_to_json(t)::text FROM %q t`, tbl))
		if err != nil {
			s.t.Fatal(err)
		}
		for r.Next() {
			var j string
			r.Scan(&j)
			s.scan("postgres table "+tbl, []byte(j))
		}
		r.Close()
	}
}

func (s *scanner) scanRedis(addr, prefix string) {
	s.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	ctx := context.Background()
	iter := rc.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		s.scan("redis key", []byte(k))
		v, _ := rc.Dump(ctx, k).Bytes()
		s.scan("redis value of "+k, v)
		if str, err := rc.Get(ctx, k).Bytes(); err == nil {
			s.scan("redis value of "+k, str)
		}
	}
	if err := iter.Err(); err != nil {
		s.t.Fatal(err)
	}
}

func marker(t *testing.T) string {
	b := make([]byte, 9)
	rand.Read(b)
	return "Canary" + strings.ToUpper(hex.EncodeToString(b))
}

// Residency canary: a user of eu-west whose email, name and password carry a
// unique marker leaves no trace of it in any other region or any router —
// not in their databases, session stores, Raft logs and snapshots, or logs.
// The same scan finds the marker in eu-west, so it is known to work.
func TestResidencyCanary(t *testing.T) {
	for _, backend := range []string{"sqlite+memory", "postgres+redis"} {
		t.Run(backend, func(t *testing.T) { canary(t, backend) })
	}
}

func canary(t *testing.T, backend string) {
	m := marker(t)
	dir := t.TempDir()
	logs := &testenv.LogBuffer{}
	cfg := Config{DataDir: dir, Argon2: lightArgon2, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	dsns := map[string]string{}
	var redisAddr, prefix string
	if backend == "postgres+redis" {
		for _, name := range []string{"eu-west", "us-east", "ap-southeast"} {
			dsns[name] = testenv.PostgresDSN(t)
		}
		redisAddr, prefix = testenv.RedisAddr(t), testenv.RedisPrefix(t)
		cfg.Database = func(region string) store.Config { return store.Config{Driver: "postgres", DSN: dsns[region]} }
		cfg.Sessions = launch.SessionsConfig{Store: "redis", Redis: redisAddr, Prefix: prefix}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	email := strings.ToLower(m) + "@acme.de"
	body := fmt.Sprintf(`{"email":%q,"name":"Ana %s","password":"pw-%s-secret"}`, email, m, m)
	r := c.RouterURLs()
	expect(t, "sign-up", post(t, nil, r[0]+"/signup", body, nil), http.StatusCreated)
	login := post(t, nil, r[2]+"/login", fmt.Sprintf(`{"email":%q,"password":"pw-%s-secret"}`, email, m), nil)
	expect(t, "login", login, http.StatusOK)
	if login.Body["home"] != "eu-west" {
		t.Fatalf("home %v", login.Body["home"])
	}
	// Wrong password and a duplicate sign-up through other routers too, so
	// the marker passes through every router.
	post(t, nil, r[1]+"/login", fmt.Sprintf(`{"email":%q,"password":"wrong-%s"}`, email, m), nil)
	post(t, nil, r[1]+"/signup", body, nil)
	// eu-west can read its user back (decrypting the personal data).
	home, err := c.Regions["eu-west"].Store.UserByEmail(ctx, email)
	if err != nil {
		t.Fatalf("eu-west reading its user: %v", err)
	}
	for _, rt := range c.Routers {
		if err := rt.Index.Snapshot(); err != nil {
			t.Fatalf("%s snapshot: %v", rt.Name, err)
		}
	}
	if err := c.Shutdown(ctx); err != nil { // flush everything to disk
		t.Fatal(err)
	}

	forms := encodings(m)
	outside := &scanner{t: t, forms: forms}
	for _, name := range []string{"us-east", "ap-southeast"} {
		outside.scanTree(filepath.Join(dir, name))
		if dsn := dsns[name]; dsn != "" {
			outside.scanSchema(dsn)
		}
		if redisAddr != "" {
			outside.scanRedis(redisAddr, prefix+name+":")
		}
	}
	for i := 1; i <= Routers; i++ {
		outside.scanTree(filepath.Join(dir, fmt.Sprintf("router-%d", i)))
	}
	var otherLines []string // everything not logged by eu-west itself
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "node=eu-west") {
			otherLines = append(otherLines, line)
		}
	}
	outside.scan("logs of routers and other regions", []byte(strings.Join(otherLines, "\n")))
	if len(outside.hits) > 0 {
		t.Fatalf("marker found outside eu-west: %v", outside.hits)
	}
	if outside.scanned < 10_000 {
		t.Fatalf("scanned only %d bytes: the scan is not looking at anything", outside.scanned)
	}

	// Positive control: the same scan finds the marker in what eu-west
	// decrypts for its own use.
	control := &scanner{t: t, forms: forms}
	control.scan("eu-west's user record, decrypted", []byte(home.Email+" "+home.Name))
	if len(control.hits) == 0 {
		t.Fatalf("the marker is not found in eu-west's own record either: the scan is broken")
	}
	// At home, personal data is encrypted at rest (per-user keys): eu-west's
	// files and schema hold no plaintext either.
	atRest := &scanner{t: t, forms: forms}
	atRest.scanTree(filepath.Join(dir, "eu-west"))
	if dsn := dsns["eu-west"]; dsn != "" {
		atRest.scanSchema(dsn)
	}
	if len(atRest.hits) > 0 {
		t.Errorf("plaintext personal data at rest in eu-west: %v", atRest.hits)
	}
	t.Logf("%s: scanned %d bytes outside eu-west (2 regions, %d routers, logs): 0 occurrences of the marker in %d forms; eu-west at rest: %d bytes scanned, 0 occurrences; found in eu-west's decrypted record: %v",
		backend, outside.scanned, Routers, len(forms), atRest.scanned, control.hits)
}
