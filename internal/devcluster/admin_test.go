package devcluster

import (
	"net/http"
	"testing"
	"time"

	"github.com/domicile/domicile/homeindex"
)

// adminClient sends the admin token.
type adminRT struct{ token string }

func (a adminRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.token)
	return http.DefaultTransport.RoundTrip(r)
}

// TestRegionAdminAPI: list and search a region's users, disable one,
// reset MFA and delete, on the region's own address with the admin token.
func TestRegionAdminAPI(t *testing.T) {
	c := startCluster(t)
	r := c.RouterURLs()
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, e := range []string{"a@acme.de", "b@acme.de", "c@acme.de"} {
		if code, m := do(t, hc, "POST", r[0]+"/signup", `{"email":"`+e+`","password":"correct horse battery"}`); code != 201 {
			t.Fatalf("sign-up %s: %d %v", e, code, m)
		}
	}
	eu := c.Regions["eu-west"].URL()
	if code, _ := do(t, hc, "GET", eu+"/admin/v1/users", ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	admin := &http.Client{Timeout: 10 * time.Second, Transport: adminRT{c.Secrets.AdminToken}}
	code, page := do(t, admin, "GET", eu+"/admin/v1/users?limit=2", "")
	users, _ := page["users"].([]any)
	if code != 200 || len(users) != 2 || page["next"] == nil {
		t.Fatalf("list: %d %v", code, page)
	}
	code, page = do(t, admin, "GET", eu+"/admin/v1/users?after="+page["next"].(string), "")
	if rest, _ := page["users"].([]any); code != 200 || len(rest) != 1 {
		t.Fatalf("second page: %d %v", code, page)
	}
	code, found := do(t, admin, "GET", eu+"/admin/v1/users?email=B@acme.de", "")
	hits, _ := found["users"].([]any)
	if code != 200 || len(hits) != 1 {
		t.Fatalf("search: %d %v", code, found)
	}
	id := hits[0].(map[string]any)["id"].(string)
	if code, _ := do(t, admin, "POST", eu+"/admin/v1/users/"+id+"/disable", `{"disabled":true}`); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	if code, _ := do(t, hc, "POST", r[1]+"/login", `{"email":"b@acme.de","password":"correct horse battery"}`); code != 401 {
		t.Fatalf("login while disabled: %d", code)
	}
	if code, _ := do(t, admin, "POST", eu+"/admin/v1/users/"+id+"/disable", `{"disabled":false}`); code != 200 {
		t.Fatalf("enable: %d", code)
	}
	if code, _ := do(t, hc, "POST", r[1]+"/login", `{"email":"b@acme.de","password":"correct horse battery"}`); code != 200 {
		t.Fatalf("login after enabling: %d", code)
	}
	if code, _ := do(t, admin, "DELETE", eu+"/admin/v1/users/"+id+"/mfa", ""); code != 204 {
		t.Fatalf("reset mfa: %d", code)
	}
	if code, _ := do(t, admin, "DELETE", eu+"/admin/v1/users/"+id, ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := do(t, admin, "GET", eu+"/admin/v1/users/"+id, ""); code != 404 {
		t.Fatalf("get after delete: %d", code)
	}
	hasher, _ := homeindex.NewHasher(c.Secrets.IndexKey)
	waitFor(t, "index entry released", func() bool { _, ok := c.Routers[0].Index.Lookup(hasher.EmailKey("b@acme.de")); return !ok })
	// The routers do not forward /admin/ to regions: their own admin API.
	if code, _ := do(t, admin, "GET", r[0]+"/admin/v1/users", ""); code != 404 {
		t.Fatalf("region admin through a router: %d", code)
	}
}
