package region

import (
	"strings"
	"testing"
)

func TestPasswordHashAndVerify(t *testing.T) {
	h, err := hashPassword(DefaultArgon2, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash does not carry the OWASP parameters: %s", h)
	}
	h2, _ := hashPassword(DefaultArgon2, "correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	tests := []struct {
		name     string
		hash     string
		password string
		ok       bool
		err      bool
	}{
		{"right password", h, "correct horse battery", true, false},
		{"wrong password", h, "correct horse batterY", false, false},
		{"empty password", h, "", false, false},
		{"not phc", "plain", "x", false, true},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuv", "x", false, true},
		{"bad version", strings.Replace(h, "v=19", "v=16", 1), "correct horse battery", false, true},
		{"absurd memory", strings.Replace(h, "m=19456", "m=99999999", 1), "correct horse battery", false, true},
		{"bad salt", strings.Replace(h, "$", "$!", 4), "x", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := verifyPassword(tt.hash, tt.password)
			if ok != tt.ok || (err != nil) != tt.err {
				t.Fatalf("verify = %v, %v; want %v, err=%v", ok, err, tt.ok, tt.err)
			}
		})
	}
}

func BenchmarkArgon2idDefault(b *testing.B) {
	h, _ := hashPassword(DefaultArgon2, "correct horse battery")
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := verifyPassword(h, "correct horse battery"); !ok {
			b.Fatal("verify failed")
		}
	}
}

func TestNeedsRehash(t *testing.T) {
	// Cheap parameters keep the test fast; needsRehash only parses.
	base := Argon2Params{MemoryKiB: 64, Time: 2, Threads: 2}
	h, err := hashPassword(base, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	salt := b64.EncodeToString(make([]byte, saltLen))
	key := b64.EncodeToString(make([]byte, keyLen))
	phc := func(alg, v, params, salt, key string) string {
		return "$" + alg + "$" + v + "$" + params + "$" + salt + "$" + key
	}
	tests := []struct {
		name    string
		encoded string
		p       Argon2Params
		want    bool
	}{
		{"same parameters", h, base, false},
		{"stored higher", h, Argon2Params{MemoryKiB: 32, Time: 1, Threads: 1}, false},
		{"zero target", h, Argon2Params{}, false},
		{"memory raised", h, Argon2Params{MemoryKiB: 128, Time: 2, Threads: 2}, true},
		{"time raised", h, Argon2Params{MemoryKiB: 64, Time: 3, Threads: 2}, true},
		{"threads raised", h, Argon2Params{MemoryKiB: 64, Time: 2, Threads: 4}, true},
		{"default vs cheap", h, DefaultArgon2, true},
		{"hand-made equal", phc("argon2id", "v=19", "m=64,t=2,p=2", salt, key), base, false},
		{"argon2i", phc("argon2i", "v=19", "m=64,t=2,p=2", salt, key), base, true},
		{"argon2d", phc("argon2d", "v=19", "m=64,t=2,p=2", salt, key), base, true},
		{"old version", phc("argon2id", "v=16", "m=64,t=2,p=2", salt, key), base, true},
		{"short salt", phc("argon2id", "v=19", "m=64,t=2,p=2", b64.EncodeToString(make([]byte, 8)), key), base, true},
		{"long key", phc("argon2id", "v=19", "m=64,t=2,p=2", salt, b64.EncodeToString(make([]byte, 64))), base, true},
		{"short key", phc("argon2id", "v=19", "m=64,t=2,p=2", salt, b64.EncodeToString(make([]byte, 16))), base, true},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuuJ0bYvVbJ8Rt9KxQfC0vR1Ck5r4Ue6.", base, true},
		{"garbage", "plain", base, true},
		{"empty", "", base, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := needsRehash(tt.encoded, tt.p); got != tt.want {
				t.Fatalf("needsRehash(%q, %+v) = %v, want %v", tt.encoded, tt.p, got, tt.want)
			}
		})
	}
	// A fresh hash with the target parameters never needs a rehash.
	h2, _ := hashPassword(DefaultArgon2, "x")
	if needsRehash(h2, DefaultArgon2) {
		t.Fatal("a fresh DefaultArgon2 hash needs a rehash")
	}
}

func TestCheckPasswordPolicy(t *testing.T) {
	tests := []struct {
		name string
		pw   string
		want error
	}{
		{"empty", "", errPasswordTooShort},
		{"seven", "Zq7!mW2", errPasswordTooShort},
		{"seven runes, many bytes", "ÄÖÜäöüß", errPasswordTooShort},
		{"eight", "Zq7!mW2x", nil},
		{"eight runes", "äöüßÄÖÜẞ", nil},
		{"max", strings.Repeat("ü", MaxPasswordLen), nil},
		{"too long", strings.Repeat("a", MaxPasswordLen+1), errPasswordTooLong},
		{"too long runes", strings.Repeat("ü", MaxPasswordLen+1), errPasswordTooLong},
		{"common", "password", errPasswordTooCommon},
		{"common upper", "PASSWORD", errPasswordTooCommon},
		{"common padded", "  iloveyou  ", errPasswordTooCommon},
		{"common digits", "12345678", errPasswordTooCommon},
		{"passphrase", "correct horse battery staple", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkPasswordPolicy(tt.pw); err != tt.want {
				t.Fatalf("checkPasswordPolicy(%q) = %v, want %v", tt.pw, err, tt.want)
			}
		})
	}
	if got := errPasswordTooShort.Error(); got != "password: must be at least 8 characters" {
		t.Errorf("message %q", got)
	}
	if got := errPasswordTooCommon.Error(); !strings.Contains(got, "this password is too common") {
		t.Errorf("message %q", got)
	}
}
