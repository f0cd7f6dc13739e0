package main

import (
	"bytes"
	"context"
	"database/sql"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/domicile/domicile/internal/devcluster"
	"github.com/domicile/domicile/region"
)

// TestRegionAuditVerify: the CLI accepts an untouched audit log and finds
// the entry an operator edited behind the region's back.
func TestRegionAuditVerify(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := devcluster.Start(ctx, devcluster.Config{DataDir: dir, Argon2: &region.Argon2Params{MemoryKiB: 1024, Time: 1, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, email := range []string{"a@acme.de", "b@acme.de", "c@acme.de"} {
		resp, err := http.Post(c.RouterURLs()[0]+"/signup", "application/json", strings.NewReader(`{"email":"`+email+`","password":"correct horse battery"}`))
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("sign-up %s: %v %v", email, resp, err)
		}
		resp.Body.Close()
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	args := []string{"region", "audit", "verify", "--data", dir, "--region", "eu-west"}
	if code := run(args, &out, &errOut); code != 0 || !strings.Contains(out.String(), "intact: 3 entries") {
		t.Fatalf("verify: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	db, err := sql.Open("sqlite", filepath.Join(dir, "eu-west", "domicile.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_log SET event = replace(event, 'user.created', 'user.createD') WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out.Reset()
	errOut.Reset()
	if code := run(args, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "2") {
		t.Fatalf("tampered log: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	t.Logf("tampered: %s", strings.TrimSpace(errOut.String()))
}
