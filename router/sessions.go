package router

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/domicile/domicile/session"
)

// KeysPath is where a region node serves the public keys of its session
// tokens.
const KeysPath = "/internal/session-keys"

// keysRefresh is how often the router re-reads every region's session keys
// (a region that rotates keeps the old key published until its tokens
// expire, so this only bounds how soon a new key is known).
const keysRefresh = 30 * time.Second

// fetchKeys reads the session keys of one node.
func (n *node) fetchKeys(timeout time.Duration) ([]session.PublicKey, error) {
	body, err := n.fetchInternal(KeysPath, timeout)
	if err != nil {
		return nil, err
	}
	return session.ParseJWKS(body)
}

// fetchInternal GETs a document (at most 1 MiB) from one of the node's
// internal endpoints.
func (n *node) fetchInternal(path string, timeout time.Duration) ([]byte, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(n.url + path)
	req.Header.SetMethod(fasthttp.MethodGet)
	if err := n.checks.DoTimeout(req, resp, timeout); err != nil {
		return nil, err
	}
	body, err := readAll(resp, 1<<20)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, &statusError{resp.StatusCode()}
	}
	return bytes.Clone(body), nil // body belongs to resp
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "HTTP " + fasthttp.StatusMessage(e.code) }

// readAll returns the body of a (possibly streamed) response, up to limit
// bytes.
func readAll(resp *fasthttp.Response, limit int) ([]byte, error) {
	if resp.BodyStream() == nil {
		return resp.Body(), nil
	}
	defer resp.CloseBodyStream()
	buf := make([]byte, 0, 4096)
	for len(buf) <= limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := resp.BodyStream().Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return nil, err
		}
	}
	return nil, &statusError{fasthttp.StatusRequestEntityTooLarge}
}

// keysLoop keeps the session keys of region pl current in v.
func (rt *Router) keysLoop(pl *pool, v *session.Verifier) {
	wait := time.Duration(0)
	for {
		select {
		case <-rt.stop:
			return
		case <-time.After(wait):
		}
		byKID := map[string]session.PublicKey{}
		ok := false
		for _, n := range pl.nodes {
			if !n.healthy.Load() {
				continue
			}
			keys, err := n.fetchKeys(rt.health.Timeout)
			if err != nil {
				rt.log.Warn("cannot read session keys", "region", pl.name, "node", n.url, "err", err)
				continue
			}
			ok = true
			for _, k := range keys {
				byKID[k.KID] = k
			}
		}
		if !ok {
			wait = time.Second
			continue
		}
		keys := make([]session.PublicKey, 0, len(byKID))
		for _, k := range byKID {
			keys = append(keys, k)
		}
		if err := v.SetRegionKeys(pl.name, keys); err != nil {
			rt.log.Error("region published unusable session keys", "region", pl.name, "err", err)
			wait = time.Second
			continue
		}
		wait = rt.keysEvery
	}
}
