package devcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/domicile/domicile/internal/testenv"
)

// logLine is one JSON log record and the node that wrote it.
type logLine struct {
	raw   string
	node  string
	attrs map[string]any
}

func parseLogs(t *testing.T, s string) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		node, _ := m["node"].(string)
		out = append(out, logLine{raw: sc.Text(), node: node, attrs: m})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonStrings returns every string in a decoded JSON value (keys too), so that
// an identifier hidden by JSON escaping (\u0040, \u002b) is still found.
func jsonStrings(v any, out []string) []string {
	switch v := v.(type) {
	case string:
		out = append(out, v)
	case map[string]any:
		for k, x := range v {
			out = jsonStrings(x, append(out, k))
		}
	case []any:
		for _, x := range v {
			out = jsonStrings(x, out)
		}
	}
	return out
}

// TestRouterLogsNoIdentifiers runs sign-ups and logins through the routers
// with the logs at debug level and checks that no router log line holds an
// email address or a recognisable part of one; only the keyed hash ("key").
func TestRouterLogsNoIdentifiers(t *testing.T) {
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, Config{
		DataDir: t.TempDir(),
		Argon2:  lightArgon2,
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	routers := c.RouterURLs()
	const pw = "correct horse battery"

	// Distinctive local parts, so that a match in the logs is a leak and
	// not a coincidence. Some upper-case, some plus-addressed; domains that
	// hit each kind of residency rule (email domain, geo-IP, default).
	domains := []string{"acme.de", "example.sg", "Logtest-Mail.example", "tax.gov.uk", "zq-corp.example"}
	xffs := []string{"", "203.0.113.9", "192.0.2.1", "198.51.100.7"}
	type user struct{ email, local, base, domain, xff string }
	var users []user
	for i := range 20 {
		base := fmt.Sprintf("lgq%02dxuser", i)
		local := base
		switch {
		case i%4 == 1:
			local = strings.ToUpper(base)
		case i%4 == 2:
			local = base + "+tag" + fmt.Sprint(i)
		case i%4 == 3:
			local = "Mixed." + strings.ToUpper(base[:3]) + base[3:] + "+News"
		}
		d := domains[i%len(domains)]
		users = append(users, user{email: local + "@" + d, local: local, base: base, domain: d, xff: xffs[i%len(xffs)]})
	}

	do := func(method, target, ctype, body, xff string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, target, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s: HTTP %d %s", method, target, resp.StatusCode, raw)
		}
		return resp.StatusCode, string(raw)
	}
	creds := func(email, password string) string {
		b, _ := json.Marshal(map[string]string{"email": email, "password": password})
		return string(b)
	}

	for i, u := range users {
		if st, body := do("POST", routers[i%len(routers)]+"/signup", "application/json", creds(u.email, pw), u.xff); st != http.StatusCreated {
			t.Fatalf("sign-up %d: HTTP %d %s", i, st, body)
		}
	}
	for i, u := range users {
		// Through another router than the sign-up, and with the email in
		// another case: found through the index.
		email := u.email
		if i%2 == 0 {
			email = strings.ToUpper(email)
		}
		var st int
		var body string
		for try := 0; try < 20; try++ { // the replica may not have applied the claim yet
			if st, body = do("POST", routers[(i+1)%len(routers)]+"/login", "application/json", creds(email, pw), u.xff); st == http.StatusOK {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if st != http.StatusOK {
			t.Fatalf("login %d: HTTP %d %s", i, st, body)
		}
	}
	// A failed login, an invalid email, an identifier in the query.
	if st, body := do("POST", routers[0]+"/login", "application/json", creds(users[3].email, "wrong password!!"), ""); st != http.StatusUnauthorized {
		t.Fatalf("failed login: HTTP %d %s", st, body)
	}
	const invalid = "lgqinvalidxaddr@nodot"
	if st, body := do("POST", routers[1]+"/signup", "application/json", creds(invalid, pw), ""); st != http.StatusBadRequest {
		t.Fatalf("invalid email: HTTP %d %s", st, body)
	}
	hint := users[5]
	if st, body := do("GET", routers[2]+"/oauth2/authorize?login_hint="+url.QueryEscape(hint.email)+"&client_id=x", "", "", ""); st >= 500 {
		t.Fatalf("login_hint: HTTP %d %s", st, body)
	}

	// Stop first, so that every line is written.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := c.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	lines := parseLogs(t, logs.String())
	var routerLines, regionLines, keyed int
	var needles []string
	for _, u := range users {
		needles = append(needles, u.email, u.local, u.base, "@"+u.domain)
	}
	needles = append(needles, invalid, "lgqinvalidxaddr", "@nodot")
	for i := range needles {
		needles[i] = strings.ToLower(needles[i])
	}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l.node, "router-"):
			routerLines++
		case l.node != "":
			regionLines++
			continue
		default:
			continue
		}
		if k, ok := l.attrs["key"].(string); ok && k != "" {
			keyed++
		}
		hay := append(jsonStrings(l.attrs, nil), l.raw)
		for _, h := range hay {
			h = strings.ToLower(h)
			for _, n := range needles {
				if strings.Contains(h, n) {
					t.Errorf("router log line contains %q: %s", n, l.raw)
				}
			}
		}
	}
	if routerLines == 0 || regionLines == 0 {
		t.Fatalf("positive control: %d router and %d region log lines", routerLines, regionLines)
	}
	if keyed == 0 {
		t.Fatalf("positive control: no router log line has a \"key\" attribute (%d router lines)", routerLines)
	}
	// The regions may log identifiers' hashes too; they are not checked
	// here (they hold the data anyway), but the test shows what they log.
	t.Logf("%d router lines (%d with a key), %d region lines", routerLines, keyed, regionLines)
}
