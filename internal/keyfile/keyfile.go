// Package keyfile writes the small secret files that every node of a region
// shares (the session signing key, the OpenID key ring): mode 0600, never
// seen half-written.
package keyfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// writeTemp writes b to a new file (mode 0600) beside path, synced, and
// returns its name; the caller links or renames it into place and removes
// it afterwards.
func writeTemp(path string, b []byte) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	name := tmp.Name()
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// Create writes b to path if there is no file there yet: written aside and
// linked into place, so that processes racing to create it all end up with
// the one file that won. It reports false (and no error) if a file was
// already there.
func Create(path string, b []byte) (created bool, err error) {
	tmp, err := writeTemp(path, b)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Replace writes b to path in place of what is there, atomically.
func Replace(path string, b []byte) error {
	tmp, err := writeTemp(path, b)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
