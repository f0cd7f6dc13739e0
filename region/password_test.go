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
