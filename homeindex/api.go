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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domicile/domicile/internal/problem"
)

// HeaderHomeRule carries, from router to region, the residency rule that
// picked the home (e.g. "email_domain:acme.de", "index" for a known user);
// the region passes it on with its claim so the index counts users per rule.
const HeaderHomeRule = "Domicile-Home-Rule"

const (
	headerForwarded = "Domicile-Index-Forwarded"
	maxCommandBytes = 2 << 20 // a policy may be up to 1 MiB, base64 in JSON
)

// ErrUnauthorized: the internal API token was missing or wrong.
var ErrUnauthorized = errors.New("home index: unauthorized")

// Handler serves the internal index API that routers expose to regions and
// to each other (forwarded writes and reads, membership):
//
//	POST /internal/index/claim     {"keys":[hex...],"region":"eu-west","owner":123}
//	POST /internal/index/release   {"keys":[hex...],"owner":123}
//	POST /internal/index/rehome    {"keys":[...],"owner":123,"region":"from","to":"to","fence":42}
//	POST /internal/index/revoke    {"keys":[sessionKeyHex],"expires":unixMillis}
//	POST /internal/index/policy    {"version":3,"data":base64}
//	POST /internal/index/batch     {"commands":[{"op":"claim",...},...]} → {"results":[{"code":...},...]}
//	POST /internal/index/join      {"id":"router-4","raft":"host:port","api":"https://...","voter":true}
//	POST /internal/index/leave     {"id":"router-4"}
//	GET  /internal/index/lookup/{key}[?consistent=1]
//	GET  /internal/index/status
//
// Owners travel as fingerprints (OwnerOf), never as user ids. Every call
// needs "Authorization: Bearer <token>".
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /internal/index/batch", n.serveBatch)
	mux.HandleFunc("POST /internal/index/join", n.serveJoin)
	mux.HandleFunc("POST /internal/index/leave", n.serveLeave)
	mux.HandleFunc("POST /internal/index/{op}", n.serveWrite)
	mux.HandleFunc("GET /internal/index/lookup/{key}", n.serveLookup)
	mux.HandleFunc("GET /internal/index/status", n.serveStatus)
	mux.HandleFunc("GET /internal/index/clients", n.serveClients)
	mux.HandleFunc("GET /internal/index/clients/{id}", n.serveClient)
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

// wireCommand is a command on the internal HTTP API.
type wireCommand struct {
	Op      string  `json:"op,omitempty"` // in batches only
	ReqID   uint64  `json:"req_id,omitempty"`
	Keys    []Key   `json:"keys,omitempty"`
	Region  string  `json:"region,omitempty"`
	To      string  `json:"to,omitempty"`
	Owner   OwnerID `json:"owner,omitempty"`
	Fence   uint32  `json:"fence,omitempty"`
	Expires int64   `json:"expires,omitempty"`
	Version int     `json:"version,omitempty"`
	Data    []byte  `json:"data,omitempty"`
	Rule    string  `json:"rule,omitempty"`
	// Member commands (in forwarded batches only).
	ID  string `json:"id,omitempty"`
	API string `json:"api,omitempty"`
}

func toWire(c *command) wireCommand {
	return wireCommand{Op: c.Op.String(), ReqID: c.ReqID, Keys: c.Keys, Region: c.Region, To: c.To, Owner: c.Owner, Fence: c.Fence, Expires: c.Expires, Version: c.Version, Data: c.Data, Rule: c.Rule, ID: c.ID, API: c.API}
}

func (wc *wireCommand) command(op opCode) *command {
	return &command{Op: op, ReqID: wc.ReqID, Keys: wc.Keys, Region: wc.Region, To: wc.To, Owner: wc.Owner, Fence: wc.Fence, Expires: wc.Expires, Version: wc.Version, Data: wc.Data, Rule: wc.Rule, ID: wc.ID, API: wc.API}
}

type batchRequest struct {
	Commands []wireCommand `json:"commands"`
}

type batchResponse struct {
	Results []wireResult `json:"results"`
}

// wireResult is one command's outcome in a batch reply.
type wireResult struct {
	Code   string `json:"code,omitempty"` // "" is success
	Detail string `json:"detail,omitempty"`
}

var resultCodes = []struct {
	code string
	err  error
}{
	{"conflict", ErrConflict}, {"unknown_region", ErrUnknownRegion}, {"fenced", ErrFenced},
	{"stale_policy", ErrStalePolicy}, {"invalid", ErrInvalid}, {"no_leader", ErrNoLeader},
}

func resultOf(err error) wireResult {
	if err == nil {
		return wireResult{}
	}
	for _, rc := range resultCodes {
		if errors.Is(err, rc.err) {
			return wireResult{Code: rc.code, Detail: err.Error()}
		}
	}
	return wireResult{Code: "error", Detail: err.Error()}
}

func (r wireResult) err() error {
	if r.Code == "" {
		return nil
	}
	for _, rc := range resultCodes {
		if r.Code == rc.code {
			if r.Detail == "" || r.Detail == rc.err.Error() {
				return rc.err
			}
			return fmt.Errorf("%w (%s)", rc.err, r.Detail)
		}
	}
	return fmt.Errorf("home index: %s", r.Detail)
}

// serveBatch takes a follower's forwarded batch. Only the leader accepts
// it; the commands join the leader's own batcher, so they usually share
// one log entry.
func (n *Node) serveBatch(w http.ResponseWriter, r *http.Request) {
	var req batchRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Commands) == 0 || len(req.Commands) > MaxBatch {
		writeError(w, fmt.Errorf("%w: batch: want 1..%d commands", ErrInvalid, MaxBatch))
		return
	}
	resp := batchResponse{Results: make([]wireResult, len(req.Commands))}
	if !n.IsLeader() {
		for i := range resp.Results {
			resp.Results[i] = resultOf(ErrNoLeader)
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}
	var wg sync.WaitGroup
	for i := range req.Commands {
		op, ok := batchOps[req.Commands[i].Op]
		if !ok {
			resp.Results[i] = resultOf(fmt.Errorf("%w: op: unknown %q", ErrInvalid, req.Commands[i].Op))
			continue
		}
		c := req.Commands[i].command(op)
		if err := c.validate(); err != nil {
			resp.Results[i] = resultOf(err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp.Results[i] = resultOf(n.enqueue(r.Context(), c))
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, resp)
}

var writeOps = map[string]opCode{
	opClaim.String(): opClaim, opRelease.String(): opRelease, opRehome.String(): opRehome,
	opRevoke.String(): opRevoke, opSetPolicy.String(): opSetPolicy,
	opSetClient.String(): opSetClient, opDeleteClient.String(): opDeleteClient,
}

// batchOps are the commands a follower may forward in a batch: the write
// operations and the membership commands a node that just lost the
// leadership may have queued (announcing its API address).
var batchOps = func() map[string]opCode {
	m := map[string]opCode{opSetMember.String(): opSetMember, opRemoveMember.String(): opRemoveMember}
	for k, v := range writeOps {
		m[k] = v
	}
	return m
}()

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	return nil
}

func (n *Node) serveWrite(w http.ResponseWriter, r *http.Request) {
	op, ok := writeOps[r.PathValue("op")]
	if !ok {
		problem.Write(w, problem.New(http.StatusNotFound, "unknown index operation"))
		return
	}
	var wc wireCommand
	if err := decodeBody(w, r, &wc); err != nil {
		writeError(w, err)
		return
	}
	if err := n.submit(r.Context(), wc.command(op)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) serveJoin(w http.ResponseWriter, r *http.Request) {
	n.serveMember(w, r, func(m memberRequest) error { return n.Join(r.Context(), m.ID, m.Raft, m.API, m.Voter) })
}

func (n *Node) serveLeave(w http.ResponseWriter, r *http.Request) {
	n.serveMember(w, r, func(m memberRequest) error { return n.Leave(r.Context(), m.ID) })
}

// serveMember decodes a membership change and runs it; a request a
// follower already forwarded is not forwarded again.
func (n *Node) serveMember(w http.ResponseWriter, r *http.Request, change func(memberRequest) error) {
	var m memberRequest
	if err := decodeBody(w, r, &m); err != nil {
		writeError(w, err)
		return
	}
	if !n.IsLeader() && r.Header.Get(headerForwarded) != "" {
		writeError(w, ErrNoLeader)
		return
	}
	if err := change(m); err != nil {
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
	var e Entry
	var ok bool
	switch {
	case r.URL.Query().Get("consistent") == "":
		if !n.CaughtUp() {
			// A miss now could be an entry the replica has not re-read.
			writeError(w, fmt.Errorf("%w: replica still loading its log", ErrNoLeader))
			return
		}
		e, ok = n.Lookup(k)
	case !n.IsLeader() && r.Header.Get(headerForwarded) != "":
		writeError(w, ErrNoLeader)
		return
	default:
		if e, ok, err = n.LookupLinearizable(r.Context(), k); err != nil {
			writeError(w, err)
			return
		}
	}
	if !ok {
		problem.Write(w, problem.New(http.StatusNotFound, "no entry for key"))
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// serveClients lists the registered OAuth client ids (local replica).
func (n *Node) serveClients(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]string{"clients": n.ClientIDs()})
}

// serveClient returns one OAuth client's metadata as stored (local
// replica).
func (n *Node) serveClient(w http.ResponseWriter, r *http.Request) {
	d, ok := n.Client(r.PathValue("id"))
	if !ok {
		problem.Write(w, problem.New(http.StatusNotFound, "no such client"))
		return
	}
	writeJSON(w, http.StatusOK, clientDoc{ID: r.PathValue("id"), Metadata: d})
}

// clientDoc is an OAuth client as the index API returns it.
type clientDoc struct {
	ID       string `json:"id"`
	Metadata []byte `json:"metadata"`
}

// Member is one server of the Raft configuration.
type Member struct {
	ID       string `json:"id"`
	Raft     string `json:"raft"`
	API      string `json:"api,omitempty"`
	Suffrage string `json:"suffrage"`
}

// Status is a summary of one replica.
type Status struct {
	ID             string   `json:"id"`
	Leader         string   `json:"leader"`
	State          string   `json:"state"`
	Members        []Member `json:"members"`
	Term           uint64   `json:"term"`
	LastIndex      uint64   `json:"last_index"`
	CommitIndex    uint64   `json:"commit_index"`
	AppliedIndex   uint64   `json:"applied_index"`
	Entries        int      `json:"entries"`
	TableBytes     int      `json:"table_bytes"`
	BytesPerEntry  float64  `json:"bytes_per_entry"`
	PolicyVersion  int      `json:"policy_version"`
	Revocations    int      `json:"revocations"`
	SnapshotIndex  uint64   `json:"snapshot_index"`
	SnapshotAgeSec float64  `json:"snapshot_age_seconds"` // -1: no snapshot yet
	CaughtUp       bool     `json:"caught_up"`
	// RuleCounts: index entries created per residency rule.
	RuleCounts map[string]uint64 `json:"rule_counts,omitempty"`
}

// Status reports this replica's view of the cluster.
func (n *Node) Status() Status {
	t := n.fsm.tbl.Load()
	s := Status{
		ID: n.cfg.ID, Leader: n.Leader(), State: n.raft.State().String(),
		LastIndex: n.raft.LastIndex(), CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex(),
		Entries: t.Len(), TableBytes: t.MemoryBytes(), PolicyVersion: n.fsm.policyNow().Version,
		SnapshotAgeSec: -1, CaughtUp: n.CaughtUp(), RuleCounts: n.RuleCounts(),
	}
	s.Term, _ = strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	if s.Entries > 0 {
		s.BytesPerEntry = float64(s.TableBytes) / float64(s.Entries)
	}
	n.fsm.mu.RLock()
	s.Revocations = len(n.fsm.revoked)
	n.fsm.mu.RUnlock()
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			m := Member{ID: string(srv.ID), Raft: string(srv.Address), Suffrage: srv.Suffrage.String()}
			if api, ok := n.fsm.memberAPI(m.ID); ok {
				m.API = api
			} else if p, ok := n.peers[srv.ID]; ok {
				m.API = p.APIAddr
			}
			s.Members = append(s.Members, m)
		}
	}
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 {
		s.SnapshotIndex = metas[0].Index
		// Snapshot ids are "term-index-unixmillis".
		if parts := strings.Split(metas[0].ID, "-"); len(parts) == 3 {
			if ms, err := strconv.ParseInt(parts[2], 10, 64); err == nil {
				s.SnapshotAgeSec = time.Since(time.UnixMilli(ms)).Seconds()
			}
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
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrUnknownRegion):
		p = problem.New(http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrFenced), errors.Is(err, ErrStalePolicy):
		p = problem.New(http.StatusPreconditionFailed, err.Error())
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
		if strings.Contains(p.Detail, ErrUnknownRegion.Error()) {
			return fmt.Errorf("%w: %s", ErrUnknownRegion, p.Detail)
		}
		return fmt.Errorf("%w: %s", ErrInvalid, p.Detail)
	case http.StatusPreconditionFailed:
		if strings.Contains(p.Detail, ErrStalePolicy.Error()) {
			return fmt.Errorf("%w: %s", ErrStalePolicy, p.Detail)
		}
		return ErrFenced
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
	return c.ClaimByRule(ctx, keys, region, owner, "")
}

// ClaimByRule: see Node.ClaimByRule.
func (c *Client) ClaimByRule(ctx context.Context, keys []Key, region, owner, rule string) error {
	return c.write(ctx, &command{Op: opClaim, Keys: keys, Region: region, Owner: OwnerOf(owner), Rule: rule})
}

// Release: see Node.Release.
func (c *Client) Release(ctx context.Context, keys []Key, owner string) error {
	return c.write(ctx, &command{Op: opRelease, Keys: keys, Owner: OwnerOf(owner)})
}

// Rehome: see Node.Rehome.
func (c *Client) Rehome(ctx context.Context, keys []Key, owner, from, to string, fence uint32) error {
	return c.write(ctx, &command{Op: opRehome, Keys: keys, Owner: OwnerOf(owner), Region: from, To: to, Fence: fence})
}

// Revoke: see Node.Revoke.
func (c *Client) Revoke(ctx context.Context, sessionID string, expires time.Time) error {
	return c.write(ctx, &command{Op: opRevoke, Keys: []Key{sessionKey(sessionID)}, Expires: expires.UnixMilli()})
}

// SetPolicy: see Node.SetPolicy.
func (c *Client) SetPolicy(ctx context.Context, version int, policyYAML []byte) error {
	return c.write(ctx, &command{Op: opSetPolicy, Version: version, Data: policyYAML})
}

// SetClient: see Node.SetClient.
func (c *Client) SetClient(ctx context.Context, id string, metadata []byte) error {
	return c.write(ctx, &command{Op: opSetClient, ID: id, Data: metadata})
}

// DeleteClient: see Node.DeleteClient.
func (c *Client) DeleteClient(ctx context.Context, id string) error {
	return c.write(ctx, &command{Op: opDeleteClient, ID: id})
}

// GetClient asks a replica for an OAuth client's metadata; ok is false if
// there is no such client.
func (c *Client) GetClient(ctx context.Context, id string) (metadata []byte, ok bool, err error) {
	if !ValidClientID(id) {
		return nil, false, nil
	}
	var doc clientDoc
	err = c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+"/internal/index/clients/"+id, nil)
	}, &doc)
	if errors.Is(err, errNotFound) {
		return nil, false, nil
	}
	return doc.Metadata, err == nil, err
}

// ClientIDs lists the registered OAuth client ids.
func (c *Client) ClientIDs(ctx context.Context) ([]string, error) {
	var out struct {
		Clients []string `json:"clients"`
	}
	err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+"/internal/index/clients", nil)
	}, &out)
	return out.Clients, err
}

// Status returns the status of the first router that answers.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+"/internal/index/status", nil)
	}, &s)
	return s, err
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
	cmd.ReqID = newReqID() // the same id on every retry below
	body, _ := json.Marshal(toWire(cmd))
	return c.do(ctx, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/internal/index/"+cmd.Op.String(), bytes.NewReader(body))
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
