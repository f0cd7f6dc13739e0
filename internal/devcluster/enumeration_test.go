package devcluster

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/region"
)

// TestLoginDoesNotRevealAccounts: with the production password hashing
// cost, a failed login for an existing account and one for an address
// without an account get byte-identical answers, and take the same time
// (medians within 10% over 200 tries).
func TestLoginDoesNotRevealAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("200 logins at the production argon2id cost")
	}
	full := region.DefaultArgon2
	c := startClusterWith(t, Config{Argon2: &full})
	r := c.RouterURLs()
	const n = 100
	client := &http.Client{Timeout: 30 * time.Second}
	post := func(i int, path, body string) (int, []byte, time.Duration) {
		req, _ := http.NewRequest(http.MethodPost, r[i%len(r)]+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		// A different client address per request: this test is about the
		// region's answers, not the routers' per-address limits.
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.%d.%d", 100+i/250, i%250+1))
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, raw, time.Since(start)
	}
	for i := range n {
		if code, raw, _ := post(i, "/signup", fmt.Sprintf(`{"email":"known%d@acme.de","password":"correct horse battery"}`, i)); code != http.StatusCreated {
			t.Fatalf("sign-up %d: HTTP %d %s", i, code, raw)
		}
	}
	var known, unknown []time.Duration
	var knownBody []byte
	for i := range n {
		// Interleaved, each first every other time, so that drift in the
		// machine's speed (and the garbage one argon2id run leaves for the
		// next) falls on both alike.
		knownReq := func() (int, []byte, time.Duration) {
			return post(i, "/login", fmt.Sprintf(`{"email":"known%d@acme.de","password":"not the password"}`, i))
		}
		unknownReq := func() (int, []byte, time.Duration) {
			return post(i+1, "/login", fmt.Sprintf(`{"email":"unknown%d@acme.de","password":"not the password"}`, i))
		}
		var code1, code2 int
		var b1, b2 []byte
		var d1, d2 time.Duration
		if i%2 == 0 {
			code1, b1, d1 = knownReq()
			code2, b2, d2 = unknownReq()
		} else {
			code2, b2, d2 = unknownReq()
			code1, b1, d1 = knownReq()
		}
		if code1 != http.StatusUnauthorized || code2 != http.StatusUnauthorized {
			t.Fatalf("try %d: HTTP %d / %d", i, code1, code2)
		}
		if knownBody == nil {
			knownBody = b1
		}
		if !bytes.Equal(b1, b2) || !bytes.Equal(b1, knownBody) {
			t.Fatalf("answers differ:\nknown:   %s\nunknown: %s", b1, b2)
		}
		known, unknown = append(known, d1), append(unknown, d2)
	}
	mk, mu := median(known), median(unknown)
	diff := float64(mk-mu) / float64(min(mk, mu))
	t.Logf("%d failed logins each: median %v for existing accounts, %v for unknown addresses (%.1f%% apart)", n, mk, mu, 100*diff)
	if diff > 0.10 || diff < -0.10 {
		t.Errorf("timing differs by %.1f%% (limit 10%%)", 100*diff)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
