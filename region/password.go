package region

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/domicile/domicile/region/passwords"
)

// Argon2Params are the argon2id cost parameters. The defaults are OWASP's
// minimum recommendation (m=19 MiB, t=2, p=1).
type Argon2Params struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// DefaultArgon2 is used when a Config leaves the parameters unset.
var DefaultArgon2 = Argon2Params{MemoryKiB: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
)

var b64 = base64.RawStdEncoding

// hashPassword returns a PHC-format argon2id hash
// ($argon2id$v=19$m=...,t=...,p=...$salt$hash) so the parameters travel
// with the hash and can be raised later.
func hashPassword(p Argon2Params, password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var errBadHash = errors.New("malformed password hash")

// phcHash is a parsed PHC argon2id string.
type phcHash struct {
	params    Argon2Params
	salt, key []byte
}

// parsePHC parses and bounds-checks $argon2id$v=19$m=..,t=..,p=..$salt$hash.
func parsePHC(encoded string) (phcHash, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return phcHash{}, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return phcHash{}, errBadHash
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return phcHash{}, errBadHash
	}
	if p.MemoryKiB == 0 || p.MemoryKiB > 1<<22 || p.Time == 0 || p.Time > 64 || p.Threads == 0 {
		return phcHash{}, errBadHash
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return phcHash{}, errBadHash
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) == 0 || len(key) > 128 {
		return phcHash{}, errBadHash
	}
	return phcHash{params: p, salt: salt, key: key}, nil
}

// verifyPassword checks password against a PHC argon2id hash in constant time.
func verifyPassword(encoded, password string) (bool, error) {
	h, err := parsePHC(encoded)
	if err != nil {
		return false, err
	}
	p := h.params
	got := argon2.IDKey([]byte(password), h.salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1, nil
}

// needsRehash reports whether a stored hash should be replaced by
// hashPassword(p, password) after a successful login: it is not an argon2id
// v=19 PHC string this package can read, or its memory, time or threads are
// below p's, or its salt or key length differs from what hashPassword makes.
// A hash with higher parameters than p is kept (never downgraded).
func needsRehash(encoded string, p Argon2Params) bool {
	h, err := parsePHC(encoded)
	if err != nil {
		return true
	}
	return h.params.MemoryKiB < p.MemoryKiB || h.params.Time < p.Time || h.params.Threads < p.Threads ||
		len(h.salt) != saltLen || len(h.key) != keyLen
}

// Errors of checkPasswordPolicy; the messages are fit to show to the user.
var (
	errPasswordTooShort  = fmt.Errorf("password: must be at least %d characters", MinPasswordLen)
	errPasswordTooLong   = fmt.Errorf("password: must be at most %d characters", MaxPasswordLen)
	errPasswordTooCommon = errors.New("password: this password is too common")
)

// checkPasswordPolicy says why a new password is refused, or nil: its length
// in characters (runes) must be within [MinPasswordLen, MaxPasswordLen] and it
// must not be on the common-password deny list (case-insensitive, trimmed).
func checkPasswordPolicy(pw string) error {
	switch n := utf8.RuneCountInString(pw); {
	case n < MinPasswordLen:
		return errPasswordTooShort
	case n > MaxPasswordLen:
		return errPasswordTooLong
	}
	if passwords.Common(pw) {
		return errPasswordTooCommon
	}
	return nil
}
