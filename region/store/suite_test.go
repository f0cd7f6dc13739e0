package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/domicile/domicile/region/store"
)

// The tests in this file are part of the conformance suite TestStore runs on
// every backend.

func createUser(t *testing.T, db *store.DB, u store.User) {
	t.Helper()
	if u.PasswordHash == "" {
		u.PasswordHash = "$argon2id$" + u.ID
	}
	if err := db.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("CreateUser(%s): %v", u.ID, err)
	}
}

func userByID(t *testing.T, db *store.DB, id string) store.User {
	t.Helper()
	u, err := db.UserByID(context.Background(), id)
	if err != nil {
		t.Fatalf("UserByID(%s): %v", id, err)
	}
	return u
}

func wantIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want %v", what, err, target)
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func testProfile(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "p-1", Email: "Prof@Example.com", Name: "Ann", Attributes: map[string]string{"locale": "fr", "empty": ""}})

	t.Run("read back by id and email", func(t *testing.T) {
		u := userByID(t, db, "p-1")
		want := map[string]string{"locale": "fr"}
		if u.Email != "prof@example.com" || u.Name != "Ann" || u.PasswordHash != "$argon2id$p-1" || !maps.Equal(u.Attributes, want) ||
			u.EmailVerified || u.Disabled {
			t.Fatalf("UserByID = %+v", u)
		}
		if byEmail := mustGet(t, db, "prof@example.com"); !reflect.DeepEqual(byEmail, u) {
			t.Fatalf("UserByEmail = %+v, UserByID = %+v", byEmail, u)
		}
		_, err := db.UserByID(ctx, "p-nobody")
		wantIs(t, "UserByID(unknown)", err, store.ErrNotFound)
	})
	t.Run("update name and attributes", func(t *testing.T) {
		name := "Ann Bé"
		err := db.UpdateProfile(ctx, "p-1", store.ProfileUpdate{Name: &name, Attributes: map[string]string{"phone": "+33 1 23", "locale": ""}})
		if err != nil {
			t.Fatal(err)
		}
		u := userByID(t, db, "p-1")
		if u.Name != name || !maps.Equal(u.Attributes, map[string]string{"phone": "+33 1 23"}) {
			t.Fatalf("after update: %+v", u)
		}
		// Attributes only: the name stays.
		if err := db.UpdateProfile(ctx, "p-1", store.ProfileUpdate{Attributes: map[string]string{"phone": ""}}); err != nil {
			t.Fatal(err)
		}
		if u := userByID(t, db, "p-1"); u.Name != name || u.Attributes != nil {
			t.Fatalf("after removing the last attribute: %+v, want name kept and no attributes", u)
		}
		if err := db.UpdateProfile(ctx, "p-1", store.ProfileUpdate{}); err != nil {
			t.Fatalf("empty update: %v", err)
		}
	})
	t.Run("invalid updates are refused and change nothing", func(t *testing.T) {
		before := userByID(t, db, "p-1")
		long := strings.Repeat("x", store.MaxNameBytes+1)
		for _, up := range []store.ProfileUpdate{
			{Attributes: map[string]string{"Phone": "1"}},
			{Attributes: map[string]string{"a-b": "1"}},
			{Attributes: map[string]string{"": "1"}},
			{Attributes: map[string]string{strings.Repeat("k", store.MaxAttributeKey+1): "1"}},
			{Attributes: map[string]string{"ok": strings.Repeat("v", store.MaxAttributeValue+1)}},
			{Attributes: map[string]string{"ok": "\xff"}},
			{Name: &long},
		} {
			err := db.UpdateProfile(ctx, "p-1", up)
			if err == nil || errors.Is(err, store.ErrNotFound) {
				t.Errorf("UpdateProfile(%.80v) = %v, want a validation error", up, err)
			}
		}
		if after := userByID(t, db, "p-1"); !reflect.DeepEqual(after, before) {
			t.Fatalf("refused updates changed the user: %+v, was %+v", after, before)
		}
	})
	t.Run("at most MaxAttributes", func(t *testing.T) {
		createUser(t, db, store.User{ID: "p-many", Email: "many@example.com"})
		attrs := map[string]string{}
		for i := range store.MaxAttributes {
			attrs[fmt.Sprintf("a%d", i)] = strings.Repeat("v", store.MaxAttributeValue)
		}
		if err := db.UpdateProfile(ctx, "p-many", store.ProfileUpdate{Attributes: attrs}); err != nil {
			t.Fatal(err)
		}
		if err := db.UpdateProfile(ctx, "p-many", store.ProfileUpdate{Attributes: map[string]string{"one_more": "x"}}); err == nil {
			t.Fatal("an attribute beyond MaxAttributes was accepted")
		}
		// Replacing one and adding one while removing one is fine.
		if err := db.UpdateProfile(ctx, "p-many", store.ProfileUpdate{Attributes: map[string]string{"a0": "", "one_more": "x", "a1": "y"}}); err != nil {
			t.Fatal(err)
		}
		u := userByID(t, db, "p-many")
		if len(u.Attributes) != store.MaxAttributes || u.Attributes["one_more"] != "x" || u.Attributes["a1"] != "y" {
			t.Fatalf("got %d attributes, one_more=%q a1=%q", len(u.Attributes), u.Attributes["one_more"], u.Attributes["a1"])
		}
		tooMany := maps.Clone(attrs)
		tooMany["x"] = "1"
		err := db.CreateUser(ctx, store.User{ID: "p-toomany", Email: "toomany@example.com", PasswordHash: "h", Attributes: tooMany})
		if err == nil {
			t.Fatal("CreateUser with too many attributes succeeded")
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		name := "x"
		wantIs(t, "UpdateProfile", db.UpdateProfile(ctx, "p-nobody", store.ProfileUpdate{Name: &name}), store.ErrNotFound)
	})
	t.Run("concurrent updates lose nothing", func(t *testing.T) {
		createUser(t, db, store.User{ID: "p-conc", Email: "conc@example.com"})
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				errs[i] = db.UpdateProfile(ctx, "p-conc", store.ProfileUpdate{Attributes: map[string]string{fmt.Sprintf("k%d", i): "v"}})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("UpdateProfile #%d: %v", i, err)
			}
		}
		if u := userByID(t, db, "p-conc"); len(u.Attributes) != n {
			t.Fatalf("after %d concurrent updates of distinct attributes: %v", n, u.Attributes)
		}
	})
}

func testLoginState(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "ls-1", Email: "state@example.com", PasswordHash: "old"})
	if err := db.SetPasswordHash(ctx, "ls-1", "new"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetEmailVerified(ctx, "ls-1", true); err != nil {
		t.Fatal(err)
	}
	if err := db.SetDisabled(ctx, "ls-1", true); err != nil {
		t.Fatal(err)
	}
	u := mustGet(t, db, "state@example.com")
	if u.PasswordHash != "new" || !u.EmailVerified || !u.Disabled {
		t.Fatalf("after setting: %+v", u)
	}
	if err := db.SetEmailVerified(ctx, "ls-1", false); err != nil {
		t.Fatal(err)
	}
	if err := db.SetDisabled(ctx, "ls-1", false); err != nil {
		t.Fatal(err)
	}
	if u := userByID(t, db, "ls-1"); u.EmailVerified || u.Disabled || u.PasswordHash != "new" {
		t.Fatalf("after clearing: %+v", u)
	}
	if err := db.SetPasswordHash(ctx, "ls-1", ""); err == nil {
		t.Error("empty password hash accepted")
	}
	wantIs(t, "SetPasswordHash(unknown)", db.SetPasswordHash(ctx, "ls-nobody", "h"), store.ErrNotFound)
	wantIs(t, "SetEmailVerified(unknown)", db.SetEmailVerified(ctx, "ls-nobody", true), store.ErrNotFound)
	wantIs(t, "SetDisabled(unknown)", db.SetDisabled(ctx, "ls-nobody", true), store.ErrNotFound)
}

func newToken(t testing.TB) ([32]byte, string) {
	secret := randomHex(t, 32)
	return sha256.Sum256([]byte(secret)), secret
}

func testTokens(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "tok-1", Email: "tok@example.com"})
	now := time.Now()
	mustCreate := func(t *testing.T, tok store.Token) {
		t.Helper()
		if err := db.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
	}

	t.Run("single use, for its purpose only", func(t *testing.T) {
		h, _ := newToken(t)
		mustCreate(t, store.Token{Hash: h, UserID: "tok-1", Purpose: "verify_email", ExpiresAt: now.Add(time.Hour)})
		_, err := db.ConsumeToken(ctx, h, "reset_password", now)
		wantIs(t, "consume for another purpose", err, store.ErrNotFound)
		id, err := db.ConsumeToken(ctx, h, "verify_email", now)
		if err != nil || id != "tok-1" {
			t.Fatalf("ConsumeToken = %q, %v; want tok-1", id, err)
		}
		_, err = db.ConsumeToken(ctx, h, "verify_email", now)
		wantIs(t, "second consume", err, store.ErrNotFound)
		unknown, _ := newToken(t)
		_, err = db.ConsumeToken(ctx, unknown, "verify_email", now)
		wantIs(t, "unknown token", err, store.ErrNotFound)
	})
	t.Run("expired", func(t *testing.T) {
		h, _ := newToken(t)
		mustCreate(t, store.Token{Hash: h, UserID: "tok-1", Purpose: "reset_password", ExpiresAt: now})
		_, err := db.ConsumeToken(ctx, h, "reset_password", now) // expiry is not after now
		wantIs(t, "consume at expiry", err, store.ErrExpired)
		_, err = db.ConsumeToken(ctx, h, "reset_password", now.Add(-time.Hour))
		wantIs(t, "consume after an expired attempt", err, store.ErrNotFound)
	})
	t.Run("invalid", func(t *testing.T) {
		h, _ := newToken(t)
		for _, tok := range []store.Token{
			{UserID: "tok-1", Purpose: "x", ExpiresAt: now},
			{Hash: h, UserID: "tok-1", Purpose: "", ExpiresAt: now},
			{Hash: h, UserID: "tok-1", Purpose: "Bad Purpose", ExpiresAt: now},
			{Hash: h, UserID: "tok-1", Purpose: "x"},
		} {
			if err := db.CreateToken(ctx, tok); err == nil {
				t.Errorf("CreateToken(%+v) succeeded", tok)
			}
		}
		wantIs(t, "unknown user", db.CreateToken(ctx, store.Token{Hash: h, UserID: "tok-nobody", Purpose: "x", ExpiresAt: now}), store.ErrNotFound)
		mustCreate(t, store.Token{Hash: h, UserID: "tok-1", Purpose: "x", ExpiresAt: now})
		wantIs(t, "same hash", db.CreateToken(ctx, store.Token{Hash: h, UserID: "tok-1", Purpose: "y", ExpiresAt: now}), store.ErrDuplicate)
	})
	t.Run("delete and purge", func(t *testing.T) {
		createUser(t, db, store.User{ID: "tok-2", Email: "tok2@example.com"})
		var hs [4][32]byte
		for i := range hs {
			hs[i], _ = newToken(t)
		}
		mustCreate(t, store.Token{Hash: hs[0], UserID: "tok-2", Purpose: "a", ExpiresAt: now.Add(time.Hour)})
		mustCreate(t, store.Token{Hash: hs[1], UserID: "tok-2", Purpose: "b", ExpiresAt: now.Add(time.Hour)})
		mustCreate(t, store.Token{Hash: hs[2], UserID: "tok-2", Purpose: "b", ExpiresAt: now.Add(time.Hour)})
		mustCreate(t, store.Token{Hash: hs[3], UserID: "tok-2", Purpose: "c", ExpiresAt: now.Add(-time.Minute)})
		if err := db.DeleteTokens(ctx, "tok-2", "b"); err != nil {
			t.Fatal(err)
		}
		for _, h := range hs[1:3] {
			_, err := db.ConsumeToken(ctx, h, "b", now)
			wantIs(t, "deleted token", err, store.ErrNotFound)
		}
		n, err := db.PurgeExpiredTokens(ctx, now)
		if err != nil || n < 1 {
			t.Fatalf("PurgeExpiredTokens = %d, %v; want at least 1", n, err)
		}
		_, err = db.ConsumeToken(ctx, hs[3], "c", now.Add(-time.Hour))
		wantIs(t, "purged token", err, store.ErrNotFound)
		if err := db.DeleteTokens(ctx, "tok-2", ""); err != nil {
			t.Fatal(err)
		}
		_, err = db.ConsumeToken(ctx, hs[0], "a", now)
		wantIs(t, "token deleted with all purposes", err, store.ErrNotFound)
	})
	t.Run("concurrent consumers: exactly one wins", func(t *testing.T) {
		const consumers, rounds = 8, 10
		for round := range rounds {
			h, _ := newToken(t)
			mustCreate(t, store.Token{Hash: h, UserID: "tok-1", Purpose: "race", ExpiresAt: now.Add(time.Hour)})
			ids := make([]string, consumers)
			errs := make([]error, consumers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range consumers {
				wg.Go(func() {
					<-start
					ids[i], errs[i] = db.ConsumeToken(ctx, h, "race", now)
				})
			}
			close(start)
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil && ids[i] == "tok-1":
					won++
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("round %d: ConsumeToken #%d = %q, %v; want tok-1 or ErrNotFound", round, i, ids[i], err)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d of %d concurrent consumers succeeded, want exactly 1", round, won, consumers)
			}
		}
	})
}

func testLoginFailures(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "lf-1", Email: "lf@example.com"})
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		if err := db.RecordLoginFailure(ctx, "lf-1", t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	count := func(since time.Time) int {
		t.Helper()
		n, err := db.CountLoginFailures(ctx, "lf-1", since)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := count(t0); got != 3 {
		t.Errorf("since t0: %d, want 3", got)
	}
	if got := count(t0.Add(time.Minute)); got != 2 {
		t.Errorf("since t0+1m: %d, want 2", got)
	}
	if got := count(t0.Add(time.Hour)); got != 0 {
		t.Errorf("since t0+1h: %d, want 0", got)
	}
	if err := db.ClearLoginFailures(ctx, "lf-1"); err != nil {
		t.Fatal(err)
	}
	if got := count(t0); got != 0 {
		t.Errorf("after clear: %d, want 0", got)
	}
	wantIs(t, "unknown user", db.RecordLoginFailure(ctx, "lf-nobody", t0), store.ErrNotFound)
	if n, err := db.CountLoginFailures(ctx, "lf-nobody", t0); n != 0 || err != nil {
		t.Errorf("count for an unknown user = %d, %v; want 0", n, err)
	}
	// Kept: the newest MaxLoginFailures.
	for i := range store.MaxLoginFailures + 5 {
		if err := db.RecordLoginFailure(ctx, "lf-1", t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(t0); got != store.MaxLoginFailures {
		t.Errorf("after %d failures: %d kept, want %d", store.MaxLoginFailures+5, got, store.MaxLoginFailures)
	}
	if got := count(t0.Add(5 * time.Second)); got != store.MaxLoginFailures {
		t.Errorf("the newest were not the ones kept: %d since the 6th, want %d", got, store.MaxLoginFailures)
	}
}

// userRowCopy is a raw copy of a user's row, as a backup would hold it.
type userRowCopy struct {
	emailHash, email, name, passwordHash, attributes []byte
	emailVerified, disabled                          any
	createdAt                                        any
}

func copyUserRow(t *testing.T, raw *sql.DB, id string) userRowCopy {
	t.Helper()
	var c userRowCopy
	err := raw.QueryRow(`SELECT email_hash, email, name, password_hash, attributes, email_verified, disabled, created_at FROM users WHERE id = $1`, id).
		Scan(&c.emailHash, &c.email, &c.name, &c.passwordHash, &c.attributes, &c.emailVerified, &c.disabled, &c.createdAt)
	if err != nil {
		t.Fatalf("copy row of %s: %v", id, err)
	}
	return c
}

func testShredding(t *testing.T, b backend, cfg store.Config, db *store.DB) {
	ctx := context.Background()
	raw := b.raw(t, cfg)
	marker := "mk" + randomHex(t, 8)
	email := marker + "@example.com"
	u := store.User{ID: "sh-1", Email: strings.ToUpper(email), Name: "Name " + marker, PasswordHash: "$argon2id$" + marker,
		Attributes: map[string]string{"city": "City " + marker}}
	createUser(t, db, u)
	if err := db.CreateToken(ctx, store.Token{Hash: sha256.Sum256([]byte(marker)), UserID: "sh-1", Purpose: "verify_email", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordLoginFailure(ctx, "sh-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := db.AddPasskey(ctx, newPasskey(t, "sh-1", "Key "+marker)); err != nil {
		t.Fatal(err)
	}
	var sealedPasskeyName []byte
	if err := raw.QueryRow(`SELECT name FROM passkeys WHERE user_id = 'sh-1'`).Scan(&sealedPasskeyName); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealedPasskeyName, []byte(marker)) {
		t.Error("column passkeys.name holds the plaintext")
	}
	if got, err := store.DecryptColumn(ctx, db, "sh-1", "passkey_name", sealedPasskeyName); err != nil || string(got) != "Key "+marker {
		t.Fatalf("DecryptColumn(passkey_name) = %q, %v", got, err)
	}
	backup := copyUserRow(t, raw, "sh-1")

	// Stored encrypted: the row holds no plaintext.
	for name, v := range map[string][]byte{"email_hash": backup.emailHash, "email": backup.email, "name": backup.name,
		"password_hash": backup.passwordHash, "attributes": backup.attributes} {
		if bytes.Contains(bytes.ToLower(v), []byte(marker)) {
			t.Errorf("column %s holds the plaintext", name)
		}
	}
	// ... which the user's key decrypts, only for its own user and column.
	for column, want := range map[string]string{"email": email, "name": u.Name, "password_hash": u.PasswordHash} {
		ct := map[string][]byte{"email": backup.email, "name": backup.name, "password_hash": backup.passwordHash}[column]
		got, err := store.DecryptColumn(ctx, db, "sh-1", column, ct)
		if err != nil || string(got) != want {
			t.Fatalf("DecryptColumn(%s) before deletion = %q, %v; want %q", column, got, err, want)
		}
	}
	if got, err := store.DecryptColumn(ctx, db, "sh-1", "attributes", backup.attributes); err != nil || !bytes.Contains(got, []byte(marker)) {
		t.Fatalf("DecryptColumn(attributes) = %q, %v", got, err)
	}
	if _, err := store.DecryptColumn(ctx, db, "sh-1", "name", backup.email); err == nil {
		t.Error("the email ciphertext decrypted as the name column")
	}
	createUser(t, db, store.User{ID: "sh-other", Email: "other-" + marker + "@example.com"})
	if _, err := store.DecryptColumn(ctx, db, "sh-other", "email", backup.email); err == nil {
		t.Error("sh-1's email ciphertext decrypted with sh-other's key")
	}
	// A ciphertext moved to another user's row does not decrypt there.
	if _, err := raw.Exec(`UPDATE users SET name = $1 WHERE id = 'sh-other'`, backup.name); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UserByID(ctx, "sh-other"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("UserByID with another user's name ciphertext = %v, want a decryption error", err)
	}

	if err := db.DeleteUser(ctx, "sh-1"); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	// Every row is gone, and the key with them...
	for _, q := range []string{
		`SELECT count(*) FROM users WHERE id = 'sh-1'`,
		`SELECT count(*) FROM tokens WHERE user_id = 'sh-1'`,
		`SELECT count(*) FROM login_failures WHERE user_id = 'sh-1'`,
		`SELECT count(*) FROM passkeys WHERE user_id = 'sh-1'`,
	} {
		var n int
		if err := raw.QueryRow(q).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s = %d, %v; want 0", q, n, err)
		}
	}
	var keys int
	if err := b.rawKeys(t, cfg).QueryRow(`SELECT count(*) FROM ` + store.KeyStoreTable(db) + ` WHERE user_id = 'sh-1'`).Scan(&keys); err != nil || keys != 0 {
		t.Errorf("key store rows for sh-1 = %d, %v; want 0", keys, err)
	}
	// ... so the copy taken before is now undecryptable.
	for column, ct := range map[string][]byte{"email": backup.email, "name": backup.name, "password_hash": backup.passwordHash, "attributes": backup.attributes} {
		got, err := store.DecryptColumn(ctx, db, "sh-1", column, ct)
		if err == nil {
			t.Errorf("DecryptColumn(%s) after deletion = %q, want an error", column, got)
		}
		wantIs(t, "DecryptColumn after deletion", err, store.ErrNotFound)
	}
	// Restoring the row from the backup does not bring the user back.
	_, err := raw.Exec(`INSERT INTO users (id, email_hash, email, name, password_hash, attributes, email_verified, disabled, created_at)
		VALUES ('sh-1', $1, $2, $3, $4, $5, $6, $7, $8)`, backup.emailHash, backup.email, backup.name, backup.passwordHash,
		backup.attributes, backup.emailVerified, backup.disabled, backup.createdAt)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.UserByEmail(ctx, email)
	wantIs(t, "UserByEmail of a restored row", err, store.ErrNotFound)
	_, err = db.UserByID(ctx, "sh-1")
	wantIs(t, "UserByID of a restored row", err, store.ErrNotFound)
	if err := db.DeleteUser(ctx, "sh-1"); err != nil {
		t.Fatalf("DeleteUser of the restored row: %v", err)
	}
	wantIs(t, "DeleteUser again", db.DeleteUser(ctx, "sh-1"), store.ErrNotFound)
	// The email is free again.
	createUser(t, db, store.User{ID: "sh-2", Email: email})
}

func testExport(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "ex-1", Email: "export@example.com", Name: "Ex Port", PasswordHash: "$argon2id$secret-hash",
		Attributes: map[string]string{"locale": "de"}})
	hash, secret := newToken(t)
	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	if err := db.CreateToken(ctx, store.Token{Hash: hash, UserID: "ex-1", Purpose: "verify_email", ExpiresAt: expires}); err != nil {
		t.Fatal(err)
	}
	failedAt := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	if err := db.RecordLoginFailure(ctx, "ex-1", failedAt); err != nil {
		t.Fatal(err)
	}
	if err := db.SetEmailVerified(ctx, "ex-1", true); err != nil {
		t.Fatal(err)
	}
	seq, err := db.AppendAudit(ctx, store.AuditEvent{Actor: "ex-1", Action: "user.login_failed", Subject: "ex-1", IP: "192.0.2.1", Detail: map[string]string{"reason": "password"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.AppendAudit(ctx, store.AuditEvent{Actor: "system", Action: "other", Subject: "ex-other"}); err != nil {
		t.Fatal(err)
	}

	x, err := db.ExportUser(ctx, "ex-1")
	if err != nil {
		t.Fatalf("ExportUser: %v", err)
	}
	p := x.Profile
	if p.ID != "ex-1" || p.Email != "export@example.com" || p.Name != "Ex Port" || p.Attributes["locale"] != "de" || !p.EmailVerified ||
		p.Disabled || !p.HasPassword || p.CreatedAt.IsZero() {
		t.Errorf("Profile = %+v", p)
	}
	if len(x.Tokens) != 1 || x.Tokens[0].Purpose != "verify_email" || !x.Tokens[0].ExpiresAt.Equal(expires) {
		t.Errorf("Tokens = %+v", x.Tokens)
	}
	if len(x.LoginFailures) != 1 || !x.LoginFailures[0].Equal(failedAt) {
		t.Errorf("LoginFailures = %v, want [%v]", x.LoginFailures, failedAt)
	}
	if len(x.Audit) != 1 || x.Audit[0].Seq != seq || x.Audit[0].Action != "user.login_failed" || x.Audit[0].Detail["reason"] != "password" {
		t.Errorf("Audit = %+v", x.Audit)
	}
	js, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"secret-hash", secret, hex.EncodeToString(hash[:]), "ex-other"} {
		if strings.Contains(string(js), leak) {
			t.Errorf("export JSON contains %q: %s", leak, js)
		}
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"profile", "tokens", "login_failures", "passkeys", "audit", "exported_at"} {
		if _, ok := back[k]; !ok {
			t.Errorf("export JSON has no %q: %s", k, js)
		}
	}

	createUser(t, db, store.User{ID: "ex-empty", Email: "export-empty@example.com"})
	x, err = db.ExportUser(ctx, "ex-empty")
	if err != nil {
		t.Fatal(err)
	}
	if js, _ := json.Marshal(x); !strings.Contains(string(js), `"tokens":[]`) || !strings.Contains(string(js), `"attributes":{}`) ||
		!strings.Contains(string(js), `"passkeys":[]`) {
		t.Errorf("empty export should have empty lists and objects, not null: %s", js)
	}
	_, err = db.ExportUser(ctx, "ex-nobody")
	wantIs(t, "ExportUser(unknown)", err, store.ErrNotFound)
	if err := db.DeleteUser(ctx, "ex-1"); err != nil {
		t.Fatal(err)
	}
	_, err = db.ExportUser(ctx, "ex-1")
	wantIs(t, "ExportUser after deletion", err, store.ErrNotFound)
}

// auditChain opens a new database whose audit log holds n entries.
func auditChain(t *testing.T, b backend, n int) (*store.DB, *sql.DB) {
	t.Helper()
	cfg := b.config(t)
	db := openStore(t, cfg)
	for i := range n {
		if _, err := db.AppendAudit(context.Background(), store.AuditEvent{Actor: "admin:1", Action: "user.disabled",
			Subject: fmt.Sprintf("u-%d", i%3), IP: "198.51.100.7", Detail: map[string]string{"n": fmt.Sprint(i + 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	return db, b.raw(t, cfg)
}

// wantTampered checks that VerifyAudit fails at seq, having checked the
// entries before it.
func wantTampered(t *testing.T, db *store.DB, seq int64) {
	t.Helper()
	checked, err := db.VerifyAudit(context.Background())
	var ae *store.AuditError
	if !errors.As(err, &ae) || !errors.Is(err, store.ErrTampered) {
		t.Fatalf("VerifyAudit = %d, %v; want an *AuditError wrapping ErrTampered", checked, err)
	}
	if ae.Seq != seq || checked != int(seq-1) || !strings.Contains(err.Error(), fmt.Sprintf("seq %d", seq)) {
		t.Fatalf("VerifyAudit = %d, %v; want a failure at seq %d after %d checked", checked, err, seq, seq-1)
	}
}

func testAudit(t *testing.T, b backend) {
	ctx := context.Background()
	t.Run("concurrent appends never fork the chain", func(t *testing.T) {
		db, raw := auditChain(t, b, 0)
		if n, err := db.VerifyAudit(ctx); n != 0 || err != nil {
			t.Fatalf("VerifyAudit of an empty log = %d, %v", n, err)
		}
		const workers, each = 8, 50
		seqs := make([][]int64, workers)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					seq, err := db.AppendAudit(ctx, store.AuditEvent{Actor: "system", Action: "test.append", Subject: fmt.Sprintf("w-%d", w),
						Detail: map[string]string{"i": fmt.Sprint(i)}})
					if err != nil {
						errs[w] = err
						return
					}
					seqs[w] = append(seqs[w], seq)
				}
			})
		}
		wg.Wait()
		seen := map[int64]bool{}
		for w, err := range errs {
			if err != nil {
				t.Fatalf("worker %d: %v", w, err)
			}
			for _, s := range seqs[w] {
				if seen[s] {
					t.Fatalf("seq %d returned twice", s)
				}
				seen[s] = true
			}
		}
		n, err := db.VerifyAudit(ctx)
		if err != nil || n != workers*each {
			t.Fatalf("VerifyAudit = %d, %v; want %d, nil", n, err, workers*each)
		}
		var maxSeq, rows int64
		if err := raw.QueryRow(`SELECT COALESCE(MAX(seq), 0), count(*) FROM audit_log`).Scan(&maxSeq, &rows); err != nil || maxSeq != workers*each || rows != workers*each {
			t.Fatalf("audit_log: max seq %d, %d rows (%v); want %d of each", maxSeq, rows, err, workers*each)
		}
		events, err := db.AuditFor(ctx, "w-3")
		if err != nil || len(events) != each {
			t.Fatalf("AuditFor(w-3) = %d events, %v; want %d", len(events), err, each)
		}
		for i, e := range events {
			if e.Subject != "w-3" || e.Detail["i"] != fmt.Sprint(i) || e.At.IsZero() || e.At.Location() != time.UTC || (i > 0 && e.Seq <= events[i-1].Seq) {
				t.Fatalf("AuditFor(w-3)[%d] = %+v", i, e)
			}
		}
	})
	t.Run("round trip", func(t *testing.T) {
		db, _ := auditChain(t, b, 0)
		at := time.Date(2025, 2, 3, 4, 5, 6, 7891234, time.FixedZone("X", 3600))
		in := store.AuditEvent{Actor: "u-1", Action: "user.profile_updated", Subject: "u-1", IP: "2001:db8::1", At: at,
			Detail: map[string]string{"fields": "name,attributes", "ünïcode": "✓ <&>"}}
		seq, err := db.AppendAudit(ctx, in)
		if err != nil || seq != 1 {
			t.Fatalf("AppendAudit = %d, %v", seq, err)
		}
		got, err := db.AuditFor(ctx, "u-1")
		if err != nil || len(got) != 1 {
			t.Fatalf("AuditFor = %v, %v", got, err)
		}
		want := in
		want.Seq, want.At = 1, at.UTC().Truncate(time.Microsecond)
		if !reflect.DeepEqual(got[0], want) {
			t.Fatalf("AuditFor = %+v, want %+v", got[0], want)
		}
		if _, err := db.AppendAudit(ctx, store.AuditEvent{Subject: "u-1"}); err == nil {
			t.Error("an event without an action was appended")
		}
		if _, err := db.AppendAudit(ctx, store.AuditEvent{Action: "x", Detail: map[string]string{"k": "\xff"}}); err == nil {
			t.Error("an event with invalid UTF-8 was appended")
		}
		if n, err := db.VerifyAudit(ctx); n != 1 || err != nil {
			t.Fatalf("VerifyAudit = %d, %v", n, err)
		}
	})
	t.Run("modified detail", func(t *testing.T) {
		db, raw := auditChain(t, b, 10)
		var event []byte
		if err := raw.QueryRow(`SELECT event FROM audit_log WHERE seq = 5`).Scan(&event); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(event, &m); err != nil {
			t.Fatal(err)
		}
		m["detail"] = map[string]string{"n": "500"}
		event, _ = json.Marshal(m)
		if _, err := raw.Exec(`UPDATE audit_log SET event = $1 WHERE seq = 5`, event); err != nil {
			t.Fatal(err)
		}
		wantTampered(t, db, 5)
		// Rewriting the entry's hash too moves the failure to the next one.
		var prev []byte
		if err := raw.QueryRow(`SELECT prev_hash FROM audit_log WHERE seq = 5`).Scan(&prev); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(append(prev, event...))
		if _, err := raw.Exec(`UPDATE audit_log SET hash = $1 WHERE seq = 5`, h[:]); err != nil {
			t.Fatal(err)
		}
		wantTampered(t, db, 6)
	})
	t.Run("deleted middle entry", func(t *testing.T) {
		db, raw := auditChain(t, b, 10)
		if _, err := raw.Exec(`DELETE FROM audit_log WHERE seq = 4`); err != nil {
			t.Fatal(err)
		}
		wantTampered(t, db, 4)
	})
	t.Run("deleted last entry", func(t *testing.T) {
		db, raw := auditChain(t, b, 10)
		if _, err := raw.Exec(`DELETE FROM audit_log WHERE seq = 10`); err != nil {
			t.Fatal(err)
		}
		wantTampered(t, db, 10)
	})
	t.Run("reordered entries", func(t *testing.T) {
		db, raw := auditChain(t, b, 10)
		// Swap entries 3 and 7 whole, hashes included.
		if _, err := raw.Exec(`UPDATE audit_log SET seq = -1 WHERE seq = 3`); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`UPDATE audit_log SET seq = 3 WHERE seq = 7`, `UPDATE audit_log SET seq = 7 WHERE seq = -1`} {
			if _, err := raw.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		wantTampered(t, db, 3)
	})
	t.Run("changed subject column", func(t *testing.T) {
		db, raw := auditChain(t, b, 10)
		if _, err := raw.Exec(`UPDATE audit_log SET subject = 'someone-else' WHERE seq = 8`); err != nil {
			t.Fatal(err)
		}
		wantTampered(t, db, 8)
	})
}

func testKeyStore(t *testing.T, b backend) {
	ctx := context.Background()
	t.Run("default layout", func(t *testing.T) {
		cfg := b.config(t)
		db := openStore(t, cfg)
		createUser(t, db, store.User{ID: "ks-1", Email: "ks@example.com"})
		switch cfg.Driver {
		case "sqlite":
			if _, err := os.Stat(cfg.DSN + ".keys"); err != nil {
				t.Fatalf("no key store file next to the database: %v", err)
			}
		default:
			var schema string
			raw := b.raw(t, cfg)
			if err := raw.QueryRow(`SELECT current_schema()`).Scan(&schema); err != nil {
				t.Fatal(err)
			}
			var in []string
			rows, err := raw.Query(`SELECT table_schema FROM information_schema.tables WHERE table_name = 'user_keys'
				AND table_schema IN ($1, $2)`, schema, schema+"_keys")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var s string
				rows.Scan(&s)
				in = append(in, s)
			}
			rows.Close()
			if !reflect.DeepEqual(in, []string{schema + "_keys"}) {
				t.Fatalf("user_keys is in schemas %v, want only %s_keys", in, schema)
			}
		}
		var kek string
		var wrapped []byte
		if err := b.rawKeys(t, cfg).QueryRow(`SELECT kek_id, wrapped FROM `+store.KeyStoreTable(db)+` WHERE user_id = 'ks-1'`).Scan(&kek, &wrapped); err != nil {
			t.Fatal(err)
		}
		if len(kek) != 16 || len(wrapped) != 1+12+32+16 {
			t.Fatalf("key row: kek_id %q, %d bytes wrapped; want 16 hex digits and 61 bytes", kek, len(wrapped))
		}
	})
	t.Run("separate key store", func(t *testing.T) {
		cfg := b.config(t)
		cfg.KeysDSN = b.otherKeys(t)
		db := openStore(t, cfg)
		createUser(t, db, store.User{ID: "ks-2", Email: "ks2@example.com", Name: "Two"})
		db.Close()
		db = openStore(t, cfg)
		if u := mustGet(t, db, "ks2@example.com"); u.Name != "Two" {
			t.Fatalf("after reopening: %+v", u)
		}
		var n int
		if err := b.rawKeys(t, cfg).QueryRow(`SELECT count(*) FROM user_keys WHERE user_id = 'ks-2'`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("keys for ks-2 in the separate key store: %d, %v", n, err)
		}
		if err := db.DeleteUser(ctx, "ks-2"); err != nil {
			t.Fatal(err)
		}
		if err := b.rawKeys(t, cfg).QueryRow(`SELECT count(*) FROM user_keys`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("keys left after deletion: %d, %v", n, err)
		}
	})
	t.Run("wrong master key", func(t *testing.T) {
		cfg := b.config(t)
		db := openStore(t, cfg)
		createUser(t, db, store.User{ID: "ks-3", Email: "ks3@example.com"})
		db.Close()
		other := cfg
		other.MasterKey = newMasterKey(t)
		db, err := store.Open(ctx, other)
		if err == nil {
			db.Close()
			t.Fatal("Open with another master key succeeded")
		}
		if !strings.HasPrefix(err.Error(), "store: database.master_key: ") || !strings.Contains(err.Error(), "another master key") {
			t.Fatalf("Open with another master key = %v", err)
		}
	})
	t.Run("lost key store", func(t *testing.T) {
		cfg := b.config(t)
		db := openStore(t, cfg)
		createUser(t, db, store.User{ID: "ks-4", Email: "ks4@example.com"})
		db.Close()
		lost := cfg
		lost.KeysDSN = b.otherKeys(t)
		db, err := store.Open(ctx, lost)
		if err == nil {
			db.Close()
			t.Fatal("Open with an empty key store succeeded")
		}
		if !strings.HasPrefix(err.Error(), "store: keys_dsn: ") || !strings.Contains(err.Error(), "holds no data keys") {
			t.Fatalf("Open with an empty key store = %v", err)
		}
	})
	if b.name != "sqlite" {
		t.Run("keys DSN does not parse", func(t *testing.T) {
			cfg := b.config(t)
			cfg.KeysDSN = "postgres://h:notaport/db"
			db, err := store.Open(ctx, cfg)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.HasPrefix(err.Error(), "store: keys_dsn: ") {
				t.Fatalf("Open = %v, want a keys_dsn error", err)
			}
		})
	}
}

// testPlaintextMigration: a database written by a release that stored
// personal data in plain text (schema version 2) is encrypted by Open.
func testPlaintextMigration(t *testing.T, b backend, cfg store.Config) {
	ctx := context.Background()
	old, err := store.OpenAt(ctx, cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	marker := "pm" + randomHex(t, 8)
	raw := b.raw(t, cfg)
	for i, name := range []string{"Old " + marker, ""} {
		var created any = time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
		if b.flavor == 0 { // SQLite: Unix microseconds
			created = created.(time.Time).UnixMicro()
		}
		if _, err := raw.Exec(`INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
			fmt.Sprintf("old-%d", i), fmt.Sprintf("%s-%d@example.com", marker, i), name, "$argon2id$old", created); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	db := openStore(t, cfg)
	u := mustGet(t, db, marker+"-0@example.com")
	if u.ID != "old-0" || u.Name != "Old "+marker || u.PasswordHash != "$argon2id$old" ||
		!u.CreatedAt.Equal(time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)) {
		t.Fatalf("migrated user = %+v", u)
	}
	if u := mustGet(t, db, marker+"-1@example.com"); u.ID != "old-1" || u.Name != "" {
		t.Fatalf("migrated user = %+v", u)
	}
	wantIs(t, "CreateUser with a migrated email", db.CreateUser(ctx, store.User{ID: "new", Email: marker + "-1@example.com", PasswordHash: "h"}), store.ErrDuplicate)
	raw = b.raw(t, cfg)
	for i := range 2 {
		c := copyUserRow(t, raw, fmt.Sprintf("old-%d", i))
		for _, v := range [][]byte{c.email, c.name, c.passwordHash} {
			if bytes.Contains(v, []byte(marker)) || bytes.Contains(v, []byte("argon2id")) {
				t.Fatalf("old-%d still has plaintext after the migration", i)
			}
		}
	}
	wantMigrations(t, raw, store.MigrationCount(cfg.Driver))
	if b.name == "sqlite" {
		raw.Close()
		db.Close()
		wantNotOnDisk(t, cfg, marker)
	}
}

// sqliteFiles are the files of an SQLite store: database, key store and
// their WAL and shared-memory files.
func sqliteFiles(cfg store.Config) []string {
	var files []string
	for _, f := range []string{cfg.DSN, cfg.DSN + ".keys"} {
		files = append(files, f, f+"-wal", f+"-shm")
	}
	return files
}

// wantNotOnDisk fails if any of the SQLite store's files holds needle.
func wantNotOnDisk(t *testing.T, cfg store.Config, needles ...string) {
	t.Helper()
	for _, f := range sqliteFiles(cfg) {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needles {
			if bytes.Contains(data, []byte(n)) {
				what := fmt.Sprintf("%q", n)
				if !utf8.ValidString(n) {
					what = "the bytes " + hex.EncodeToString([]byte(n))
				}
				t.Errorf("%s holds %s", f, what)
			}
		}
	}
}

// TestSQLiteNoPlaintextOnDisk: a user's personal data is never written to
// the SQLite files in plain text, and after DeleteUser their wrapped data
// key is nowhere in the key store's file or WAL.
func TestSQLiteNoPlaintextOnDisk(t *testing.T) {
	ctx := context.Background()
	cfg := backends()[0].config(t)
	db := openStore(t, cfg)
	marker := "zq" + randomHex(t, 12)
	upper := strings.ToUpper(marker)
	createUser(t, db, store.User{ID: "disk-1", Email: marker + "@example.com", Name: "Name " + upper, PasswordHash: "$argon2id$" + marker,
		Attributes: map[string]string{"city": "City " + marker}})
	createUser(t, db, store.User{ID: "disk-keep", Email: "keep@example.com", Name: "Someone"})
	name := "Renamed " + marker
	if err := db.UpdateProfile(ctx, "disk-1", store.ProfileUpdate{Name: &name, Attributes: map[string]string{"phone": marker}}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateToken(ctx, store.Token{Hash: sha256.Sum256([]byte(marker)), UserID: "disk-1", Purpose: "verify_email", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordLoginFailure(ctx, "disk-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := db.AddPasskey(ctx, newPasskey(t, "disk-1", "Passkey "+marker)); err != nil {
		t.Fatal(err)
	}
	wantNotOnDisk(t, cfg, marker, upper)

	keys := openRaw(t, "sqlite", "file:"+cfg.DSN+".keys?_pragma=busy_timeout(5000)")
	var wrapped []byte
	if err := keys.QueryRow(`SELECT wrapped FROM user_keys WHERE user_id = 'disk-1'`).Scan(&wrapped); err != nil {
		t.Fatal(err)
	}
	keys.Close()
	// The wrapped key is on disk now (in the WAL or the file).
	found := false
	for _, f := range sqliteFiles(cfg) {
		if data, err := os.ReadFile(f); err == nil && bytes.Contains(data, wrapped) {
			found = true
		}
	}
	if !found {
		t.Fatal("the wrapped key is in none of the files: the scan cannot see what it looks for")
	}

	if err := db.DeleteUser(ctx, "disk-1"); err != nil {
		t.Fatal(err)
	}
	wantNotOnDisk(t, cfg, marker, upper, string(wrapped))
	for _, f := range []string{cfg.DSN + "-wal", cfg.DSN + ".keys-wal"} {
		if st, err := os.Stat(f); err == nil && st.Size() != 0 {
			t.Errorf("%s is %d bytes after the deletion, want 0 (checkpointed and truncated)", f, st.Size())
		}
	}
	// The other user is intact.
	if u := mustGet(t, db, "keep@example.com"); u.Name != "Someone" {
		t.Fatalf("other user after the deletion: %+v", u)
	}
}

func testMFA(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "mfa-1", Email: "mfa@example.com"})
	if _, err := db.TOTP(ctx, "mfa-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TOTP before enrolment: %v", err)
	}
	secret := []byte("12345678901234567890")
	if err := db.SetTOTP(ctx, "mfa-1", secret); err != nil {
		t.Fatal(err)
	}
	got, err := db.TOTP(ctx, "mfa-1")
	if err != nil || !bytes.Equal(got.Secret, secret) || got.Confirmed || got.LastStep != 0 {
		t.Fatalf("TOTP: %+v %v", got, err)
	}
	if err := db.UseTOTPStep(ctx, "mfa-1", 100); err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{100, 99} {
		if err := db.UseTOTPStep(ctx, "mfa-1", step); !errors.Is(err, store.ErrReplay) {
			t.Fatalf("step %d again: %v", step, err)
		}
	}
	if got, _ := db.TOTP(ctx, "mfa-1"); !got.Confirmed || got.LastStep != 100 {
		t.Fatalf("after use: %+v", got)
	}
	// Concurrent use of one step: exactly one wins.
	var wins sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wins.Go(func() {
			if db.UseTOTPStep(ctx, "mfa-1", 200) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wins.Wait()
	if ok != 1 {
		t.Fatalf("step 200 accepted %d times", ok)
	}
	if err := db.UseTOTPStep(ctx, "nobody", 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}

	codes := [][32]byte{sha256.Sum256([]byte("code-a")), sha256.Sum256([]byte("code-b"))}
	if err := db.SetRecoveryCodes(ctx, "mfa-1", codes); err != nil {
		t.Fatal(err)
	}
	if err := db.UseRecoveryCode(ctx, "mfa-1", codes[0]); err != nil {
		t.Fatal(err)
	}
	if err := db.UseRecoveryCode(ctx, "mfa-1", codes[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("recovery code twice: %v", err)
	}
	if n, err := db.RecoveryCodesLeft(ctx, "mfa-1"); err != nil || n != 1 {
		t.Fatalf("codes left: %d %v", n, err)
	}
	// Erasure takes the enrolment with it.
	if err := db.DeleteUser(ctx, "mfa-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TOTP(ctx, "mfa-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TOTP after deletion: %v", err)
	}
	if n, _ := db.RecoveryCodesLeft(ctx, "mfa-1"); n != 0 {
		t.Fatalf("recovery codes after deletion: %d", n)
	}
}

func testListUsers(t *testing.T, db *store.DB) {
	ctx := context.Background()
	for i := range 5 {
		createUser(t, db, store.User{ID: fmt.Sprintf("list-%d", i), Email: fmt.Sprintf("list%d@example.com", i)})
	}
	page, err := db.ListUsers(ctx, "list-", 3)
	if err != nil || len(page) != 3 || page[0].ID != "list-0" || page[2].Email != "list2@example.com" {
		t.Fatalf("first page: %+v %v", page, err)
	}
	page, err = db.ListUsers(ctx, page[2].ID, 3)
	if err != nil || len(page) < 2 || page[0].ID != "list-3" || page[1].ID != "list-4" {
		t.Fatalf("second page: %+v %v", page, err)
	}
	if _, err := db.ListUsers(ctx, "", 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
}

func testConsent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "con-1", Email: "con@example.com"})
	for _, r := range []store.ConsentRecord{
		{Purpose: "marketing", Version: 1, Granted: true},
		{Purpose: "analytics", Version: 2, Granted: true},
		{Purpose: "marketing", Version: 1, Granted: false},
	} {
		if _, err := db.AppendConsent(ctx, "con-1", r); err != nil {
			t.Fatal(err)
		}
	}
	h, err := db.ConsentHistory(ctx, "con-1")
	if err != nil || len(h) != 3 || h[0].Seq != 1 || h[2].Seq != 3 || h[2].Granted || h[1].Version != 2 || h[0].At.IsZero() {
		t.Fatalf("history: %+v %v", h, err)
	}
	if _, err := db.AppendConsent(ctx, "con-1", store.ConsentRecord{Purpose: "Bad Purpose", Version: 1}); err == nil {
		t.Fatal("bad purpose accepted")
	}
	if _, err := db.AppendConsent(ctx, "nobody", store.ConsentRecord{Purpose: "marketing", Version: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	x, err := db.ExportUser(ctx, "con-1")
	if err != nil || len(x.Consent) != 3 {
		t.Fatalf("export: %+v %v", x.Consent, err)
	}
	if err := db.DeleteUser(ctx, "con-1"); err != nil {
		t.Fatal(err)
	}
	if h, _ := db.ConsentHistory(ctx, "con-1"); len(h) != 0 {
		t.Fatalf("history after deletion: %+v", h)
	}
}

func newPasskey(t *testing.T, userID, name string) store.Passkey {
	t.Helper()
	id := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	return store.Passkey{ID: id, UserID: userID, Name: name, PublicKey: []byte("cose-key-" + userID), AttestationType: "none",
		AttestationFormat: "none", AAGUID: bytes.Repeat([]byte{0xab}, 16), SignCount: 1, Transports: []string{"internal", "hybrid"},
		UserVerified: true, BackupEligible: true, BackupState: false}
}

func testPasskeys(t *testing.T, db *store.DB) {
	ctx := context.Background()
	createUser(t, db, store.User{ID: "pk-1", Email: "pk@example.com"})
	createUser(t, db, store.User{ID: "pk-2", Email: "pk2@example.com"})
	if ps, err := db.Passkeys(ctx, "pk-1"); err != nil || len(ps) != 0 {
		t.Fatalf("Passkeys before any: %v %v", ps, err)
	}
	a := newPasskey(t, "pk-1", "Laptop ünïcode")
	a.CreatedAt = time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := db.AddPasskey(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := newPasskey(t, "pk-1", "")
	b.Transports, b.SignCount, b.AAGUID = nil, 0, nil
	if err := db.AddPasskey(ctx, b); err != nil {
		t.Fatal(err)
	}

	t.Run("read back", func(t *testing.T) {
		ps, err := db.Passkeys(ctx, "pk-1")
		if err != nil || len(ps) != 2 {
			t.Fatalf("Passkeys = %+v, %v", ps, err)
		}
		got := ps[0]
		if !bytes.Equal(got.ID, a.ID) || got.Name != a.Name || !bytes.Equal(got.PublicKey, a.PublicKey) || got.SignCount != 1 ||
			!reflect.DeepEqual(got.Transports, a.Transports) || !bytes.Equal(got.AAGUID, a.AAGUID) || !got.UserVerified ||
			!got.BackupEligible || got.BackupState || got.AttestationFormat != "none" || got.AttestationType != "none" ||
			!got.CreatedAt.Equal(a.CreatedAt.Truncate(time.Microsecond)) || !got.LastUsedAt.IsZero() {
			t.Fatalf("first passkey = %+v, want %+v", got, a)
		}
		if got := ps[1]; !bytes.Equal(got.ID, b.ID) || got.Name != "" || got.Transports != nil || len(got.AAGUID) != 16 || got.CreatedAt.IsZero() {
			t.Fatalf("second passkey = %+v", got)
		}
		if ps, err := db.Passkeys(ctx, "pk-2"); err != nil || len(ps) != 0 {
			t.Fatalf("another user's passkeys: %+v %v", ps, err)
		}
	})
	t.Run("credential ids are unique across users", func(t *testing.T) {
		dup := newPasskey(t, "pk-2", "Stolen")
		dup.ID = a.ID
		wantIs(t, "AddPasskey(duplicate id)", db.AddPasskey(ctx, dup), store.ErrDuplicate)
		wantIs(t, "AddPasskey(unknown user)", db.AddPasskey(ctx, newPasskey(t, "pk-nobody", "x")), store.ErrNotFound)
	})
	t.Run("invalid passkeys are refused", func(t *testing.T) {
		for name, mangle := range map[string]func(*store.Passkey){
			"empty id":        func(p *store.Passkey) { p.ID = nil },
			"long id":         func(p *store.Passkey) { p.ID = make([]byte, store.MaxCredentialIDBytes+1) },
			"no key":          func(p *store.Passkey) { p.PublicKey = nil },
			"short aaguid":    func(p *store.Passkey) { p.AAGUID = []byte{1, 2} },
			"long name":       func(p *store.Passkey) { p.Name = strings.Repeat("n", store.MaxPasskeyNameBytes+1) },
			"invalid name":    func(p *store.Passkey) { p.Name = "\xff" },
			"comma transport": func(p *store.Passkey) { p.Transports = []string{"usb,nfc"} },
		} {
			p := newPasskey(t, "pk-2", "x")
			mangle(&p)
			if err := db.AddPasskey(ctx, p); err == nil || errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: AddPasskey = %v, want a validation error", name, err)
			}
		}
	})
	t.Run("the counter must increase", func(t *testing.T) {
		at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
		if err := db.UsePasskey(ctx, "pk-1", a.ID, store.PasskeyUse{SignCount: 5, UserVerified: true, BackupState: true, At: at}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []uint32{5, 4, 0} {
			wantIs(t, fmt.Sprintf("UsePasskey(counter %d after 5)", n), db.UsePasskey(ctx, "pk-1", a.ID, store.PasskeyUse{SignCount: n}), store.ErrCounter)
		}
		// Concurrent logins with one counter value: exactly one passes.
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for range 8 {
			wg.Go(func() {
				if db.UsePasskey(ctx, "pk-1", a.ID, store.PasskeyUse{SignCount: 9, UserVerified: true, BackupState: true}) == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if ok != 1 {
			t.Fatalf("counter 9 accepted %d times", ok)
		}
		// An authenticator without a counter: 0 stays 0.
		for range 2 {
			if err := db.UsePasskey(ctx, "pk-1", b.ID, store.PasskeyUse{SignCount: 0, At: at}); err != nil {
				t.Fatalf("zero counter: %v", err)
			}
		}
		ps, _ := db.Passkeys(ctx, "pk-1")
		if ps[0].SignCount != 9 || !ps[0].BackupState || !ps[0].UserVerified || ps[0].LastUsedAt.Before(at) || !ps[1].LastUsedAt.Equal(at) {
			t.Fatalf("after use: %+v", ps)
		}
		wantIs(t, "UsePasskey(another user's)", db.UsePasskey(ctx, "pk-2", a.ID, store.PasskeyUse{SignCount: 100}), store.ErrNotFound)
		wantIs(t, "UsePasskey(unknown)", db.UsePasskey(ctx, "pk-1", []byte("nope"), store.PasskeyUse{SignCount: 100}), store.ErrNotFound)
	})
	t.Run("rename and delete only one's own", func(t *testing.T) {
		if err := db.RenamePasskey(ctx, "pk-1", b.ID, "Phone"); err != nil {
			t.Fatal(err)
		}
		wantIs(t, "RenamePasskey(another user's)", db.RenamePasskey(ctx, "pk-2", b.ID, "Mine"), store.ErrNotFound)
		wantIs(t, "DeletePasskey(another user's)", db.DeletePasskey(ctx, "pk-2", b.ID), store.ErrNotFound)
		if ps, _ := db.Passkeys(ctx, "pk-1"); len(ps) != 2 || ps[1].Name != "Phone" {
			t.Fatalf("after rename: %+v", ps)
		}
		if err := db.DeletePasskey(ctx, "pk-1", b.ID); err != nil {
			t.Fatal(err)
		}
		wantIs(t, "DeletePasskey again", db.DeletePasskey(ctx, "pk-1", b.ID), store.ErrNotFound)
		// The id is free again.
		again := newPasskey(t, "pk-2", "Reused")
		again.ID = b.ID
		if err := db.AddPasskey(ctx, again); err != nil {
			t.Fatalf("AddPasskey with a deleted passkey's id: %v", err)
		}
	})
	t.Run("at most MaxPasskeys", func(t *testing.T) {
		createUser(t, db, store.User{ID: "pk-many", Email: "pk-many@example.com"})
		for i := range store.MaxPasskeys {
			if err := db.AddPasskey(ctx, newPasskey(t, "pk-many", fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		wantIs(t, "AddPasskey beyond the limit", db.AddPasskey(ctx, newPasskey(t, "pk-many", "one more")), store.ErrLimit)
		n, err := db.DeletePasskeys(ctx, "pk-many")
		if err != nil || n != store.MaxPasskeys {
			t.Fatalf("DeletePasskeys = %d, %v", n, err)
		}
		if ps, _ := db.Passkeys(ctx, "pk-many"); len(ps) != 0 {
			t.Fatalf("after DeletePasskeys: %d left", len(ps))
		}
	})
	t.Run("export and erasure", func(t *testing.T) {
		x, err := db.ExportUser(ctx, "pk-1")
		if err != nil {
			t.Fatal(err)
		}
		if len(x.Passkeys) != 1 || x.Passkeys[0].Name != a.Name || x.Passkeys[0].AAGUID != "abababab-abab-abab-abab-abababababab" ||
			x.Passkeys[0].ID == "" || len(x.Passkeys[0].Transports) != 2 || x.Passkeys[0].LastUsedAt.IsZero() {
			t.Fatalf("export passkeys = %+v", x.Passkeys)
		}
		if js, _ := json.Marshal(x); strings.Contains(string(js), "cose-key") {
			t.Errorf("export holds the public key: %s", js)
		}
		if err := db.DeleteUser(ctx, "pk-1"); err != nil {
			t.Fatal(err)
		}
		if ps, err := db.Passkeys(ctx, "pk-1"); err != nil || len(ps) != 0 {
			t.Fatalf("passkeys after erasure: %+v %v", ps, err)
		}
		// The credential id is free again.
		again := newPasskey(t, "pk-2", "Again")
		again.ID = a.ID
		if err := db.AddPasskey(ctx, again); err != nil {
			t.Fatalf("AddPasskey with an erased user's id: %v", err)
		}
	})
}

func testChallenges(t *testing.T, db *store.DB) {
	ctx := context.Background()
	h := sha256.Sum256([]byte("challenge-" + randomHex(t, 8)))
	if err := db.UseChallenge(ctx, h, time.Now().Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantIs(t, "UseChallenge twice", db.UseChallenge(ctx, h, time.Now().Add(5*time.Minute)), store.ErrReplay)
	// Concurrent answers to one challenge, on a fresh one: exactly one wins.
	h2 := sha256.Sum256([]byte("challenge-" + randomHex(t, 8)))
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Go(func() {
			if db.UseChallenge(ctx, h2, time.Now().Add(time.Minute)) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("one challenge accepted %d times", ok)
	}
	// Many expired ones: the purge (one call in 32) eventually removes them
	// and never a live one.
	for i := range 200 {
		if err := db.UseChallenge(ctx, sha256.Sum256(fmt.Appendf(nil, "old-%d-%s", i, h[:4])), time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	wantIs(t, "UseChallenge of a live one after the purges", db.UseChallenge(ctx, h, time.Now().Add(time.Minute)), store.ErrReplay)
	if err := db.UseChallenge(ctx, [32]byte{}, time.Now()); err == nil {
		t.Fatal("zero hash accepted")
	}
}
