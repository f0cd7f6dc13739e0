package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Encryption layout.
//
// The master key (Config.MasterKey, the KEK) is never used directly: HKDF
// (SHA-256) derives from it a key-wrapping key, the email blind-index key and
// a public key id, each with its own label, so no key serves two purposes.
//
// A user's data key is 32 random bytes, stored in the key store wrapped with
// AES-256-GCM under the key-wrapping key, with the user id as additional
// data so a wrapped key cannot be moved to another user.
//
// Each personal-data value is sealed with AES-256-GCM under the user's data
// key with a fresh random 12-byte nonce and additional data
// user id + "\x00" + column name, so a ciphertext cannot be swapped between
// users or between columns. Stored form: version byte, nonce, ciphertext and
// tag.
const (
	sealVersion  = 1
	nonceSize    = 12
	dataKeySize  = 32
	masterKeyLen = 32

	labelWrap  = "domicile/region/store: data key wrapping v1"
	labelIndex = "domicile/region/store: email blind index v1"
	labelKeyID = "domicile/region/store: master key id v1"
)

// sealer holds what is derived from the master key.
type sealer struct {
	wrap   cipher.AEAD
	lookup []byte // HMAC-SHA256 key of the email blind index
	// kekID identifies the master key without revealing it; each wrapped
	// data key records it, so Open can tell a wrong master key from a
	// corrupt key store.
	kekID string
}

func newSealer(master []byte) (*sealer, error) {
	switch {
	case len(master) == 0:
		return nil, errors.New("store: database.master_key: required (32 random bytes)")
	case len(master) != masterKeyLen:
		return nil, fmt.Errorf("store: database.master_key: want %d bytes, got %d", masterKeyLen, len(master))
	}
	wrapKey, err := hkdf.Key(sha256.New, master, nil, labelWrap, 32)
	if err != nil {
		return nil, fmt.Errorf("store: database.master_key: %w", err)
	}
	lookup, err := hkdf.Key(sha256.New, master, nil, labelIndex, 32)
	if err != nil {
		return nil, fmt.Errorf("store: database.master_key: %w", err)
	}
	id, err := hkdf.Key(sha256.New, master, nil, labelKeyID, 8)
	if err != nil {
		return nil, fmt.Errorf("store: database.master_key: %w", err)
	}
	wrap, err := newGCM(wrapKey)
	if err != nil {
		return nil, fmt.Errorf("store: database.master_key: %w", err)
	}
	return &sealer{wrap: wrap, lookup: lookup, kekID: hex.EncodeToString(id)}, nil
}

// emailHash is the blind index of a normalised email: equal emails have
// equal hashes, and without the master key the hash says nothing about the
// email.
func (s *sealer) emailHash(normalized string) []byte {
	m := hmac.New(sha256.New, s.lookup)
	m.Write([]byte(normalized))
	return m.Sum(nil)
}

// newDataKey returns a fresh data key for userID and its wrapped form.
func (s *sealer) newDataKey(userID string) (dataKey, []byte, error) {
	raw := make([]byte, dataKeySize)
	if _, err := rand.Read(raw); err != nil {
		return dataKey{}, nil, fmt.Errorf("new data key: %w", err)
	}
	wrapped, err := seal(s.wrap, raw, wrapAAD(userID))
	if err != nil {
		return dataKey{}, nil, fmt.Errorf("wrap data key: %w", err)
	}
	k, err := newDataKeyFrom(userID, raw)
	return k, wrapped, err
}

// unwrap opens userID's wrapped data key.
func (s *sealer) unwrap(userID string, wrapped []byte) (dataKey, error) {
	raw, err := unseal(s.wrap, wrapped, wrapAAD(userID))
	if err != nil {
		return dataKey{}, fmt.Errorf("unwrap data key: %w", err)
	}
	return newDataKeyFrom(userID, raw)
}

func wrapAAD(userID string) []byte { return []byte("user_keys\x00" + userID) }

// dataKey encrypts one user's personal data.
type dataKey struct {
	userID string
	aead   cipher.AEAD
}

func newDataKeyFrom(userID string, raw []byte) (dataKey, error) {
	aead, err := newGCM(raw)
	if err != nil {
		return dataKey{}, fmt.Errorf("data key: %w", err)
	}
	return dataKey{userID: userID, aead: aead}, nil
}

// seal encrypts the value of column.
func (k dataKey) seal(column string, plaintext []byte) ([]byte, error) {
	ct, err := seal(k.aead, plaintext, k.aad(column))
	if err != nil {
		return nil, fmt.Errorf("encrypt %s: %w", column, err)
	}
	return ct, nil
}

// sealString is seal for a string value.
func (k dataKey) sealString(column, plaintext string) ([]byte, error) {
	return k.seal(column, []byte(plaintext))
}

// open decrypts the value of column; it fails if the ciphertext was sealed
// for another user or column, or altered.
func (k dataKey) open(column string, ciphertext []byte) ([]byte, error) {
	pt, err := unseal(k.aead, ciphertext, k.aad(column))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: %w", column, err)
	}
	return pt, nil
}

// openString is open for a string value.
func (k dataKey) openString(column string, ciphertext []byte) (string, error) {
	pt, err := k.open(column, ciphertext)
	return string(pt), err
}

func (k dataKey) aad(column string) []byte { return []byte(k.userID + "\x00" + column) }

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal returns version || nonce || AES-GCM(plaintext, aad), with a random
// nonce.
func seal(aead cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], plaintext, aad), nil
}

var errCiphertext = errors.New("ciphertext is damaged, was altered, or belongs to another user or column")

func unseal(aead cipher.AEAD, ciphertext, aad []byte) ([]byte, error) {
	if len(ciphertext) < 1+nonceSize+aead.Overhead() {
		return nil, errors.New("ciphertext too short")
	}
	if ciphertext[0] != sealVersion {
		return nil, fmt.Errorf("ciphertext version %d unknown", ciphertext[0])
	}
	pt, err := aead.Open(nil, ciphertext[1:1+nonceSize], ciphertext[1+nonceSize:], aad)
	if err != nil {
		return nil, errCiphertext
	}
	return pt, nil
}
