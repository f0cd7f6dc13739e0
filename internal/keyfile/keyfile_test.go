package keyfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCreateAndReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.json")
	if created, err := Create(path, []byte("first")); err != nil || !created {
		t.Fatalf("Create of a new file = %v, %v", created, err)
	}
	if created, err := Create(path, []byte("second")); err != nil || created {
		t.Fatalf("Create over an existing file = %v, %v; want false, nil", created, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "first" {
		t.Fatalf("file holds %q after a losing Create, want the first", b)
	}
	if err := Replace(path, []byte("third")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "third" {
		t.Fatalf("file holds %q after Replace", b)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d files in the directory, want only the key file (no temporaries left)", len(ents))
	}
	if _, err := Create(filepath.Join(dir, "missing", "key.json"), []byte("x")); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
}
