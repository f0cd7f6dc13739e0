package launch

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// loadOrCreateKey reads a 32-byte key stored base64 in path, creating the
// file (mode 0600, exclusively, so two processes starting at once agree)
// with a random key if it does not exist.
func loadOrCreateKey(path string) ([]byte, error) {
	for range 2 {
		data, err := os.ReadFile(path)
		if err == nil {
			key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
			if err != nil || len(key) != 32 {
				return nil, fmt.Errorf("%s: want 32 bytes, base64-encoded", path)
			}
			return key, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // another process made it: read theirs
		}
		if err != nil {
			return nil, err
		}
		_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, werr
		}
		return key, nil
	}
	return nil, fmt.Errorf("%s: could not be read or created", path)
}
