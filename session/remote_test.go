package session

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// jwksServer serves the union JWKS of keys, counting the fetches.
type jwksServer struct {
	mu      sync.Mutex
	keys    []PublicKey
	fetches atomic.Int32
	fail    atomic.Bool
}

func (j *jwksServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	j.fetches.Add(1)
	if j.fail.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	j.mu.Lock()
	b, err := MarshalJWKS(j.keys)
	j.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Write(b)
}

func (j *jwksServer) set(keys ...PublicKey) {
	j.mu.Lock()
	j.keys = keys
	j.mu.Unlock()
}

func TestRemoteVerifier(t *testing.T) {
	us1, _ := GenerateSigningKey("us-east", 1)
	us2, _ := GenerateSigningKey("us-east", 2)
	ap1, _ := GenerateSigningKey("ap-southeast", 1)
	srv := &jwksServer{}
	srv.set(us1.Public(), ap1.Public())
	ts := httptest.NewServer(srv)
	defer ts.Close()

	v := NewRemoteVerifier(&HTTPKeySource{URL: ts.URL}, RemoteOptions{MaxAge: 30 * time.Minute, MinInterval: 10 * time.Second})
	now := time.Now()
	issue := func(k *SigningKey, region string, amr []string) string {
		t.Helper()
		iss, err := NewIssuer(region, k)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := iss.Issue(Claims{Subject: region + ".u", Home: region, SessionID: "s", IssuedAt: now, Expiry: now.Add(time.Hour), AMR: amr})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ctx := context.Background()
	c, err := v.Verify(ctx, issue(us1, "us-east", []string{"pwd", "otp"}), now)
	if err != nil || c.Home != "us-east" || len(c.AMR) != 2 || c.AMR[1] != "otp" {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
	if _, err := v.Verify(ctx, issue(ap1, "ap-southeast", nil), now); err != nil {
		t.Fatal(err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1 (cached)", n)
	}
	// A new key of us-east: an unknown kid makes it fetch again, once per
	// MinInterval.
	srv.set(us1.Public(), us2.Public())
	tok2 := issue(us2, "us-east", nil)
	if _, err := v.Verify(ctx, tok2, now); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a new kid within MinInterval of the last fetch: %v, want ErrUnknownKey", err)
	}
	later := now.Add(11 * time.Second)
	if _, err := v.Verify(ctx, tok2, later); err != nil {
		t.Fatalf("a new kid after MinInterval: %v", err)
	}
	// ap-southeast left the JWKS: its tokens no longer verify.
	if _, err := v.Verify(ctx, issue(ap1, "ap-southeast", nil), later); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a region gone from the JWKS: %v, want ErrUnknownKey", err)
	}
	// Forged kids do not make it hammer the source.
	before := srv.fetches.Load()
	for i := range 20 {
		v.Verify(ctx, issue(ap1, "ap-southeast", nil), later.Add(time.Duration(i)*time.Millisecond))
	}
	if n := srv.fetches.Load() - before; n > 0 {
		t.Fatalf("%d fetches for unknown kids within MinInterval", n)
	}
	// A source that fails keeps the keys it had.
	srv.fail.Store(true)
	if _, err := v.Verify(ctx, tok2, later.Add(40*time.Minute)); err != nil {
		t.Fatalf("with the source down, known keys: %v", err)
	}
}

func TestStaticKeys(t *testing.T) {
	k, _ := GenerateSigningKey("us-east", 1)
	v := NewRemoteVerifier(StaticKeys{k.Public()}, RemoteOptions{})
	iss, _ := NewIssuer("us-east", k)
	now := time.Now()
	tok, _ := iss.Issue(Claims{Subject: "us-east.u", Home: "us-east", SessionID: "s", IssuedAt: now, Expiry: now.Add(time.Minute)})
	if _, err := v.Verify(context.Background(), tok, now); err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Issue(Claims{Subject: "us-east.u", Home: "us-east", SessionID: "s", IssuedAt: now, Expiry: now.Add(time.Minute),
		AMR: []string{"has space"}}); err == nil {
		t.Fatal("an amr value with a space was issued")
	}
}
