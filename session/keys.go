package session

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/domicile/domicile/internal/keyfile"
	"github.com/domicile/domicile/residency"
)

// A key id (kid) names the region that owns the key: "<region>-<n>", where
// region is a residency region name (which may itself hold hyphens, as in
// "eu-west") and n a decimal generation number ≥ 1, as in "eu-west-3". The
// region is everything before the last hyphen.

// maxKeyGeneration bounds n in a kid, so that it fits comfortably in an int.
const maxKeyGeneration = 1 << 30

// KIDRegion returns the region named by kid, or an error if kid is not of
// the form "<region>-<n>".
func KIDRegion(kid string) (string, error) {
	i := strings.LastIndexByte(kid, '-')
	if i <= 0 {
		return "", fmt.Errorf("session: kid %q: want <region>-<n>", kid)
	}
	region, num := kid[:i], kid[i+1:]
	if !residency.ValidRegionName(region) {
		return "", fmt.Errorf("session: kid %q: bad region name %q", kid, region)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > maxKeyGeneration || strconv.Itoa(n) != num {
		return "", fmt.Errorf("session: kid %q: generation %q is not a decimal number ≥ 1", kid, num)
	}
	return region, nil
}

// KID returns the key id of generation n of region's signing key.
func KID(region string, n int) (string, error) {
	if !residency.ValidRegionName(region) {
		return "", fmt.Errorf("session: bad region name %q", region)
	}
	if n < 1 || n > maxKeyGeneration {
		return "", fmt.Errorf("session: key generation %d out of range [1, %d]", n, maxKeyGeneration)
	}
	return region + "-" + strconv.Itoa(n), nil
}

// SigningKey is a region's private Ed25519 key for session tokens. It never
// leaves its region; the other regions and the routers get its [PublicKey].
type SigningKey struct {
	KID string // "<region>-<n>"
	Key ed25519.PrivateKey
}

// GenerateSigningKey returns a new random key with kid "<region>-<n>".
func GenerateSigningKey(region string, n int) (*SigningKey, error) {
	kid, err := KID(region, n)
	if err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("session: generate key: %w", err)
	}
	return &SigningKey{KID: kid, Key: priv}, nil
}

// Region returns the region named by the key's kid.
func (k *SigningKey) Region() string {
	r, _ := KIDRegion(k.KID)
	return r
}

// Public returns the public half of k.
func (k *SigningKey) Public() PublicKey {
	return PublicKey{KID: k.KID, Region: k.Region(), Key: k.Key.Public().(ed25519.PublicKey)}
}

func (k *SigningKey) check() error {
	if k == nil {
		return errors.New("session: signing key: nil")
	}
	if _, err := KIDRegion(k.KID); err != nil {
		return err
	}
	if len(k.Key) != ed25519.PrivateKeySize {
		return fmt.Errorf("session: signing key %s: private key is %d bytes, want %d", k.KID, len(k.Key), ed25519.PrivateKeySize)
	}
	return nil
}

// keyFile is the JSON form of a SigningKey on disk.
type keyFile struct {
	KID  string `json:"kid"`
	Alg  string `json:"alg"`  // always "EdDSA"
	Seed string `json:"seed"` // the RFC 8032 32-byte seed, base64url without padding
}

// MarshalKeyFile returns the JSON form of k:
// {"kid":"eu-west-1","alg":"EdDSA","seed":"<base64url of the 32-byte seed>"}.
// It is secret: whoever writes it to disk should give the file mode 0600.
func MarshalKeyFile(k *SigningKey) ([]byte, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(keyFile{
		KID:  k.KID,
		Alg:  "EdDSA",
		Seed: base64.RawURLEncoding.EncodeToString(k.Key.Seed()),
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("session: marshal key file: %w", err)
	}
	return append(b, '\n'), nil
}

// UnmarshalKeyFile parses the output of [MarshalKeyFile].
func UnmarshalKeyFile(b []byte) (*SigningKey, error) {
	var f keyFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("session: key file: %w", err)
	}
	if _, err := KIDRegion(f.KID); err != nil {
		return nil, fmt.Errorf("session: key file: %w", err)
	}
	if f.Alg != "EdDSA" {
		return nil, fmt.Errorf("session: key file %s: alg %q, want EdDSA", f.KID, f.Alg)
	}
	seed, err := base64.RawURLEncoding.Strict().DecodeString(f.Seed)
	if err != nil || len(seed) != ed25519.SeedSize {
		// Say nothing about the seed's content: it is secret.
		return nil, fmt.Errorf("session: key file %s: seed is not %d bytes of base64url", f.KID, ed25519.SeedSize)
	}
	return &SigningKey{KID: f.KID, Key: ed25519.NewKeyFromSeed(seed)}, nil
}

// LoadOrCreateKeyFile returns the signing key in the file at path. If there
// is no such file it generates key "<region>-1" and writes it there with mode
// 0600; the parent directory must exist. Two processes racing to create the
// file end up with the same key: the file is written aside and linked into
// place, so it is never seen half-written. A file holding another region's
// key is an error.
func LoadOrCreateKeyFile(path, region string) (*SigningKey, error) {
	if !residency.ValidRegionName(region) {
		return nil, fmt.Errorf("session: bad region name %q", region)
	}
	k, err := loadKeyFile(path, region)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, err = GenerateSigningKey(region, 1)
	if err != nil {
		return nil, err
	}
	b, err := MarshalKeyFile(k)
	if err != nil {
		return nil, err
	}
	created, err := keyfile.Create(path, b)
	if err != nil {
		return nil, fmt.Errorf("session: create key file: %w", err)
	}
	if !created { // lost a race: use the winner's key
		return loadKeyFile(path, region)
	}
	return k, nil
}

func loadKeyFile(path, region string) (*SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("session: read key file: %w", err)
	}
	k, err := UnmarshalKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	if got := k.Region(); got != region {
		return nil, fmt.Errorf("session: key file %s holds key %s of region %q, want region %q", path, k.KID, got, region)
	}
	return k, nil
}

// PublicKey is a region's public session-token key, as published in the JWKS.
type PublicKey struct {
	KID    string // "<region>-<n>"
	Region string // the region named by KID
	Key    ed25519.PublicKey
}

func (p PublicKey) check() error {
	region, err := KIDRegion(p.KID)
	if err != nil {
		return err
	}
	if p.Region != "" && p.Region != region {
		return fmt.Errorf("session: key %s: region %q does not match the kid", p.KID, p.Region)
	}
	if len(p.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("session: key %s: public key is %d bytes, want %d", p.KID, len(p.Key), ed25519.PublicKeySize)
	}
	return nil
}

// jwk is one key of a JWKS (RFC 7517, RFC 8037 for OKP keys).
type jwk struct {
	Kty string  `json:"kty"`
	Crv string  `json:"crv,omitempty"`
	KID string  `json:"kid"`
	X   string  `json:"x,omitempty"`
	D   *string `json:"d,omitempty"` // only to refuse private keys
	Use string  `json:"use,omitempty"`
	Alg string  `json:"alg,omitempty"`
}

type jwks struct {
	Keys []jwk `json:"keys"`
}

// MarshalJWKS returns keys as a JSON Web Key Set:
// {"keys":[{"kty":"OKP","crv":"Ed25519","kid":"eu-west-1","x":"…","use":"sig","alg":"EdDSA"}]}.
func MarshalJWKS(keys []PublicKey) ([]byte, error) {
	set := jwks{Keys: make([]jwk, 0, len(keys))}
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := k.check(); err != nil {
			return nil, err
		}
		if seen[k.KID] {
			return nil, fmt.Errorf("session: jwks: duplicate kid %q", k.KID)
		}
		seen[k.KID] = true
		set.Keys = append(set.Keys, jwk{
			Kty: "OKP", Crv: "Ed25519", KID: k.KID,
			X:   base64.RawURLEncoding.EncodeToString(k.Key),
			Use: "sig", Alg: "EdDSA",
		})
	}
	return json.Marshal(set)
}

// ParseJWKS parses a JSON Web Key Set of session-token keys. Every key must
// be an Ed25519 public key ("kty":"OKP","crv":"Ed25519") whose kid is
// "<region>-<n>"; "use", if present, must be "sig" and "alg", if present,
// "EdDSA". A private key, a duplicate kid or any other key is an error rather
// than skipped, so that a misconfigured JWKS is noticed.
func ParseJWKS(b []byte) ([]PublicKey, error) {
	var set struct {
		Keys *[]jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("session: jwks: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`session: jwks: no "keys" member`)
	}
	keys := make([]PublicKey, 0, len(*set.Keys))
	seen := make(map[string]bool, len(*set.Keys))
	for i, k := range *set.Keys {
		where := fmt.Sprintf("session: jwks: key %d (kid %q)", i, k.KID)
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			return nil, fmt.Errorf("%s: kty %q crv %q: only Ed25519 keys (kty OKP, crv Ed25519) are accepted", where, k.Kty, k.Crv)
		}
		if k.D != nil {
			return nil, fmt.Errorf("%s: holds a private key (\"d\"); publish public keys only", where)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("%s: use %q, want sig", where, k.Use)
		}
		if k.Alg != "" && k.Alg != "EdDSA" {
			return nil, fmt.Errorf("%s: alg %q, want EdDSA", where, k.Alg)
		}
		region, err := KIDRegion(k.KID)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if seen[k.KID] {
			return nil, fmt.Errorf("%s: duplicate kid", where)
		}
		seen[k.KID] = true
		x, err := base64.RawURLEncoding.Strict().DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%s: x is not %d bytes of base64url", where, ed25519.PublicKeySize)
		}
		keys = append(keys, PublicKey{KID: k.KID, Region: region, Key: ed25519.PublicKey(x)})
	}
	return keys, nil
}
