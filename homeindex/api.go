package homeindex

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/domicile/domicile/internal/problem"
)

const (
	headerForwarded = "Domicile-Index-Forwarded"
	maxCommandBytes = 16 << 10
)

// ErrUnauthorized: the internal API token was missing or wrong.
var ErrUnauthorized = errors.New("home index: unauthorized")

// Handler serves the internal index API that routers expose to regions and
// to each other (forwarded writes):
//
//	POST /internal/index/claim     {"keys":[hex...],"region":"eu-west","owner":"..."}
//	POST /internal/index/release   {"keys":[hex...],"owner":"..."}
//	GET  /internal/index/lookup/{key}
//	GET  /internal/index/status
//
// Every call needs "Authorization: Bearer <token>".
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /internal/index/{op}", n.serveWrite)
	mux.HandleFunc("GET /internal/index/lookup/{key}", n.serveLookup)
	mux.HandleFunc("GET /internal/index/status", n.serveStatus)
	return n.auth(mux)
}

func (n *Node) auth(next http.Handler) http.Handler {
	want := []byte("Bearer " + n.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			problem.Write(w, problem.New(http.StatusUnauthorized, "internal API token required"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (n *Node) serveWrite(w http.ResponseWriter, r *http.Request) {
	op := opCode(r.PathValue("op"))
	if op != opClaim && op != opRelease {
		problem.Write(w, problem.New(http.StatusNotFound, "unknown index operation"))
		return
	}
	var c command
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		writeError(w, fmt.Errorf("%w: body: %v", ErrInvalid, err))
		return
	}
	c.Op = op
	if err := c.validate(); err != nil {
		writeError(w, err)
		return
	}
	var err error
	switch {
	case n.IsLeader():
		err = n.apply(r.Context(), &c)
	case r.Header.Get(headerForwarded) != "":
		// Forwarded once already and we are not leader (any more): let
		// the caller retry rather than bounce between followers.
		err = ErrNoLeader
	default:
		err = n.forward(r.Context(), &c)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) serveLookup(w http.ResponseWriter, r *http.Request) {
	k, err := ParseKey(r.PathValue("key"))
	if err != nil {
		writeError(w, fmt.Errorf("%w: %v", ErrInvalid, err))
		return
	}
	e, ok := n.Lookup(k)
	if !ok {
		problem.Write(w, problem.New(http.StatusNotFound, "no entry for key"))
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// Status is a summary of one replica.
type Status struct {
	ID        string            `json:"id"`
	Leader    string            `json:"leader"`
	State     string            `json:"state"`
	Members   []string          `json:"members"`
	Entries   int               `json:"entries"`
	LastIndex uint64            `json:"last_index"`
	Raft      map[string]string `json:"raft,omitempty"`
}

// Status reports this replica's view of the cluster.
func (n *Node) Status() Status {
	s := Status{ID: n.cfg.ID, Leader: n.Leader(), State: n.raft.State().String(), Entries: n.Len(), LastIndex: n.raft.LastIndex()}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			s.Members = append(s.Members, string(srv.ID))
		}
	}
	return s
}

func (n *Node) serveStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, n.Status())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError maps index errors to the wire in one place.
func writeError(w http.ResponseWriter, err error) {
	var p *problem.Problem
	switch {
	case errors.Is(err, ErrConflict):
		p = problem.New(http.StatusConflict, ErrConflict.Error())
	case errors.Is(err, ErrInvalid):
		p = problem.New(http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNoLeader):
		p = problem.New(http.StatusServiceUnavailable, ErrNoLeader.Error())
		p.RetryAfter = 1
	default:
		p = problem.New(http.StatusInternalServerError, "index write failed")
	}
	problem.Write(w, p)
}

// errorFromResponse is the inverse of writeError.
func errorFromResponse(resp *http.Response) error {
	if resp.StatusCode/100 == 2 {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var p problem.Problem
	_ = json.Unmarshal(body, &p)
	switch resp.StatusCode {
	case http.StatusConflict:
		return ErrConflict
	case http.StatusBadRequest:
		return fmt.Errorf("%w: %s", ErrInvalid, p.Detail)
	case http.StatusServiceUnavailable:
		return ErrNoLeader
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusNotFound:
		return errNotFound
	}
	return fmt.Errorf("home index: HTTP %d: %s", resp.StatusCode, p.Detail)
}

var errNotFound = errors.New("home index: not found")

// Client writes to and reads from the index through the internal API of
// any router. It is what regional nodes use. It tries the endpoints in
// turn, starting with the last that worked, and retries while the cluster
// has no leader, until the context ends.
type Client struct {
	endpoints []string
	token     string
	http      *http.Client
	next      atomic.Int32
}

// NewClient returns a Client over the given router base URLs.
func NewClient(endpoints []string, token string, hc *http.Client) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("index client: endpoints: at least one router URL is required")
	}
	if token == "" {
		return nil, errors.New("index client: token: required")
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	eps := make([]string, len(endpoints))
	for i, e := range endpoints {
		eps[i] = strings.TrimRight(e, "/")
	}
	return &Client{endpoints: eps, token: token, http: hc}, nil
}

// Claim: see Node.Claim.
func (c *Client) Claim(ctx context.Context, keys []Key, region, owner string) error {
	return c.write(ctx, &command{Op: opClaim, Keys: keys, Region: region, Owner: owner})
}

// Release: see Node.Release.
func (c *Client) Release(ctx context.Context, keys []Key, owner string) error {
	return c.write(ctx, &command{Op: opRelease, Keys: keys, Owner: owner})
}

// Lookup asks a router's replica for the entry of k.
func (c *Client) Lookup(ctx context.Context, k Key) (Entry, bool, error) {
	var e Entry
	err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+"/internal/index/lookup/"+k.String(), nil)
	}, &e)
	if errors.Is(err, errNotFound) {
		return Entry{}, false, nil
	}
	return e, err == nil, err
}

func (c *Client) write(ctx context.Context, cmd *command) error {
	if err := cmd.validate(); err != nil {
		return err
	}
	body, _ := json.Marshal(cmd)
	return c.do(ctx, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/internal/index/"+string(cmd.Op), bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	}, nil)
}

func (c *Client) do(ctx context.Context, newReq func(base string) (*http.Request, error), out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	backoff := 25 * time.Millisecond
	var last error
	for {
		for range c.endpoints {
			i := int(c.next.Load()) % len(c.endpoints)
			req, err := newReq(c.endpoints[i])
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+c.token)
			resp, err := c.http.Do(req)
			if err == nil {
				err = errorFromResponse(resp)
				if err == nil && out != nil {
					err = json.NewDecoder(resp.Body).Decode(out)
				}
				resp.Body.Close()
				if !errors.Is(err, ErrNoLeader) {
					return err
				}
			}
			last = err
			c.next.CompareAndSwap(int32(i), int32((i+1)%len(c.endpoints)))
			if ctx.Err() != nil {
				return fmt.Errorf("%w (last error: %v)", ErrNoLeader, last)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ErrNoLeader, last)
		case <-time.After(backoff):
		}
		if backoff < 500*time.Millisecond {
			backoff *= 2
		}
	}
}
