package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// request is one HTTP request of the mix. The same list drives wrk (through
// the generated Lua script) and vegeta (through requests.json), so every
// target and both phases see the same sequence.
type request struct {
	Kind   string `json:"kind"` // login, signup or hello
	Method string `json:"method"`
	Path   string `json:"path"`
	Body   string `json:"body,omitempty"` // JSON; sent with Content-Type: application/json
}

// mix is the share of each kind of request, in parts (e.g. 50,10,40).
type mix struct{ Login, Signup, Hello int }

func parseMix(s string) (mix, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return mix{}, fmt.Errorf("-mix: %q: want three comma-separated weights login,signup,hello (e.g. 50,10,40)", s)
	}
	var w [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return mix{}, fmt.Errorf("-mix: %q: weight %q is not a non-negative integer", s, p)
		}
		w[i] = n
	}
	m := mix{w[0], w[1], w[2]}
	if m.total() == 0 {
		return mix{}, fmt.Errorf("-mix: %q: all weights are zero", s)
	}
	return m, nil
}

func (m mix) total() int { return m.Login + m.Signup + m.Hello }

func (m mix) String() string {
	pct := func(n int) string { return strconv.FormatFloat(100*float64(n)/float64(m.total()), 'f', -1, 64) + "%" }
	return fmt.Sprintf("%s POST /login (known users, index lookup), %s POST /signup (new users, policy), %s GET /hello (no identifier)",
		pct(m.Login), pct(m.Signup), pct(m.Hello))
}

// userEmail is the identifier of pre-claimed user i.
func userEmail(i int) string { return fmt.Sprintf("user%d@bench.example", i) }

// signupDomains spread new users over the policy's rules: an exact domain,
// a wildcard, another exact domain and the default.
var signupDomains = []string{"acme.de", "agency.gov.uk", "example.sg", "example.com"}

// maxLogins bounds the distinct users in the request cycle (and so the size
// of the Lua table each wrk thread builds).
const maxLogins = 100_000

// buildRequests returns one cycle of the mix: the kinds interleaved as
// evenly as their weights allow (smooth weighted round robin), long enough
// for the logins to visit every pre-claimed user once.
func buildRequests(m mix, users int) []request {
	g := gcd(gcd(m.Login, m.Signup), m.Hello)
	w := [3]int{m.Login / g, m.Signup / g, m.Hello / g}
	per := w[0] + w[1] + w[2]
	cycles := (1000 + per - 1) / per
	if w[0] > 0 && users > 0 {
		n := min(users, maxLogins)
		cycles = (n + w[0] - 1) / w[0]
	}
	var cur [3]int
	var login, signup int
	reqs := make([]request, 0, cycles*per)
	for range cycles * per {
		best := -1
		for k := range w {
			cur[k] += w[k]
			if w[k] > 0 && (best < 0 || cur[k] > cur[best]) {
				best = k
			}
		}
		cur[best] -= per
		switch best {
		case 0:
			reqs = append(reqs, request{Kind: "login", Method: "POST", Path: "/login",
				Body: `{"email":"` + userEmail(login%max(users, 1)) + `","password":"correct horse battery"}`})
			login++
		case 1:
			email := fmt.Sprintf("new%d@%s", signup, signupDomains[signup%len(signupDomains)])
			reqs = append(reqs, request{Kind: "signup", Method: "POST", Path: "/signup",
				Body: `{"email":"` + email + `","password":"correct horse battery"}`})
			signup++
		default:
			reqs = append(reqs, request{Kind: "hello", Method: "GET", Path: "/hello"})
		}
	}
	return reqs
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func writeRequests(path string, reqs []request) error {
	data, err := json.Marshal(reqs)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func readRequests(path string) ([]request, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var reqs []request
	if err := json.Unmarshal(data, &reqs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%s: no requests", path)
	}
	return reqs, nil
}
