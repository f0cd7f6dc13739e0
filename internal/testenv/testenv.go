package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// connectTimeout bounds each reachability check, so a missing service costs a
// test run seconds, not minutes.
const connectTimeout = 5 * time.Second

// unavailable skips t, or fails it when CI=true, because service (named with
// its address) cannot be used.
func unavailable(t testing.TB, service, addr string, err error) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("testenv: %s not reachable at %s: %v (CI=true, so this is fatal)", service, addr, err)
	}
	t.Skipf("SKIPPING: %s not reachable at %s: %v; set CI=true to make this fatal", service, addr, err)
}

// uniqueName returns "<prefix>_<test name>_<random hex>", lower case and made
// only of [a-z0-9_], so it is a valid unquoted SQL identifier and a readable
// Redis key prefix. The test name is cut so the whole stays under
// PostgreSQL's 63-byte identifier limit.
func uniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 32 {
			break
		}
	}
	var random [8]byte
	if _, err := rand.Read(random[:]); err != nil {
		t.Fatalf("testenv: random name: %v", err)
	}
	return prefix + "_" + b.String() + "_" + hex.EncodeToString(random[:])
}

// envOr returns the environment variable key, or def when it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
