package launch

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/domicile/domicile/homeindex"
)

// Secrets are shared by every router and region of a deployment: the HMAC
// key that turns identifiers into index keys, and the bearer token of the
// internal index API.
type Secrets struct {
	IndexKey      []byte `json:"index_key"` // base64 in the file
	InternalToken string `json:"internal_token"`
	AdminToken    string `json:"admin_token"` // the routers' /admin/v1 API
	// RouteKey signs the Domicile-Route header routers add to forwarded
	// requests and regions verify (base64 in the file).
	RouteKey []byte `json:"route_key"`
}

// Validate checks the secrets, naming the field at fault.
func (s *Secrets) Validate() error {
	if len(s.IndexKey) < homeindex.MinSecretLen {
		return fmt.Errorf("secrets: index_key: want at least %d bytes, got %d", homeindex.MinSecretLen, len(s.IndexKey))
	}
	if len(s.InternalToken) < 16 {
		return errors.New("secrets: internal_token: want at least 16 characters")
	}
	if len(s.RouteKey) < 32 {
		return fmt.Errorf("secrets: route_key: want at least 32 bytes, got %d", len(s.RouteKey))
	}
	if len(s.AdminToken) < 16 {
		return errors.New("secrets: admin_token: want at least 16 characters")
	}
	return nil
}

// LoadSecrets reads a secrets file (JSON, mode 0600).
func LoadSecrets(path string) (*Secrets, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	var s Secrets
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("secrets: %s: %w", path, err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// LoadOrCreateSecrets loads path, or creates it with fresh random secrets.
// It is for `domicile dev`, whose data must survive restarts.
func LoadOrCreateSecrets(path string) (*Secrets, error) {
	key := make([]byte, 32)
	tok := make([]byte, 24)
	adm := make([]byte, 24)
	route := make([]byte, 32)
	for _, b := range [][]byte{key, tok, adm, route} {
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
	}
	s := &Secrets{IndexKey: key, InternalToken: base64.RawURLEncoding.EncodeToString(tok), AdminToken: base64.RawURLEncoding.EncodeToString(adm), RouteKey: route}
	if data, err := os.ReadFile(path); err == nil {
		// An existing dev data dir: keep its secrets, adding those that
		// later versions introduced.
		var old Secrets
		if err := json.Unmarshal(data, &old); err != nil {
			return nil, fmt.Errorf("secrets: %s: %w", path, err)
		}
		if len(old.RouteKey) != 0 {
			return LoadSecrets(path)
		}
		old.RouteKey = route
		s = &old
	}
	data, _ := json.MarshalIndent(s, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return s, nil
}
