// Package passkeytest is a software WebAuthn authenticator for tests. It
// answers the options a relying party sends to navigator.credentials.create
// and .get with the JSON a browser would post back: ECDSA P-256
// credentials, "none" attestation, discoverable (kept per RP ID with their
// user handle, as a platform authenticator keeps passkeys), with the user
// verification, backup flags and signature counter a test chooses.
//
// It is not a security boundary and does not try to be one: its keys live
// in memory and it signs whatever it is asked to.
package passkeytest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Authenticator is a software authenticator. The zero value is usable: it
// verifies no user and keeps a counter. Set the fields before use.
type Authenticator struct {
	// AAGUID identifies the authenticator model (zero: none).
	AAGUID [16]byte
	// UserVerified sets the UV flag of every answer (a PIN or biometric
	// check that "succeeded").
	UserVerified bool
	// BackupEligible and BackupState set the BE and BS flags.
	BackupEligible, BackupState bool
	// NoCounter makes the authenticator keep no signature counter (always
	// 0), as synced passkeys do.
	NoCounter bool

	mu    sync.Mutex
	creds []*Credential
}

// Credential is a credential the authenticator holds.
type Credential struct {
	ID         []byte
	RPID       string
	UserHandle []byte
	SignCount  uint32
	key        *ecdsa.PrivateKey
}

// ErrExcluded is returned by Create when the authenticator holds one of the
// excluded credentials (a browser's InvalidStateError).
var ErrExcluded = errors.New("passkeytest: the authenticator holds an excluded credential")

// ErrNoCredential is returned by Get when no credential fits the request
// (a browser's NotAllowedError).
var ErrNoCredential = errors.New("passkeytest: no credential for this relying party")

type descriptor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

type creationOptions struct {
	RP struct {
		ID string `json:"id"`
	} `json:"rp"`
	User struct {
		ID string `json:"id"`
	} `json:"user"`
	Challenge  string `json:"challenge"`
	Parameters []struct {
		Type string `json:"type"`
		Alg  int    `json:"alg"`
	} `json:"pubKeyCredParams"`
	Exclude []descriptor `json:"excludeCredentials"`
}

type requestOptions struct {
	Challenge string       `json:"challenge"`
	RPID      string       `json:"rpId"`
	Allow     []descriptor `json:"allowCredentials"`
}

var b64 = base64.RawURLEncoding

// Credentials returns the credentials the authenticator holds.
func (a *Authenticator) Credentials() []Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Credential, len(a.creds))
	for i, c := range a.creds {
		out[i] = *c
	}
	return out
}

// SetSignCount sets the counter of the credential id (to make it go back,
// as a cloned authenticator's would).
func (a *Authenticator) SetSignCount(id []byte, n uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.creds {
		if bytes.Equal(c.ID, id) {
			c.SignCount = n
		}
	}
}

// Create answers navigator.credentials.create({publicKey: options}) on a
// page of origin: options is the publicKey object as JSON (binary fields
// base64url). It returns the RegistrationResponseJSON.
func (a *Authenticator) Create(origin string, options []byte) ([]byte, error) {
	var o creationOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, fmt.Errorf("passkeytest: creation options: %w", err)
	}
	if o.RP.ID == "" || o.Challenge == "" || o.User.ID == "" {
		return nil, errors.New("passkeytest: creation options: rp.id, challenge and user.id required")
	}
	handle, err := b64.DecodeString(o.User.ID)
	if err != nil {
		return nil, fmt.Errorf("passkeytest: user.id: %w", err)
	}
	if !slices.ContainsFunc(o.Parameters, func(p struct {
		Type string `json:"type"`
		Alg  int    `json:"alg"`
	}) bool {
		return p.Type == "public-key" && p.Alg == -7
	}) {
		return nil, errors.New("passkeytest: ES256 not among pubKeyCredParams")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range o.Exclude {
		id, _ := b64.DecodeString(d.ID)
		for _, c := range a.creds {
			if bytes.Equal(c.ID, id) {
				return nil, ErrExcluded
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	c := &Credential{ID: make([]byte, 16), RPID: o.RP.ID, UserHandle: handle, key: key}
	if _, err := rand.Read(c.ID); err != nil {
		return nil, err
	}
	if !a.NoCounter {
		c.SignCount = 1
	}
	// A discoverable credential replaces the one for the same account.
	a.creds = slices.DeleteFunc(a.creds, func(x *Credential) bool { return x.RPID == c.RPID && bytes.Equal(x.UserHandle, handle) })
	a.creds = append(a.creds, c)

	clientData, err := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": o.Challenge, "origin": origin, "crossOrigin": false})
	if err != nil {
		return nil, err
	}
	auth := a.authData(c, true)
	var att cborBuf
	att.header(5, 3)
	att.text("fmt")
	att.text("none")
	att.text("attStmt")
	att.header(5, 0)
	att.text("authData")
	att.bytes(auth)
	return json.Marshal(map[string]any{
		"id": b64.EncodeToString(c.ID), "rawId": b64.EncodeToString(c.ID), "type": "public-key",
		"authenticatorAttachment": "platform", "clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData),
			"attestationObject": b64.EncodeToString(att),
			"transports":        []string{"internal"},
		},
	})
}

// Get answers navigator.credentials.get({publicKey: options}) on a page of
// origin, with the newest credential for the RP ID that the options allow
// (any, for a discoverable request). It returns the
// AuthenticationResponseJSON.
func (a *Authenticator) Get(origin string, options []byte) ([]byte, error) {
	var o requestOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, fmt.Errorf("passkeytest: request options: %w", err)
	}
	if o.RPID == "" || o.Challenge == "" {
		return nil, errors.New("passkeytest: request options: rpId and challenge required")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var c *Credential
	for _, x := range slices.Backward(a.creds) {
		if x.RPID != o.RPID {
			continue
		}
		if len(o.Allow) > 0 && !slices.ContainsFunc(o.Allow, func(d descriptor) bool { return d.ID == b64.EncodeToString(x.ID) }) {
			continue
		}
		c = x
		break
	}
	if c == nil {
		return nil, ErrNoCredential
	}
	if !a.NoCounter {
		c.SignCount++
	}
	clientData, err := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": o.Challenge, "origin": origin, "crossOrigin": false})
	if err != nil {
		return nil, err
	}
	auth := a.authData(c, false)
	digest := sha256.Sum256(append(slices.Clone(auth), sha256Of(clientData)...))
	sig, err := ecdsa.SignASN1(rand.Reader, c.key, digest[:])
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"id": b64.EncodeToString(c.ID), "rawId": b64.EncodeToString(c.ID), "type": "public-key",
		"authenticatorAttachment": "platform", "clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData),
			"authenticatorData": b64.EncodeToString(auth),
			"signature":         b64.EncodeToString(sig),
			"userHandle":        b64.EncodeToString(c.UserHandle),
		},
	})
}

func sha256Of(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

// authData is the authenticator data of an answer; with attested, the
// credential's id and public key follow (a registration).
func (a *Authenticator) authData(c *Credential, attested bool) []byte {
	rp := sha256.Sum256([]byte(c.RPID))
	out := append([]byte(nil), rp[:]...)
	flags := byte(0x01) // UP
	if a.UserVerified {
		flags |= 0x04
	}
	if a.BackupEligible {
		flags |= 0x08
	}
	if a.BackupState {
		flags |= 0x10
	}
	if attested {
		flags |= 0x40
	}
	out = append(out, flags)
	out = binary.BigEndian.AppendUint32(out, c.SignCount)
	if attested {
		out = append(out, a.AAGUID[:]...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(c.ID)))
		out = append(out, c.ID...)
		out = append(out, coseKey(&c.key.PublicKey)...)
	}
	return out
}

// coseKey is the COSE_Key of an EC2 P-256 public key for ES256.
func coseKey(k *ecdsa.PublicKey) []byte {
	pt, _ := k.Bytes() // 0x04 || X || Y
	var b cborBuf
	b.header(5, 5)
	b.int(1) // kty
	b.int(2) // EC2
	b.int(3) // alg
	b.int(-7)
	b.int(-1) // crv
	b.int(1)  // P-256
	b.int(-2) // x
	b.bytes(pt[1:33])
	b.int(-3) // y
	b.bytes(pt[33:])
	return b
}

// cborBuf writes the little CBOR (RFC 8949) this needs.
type cborBuf []byte

func (b *cborBuf) header(major byte, n uint64) {
	switch {
	case n < 24:
		*b = append(*b, major<<5|byte(n))
	case n < 1<<8:
		*b = append(*b, major<<5|24, byte(n))
	case n < 1<<16:
		*b = binary.BigEndian.AppendUint16(append(*b, major<<5|25), uint16(n))
	default:
		*b = binary.BigEndian.AppendUint32(append(*b, major<<5|26), uint32(n))
	}
}

func (b *cborBuf) int(n int64) {
	if n >= 0 {
		b.header(0, uint64(n))
	} else {
		b.header(1, uint64(-1-n))
	}
}

func (b *cborBuf) bytes(p []byte) { b.header(2, uint64(len(p))); *b = append(*b, p...) }
func (b *cborBuf) text(s string)  { b.header(3, uint64(len(s))); *b = append(*b, s...) }
