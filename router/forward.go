package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/internal/routesig"
)

// Headers the router sets on forwarded requests. Clients cannot set them:
// every incoming header with the Domicile- prefix is removed first.
const (
	HeaderRouter    = "Domicile-Router"
	HeaderRequestID = "X-Request-Id"
)

// SessionCookie is the name of the cookie that carries the session token.
const SessionCookie = "domicile_session"

// ownRoute reports whether the router serves path itself (through echo)
// rather than forwarding it.
func ownRoute(path []byte) bool {
	switch string(path) {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	return bytes.HasPrefix(path, []byte("/admin/")) || bytes.HasPrefix(path, []byte("/internal/"))
}

// serveFast is the router's front handler: its own routes go to echo,
// everything else is forwarded to the home region.
func (rt *Router) serveFast(ctx *fasthttp.RequestCtx) {
	defer func() {
		if v := recover(); v != nil {
			rt.log.Error("panic while forwarding", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
			ctx.Response.Reset()
			rt.fail(ctx, problem.New(fasthttp.StatusInternalServerError, ""))
		}
	}()
	if ownRoute(ctx.Path()) {
		rt.echoFast(ctx)
		return
	}
	rt.forward(ctx)
}

// fail writes a problem document.
func (rt *Router) fail(ctx *fasthttp.RequestCtx, p *problem.Problem) {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = fasthttp.StatusMessage(p.Status)
	}
	if ctx.Request.Header.ContentLength() != 0 && !ctx.Request.Header.IsGet() {
		// The body may not have been read: do not try to read the next
		// request from the middle of it.
		ctx.SetConnectionClose()
	}
	ctx.Response.Header.SetContentType(problem.ContentType)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	ctx.SetStatusCode(p.Status)
	body, _ := json.Marshal(p)
	ctx.SetBody(body)
	rt.requests(p.Status).Inc()
}

// Resolution sources (the "source" label of the metrics).
const (
	srcSession = "session"
	srcIndex   = "index"
	srcNearest = "nearest"
)

// identity is what a request tells about its user.
type identity struct {
	token []byte // session token, if any
	email string // normalised identifier, if any
	key   homeindex.Key
	hasID bool
}

// readBody reads a request body of at most limit bytes into memory (the
// router only does so for bodies that may carry the identifier) and makes
// it the body that is forwarded.
func readBody(ctx *fasthttp.RequestCtx, limit int) ([]byte, *problem.Problem) {
	n := ctx.Request.Header.ContentLength()
	if n > limit {
		return nil, problem.New(fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", limit))
	}
	if !ctx.Request.IsBodyStream() {
		return ctx.Request.Body(), nil
	}
	buf := make([]byte, 0, max(n, 512))
	lr := io.LimitReader(ctx.RequestBodyStream(), int64(limit)+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, problem.New(fasthttp.StatusBadRequest, "body: could not be read")
		}
	}
	if len(buf) > limit {
		return nil, problem.New(fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", limit))
	}
	if n >= 0 && len(buf) != n {
		return nil, problem.New(fasthttp.StatusBadRequest, "body: shorter than its Content-Length")
	}
	ctx.Request.SetBody(buf)
	return ctx.Request.Body(), nil
}

// Identifier fields, in the order they are looked for.
var idFields = [...]string{"email", "identifier", "username", "login_hint"}

// identify finds the session token and the identifier of a request: the
// token in the session cookie or an Authorization: Bearer header; the
// identifier in the query (login_hint, as OIDC sends it), in a JSON body, or
// in a form body. Only bodies of identifier-carrying media types are read,
// and only up to MaxBodyBytes.
func (rt *Router) identify(ctx *fasthttp.RequestCtx, p *fastjson.Parser) (identity, *problem.Problem) {
	var id identity
	h := &ctx.Request.Header
	if c := h.Cookie(SessionCookie); len(c) > 0 {
		id.token = c
	} else if a := h.Peek("Authorization"); len(a) > 7 && bytes.EqualFold(a[:7], []byte("bearer ")) {
		id.token = a[7:]
	}
	var raw []byte
	if v := ctx.QueryArgs().Peek("login_hint"); len(v) > 0 {
		raw = v
	} else if !h.IsGet() && !h.IsHead() && h.ContentLength() != 0 {
		ct := h.ContentType()
		if i := bytes.IndexByte(ct, ';'); i >= 0 {
			ct = ct[:i]
		}
		ct = bytes.TrimSpace(ct)
		switch {
		case bytes.EqualFold(ct, []byte("application/json")):
			body, perr := readBody(ctx, rt.cfg.MaxBodyBytes)
			if perr != nil {
				return id, perr
			}
			if !utf8.Valid(body) {
				return id, problem.New(fasthttp.StatusBadRequest, "body: not valid UTF-8")
			}
			v, err := p.ParseBytes(body)
			if err != nil {
				return id, problem.New(fasthttp.StatusBadRequest, "body: invalid JSON: "+err.Error())
			}
			if o, err := v.Object(); err == nil {
				for _, f := range idFields {
					if fv := o.Get(f); fv != nil {
						s, err := fv.StringBytes()
						if err != nil {
							return id, problem.New(fasthttp.StatusBadRequest, f+": must be a string")
						}
						raw = s
						break
					}
				}
			}
		case bytes.EqualFold(ct, []byte("application/x-www-form-urlencoded")):
			if _, perr := readBody(ctx, rt.cfg.MaxBodyBytes); perr != nil {
				return id, perr
			}
			args := ctx.PostArgs()
			for _, f := range idFields {
				if v := args.Peek(f); len(v) > 0 {
					raw = v
					break
				}
			}
		}
	}
	if raw != nil {
		if !utf8.Valid(raw) {
			return id, problem.New(fasthttp.StatusBadRequest, "identifier: not valid UTF-8")
		}
		email, err := homeindex.NormalizeEmail(string(raw))
		if err != nil {
			return id, problem.New(fasthttp.StatusBadRequest, "email: "+err.Error())
		}
		id.email, id.key, id.hasID = email, rt.cfg.Hasher.EmailKey(email), true
	}
	return id, nil
}

// resolution is where a request goes and why.
type resolution struct {
	region string
	source string
	rule   string // the residency rule, for a new identifier
}

// resolveID picks the home region of a request (see ../shared/design.md):
// a valid session token's home, else the identifier's entry in the index,
// else the residency policy for a new identifier, else the region the
// policy gives the client's country ("nearest").
func (rt *Router) resolveID(id *identity, client netip.Addr, now time.Time) (resolution, *problem.Problem) {
	if len(id.token) > 0 && rt.cfg.Sessions != nil {
		if c, err := rt.cfg.Sessions.Verify(string(id.token), now); err == nil {
			if _, ok := rt.pools[c.Home]; ok {
				return resolution{region: c.Home, source: srcSession}, nil
			}
		}
	}
	if id.hasID {
		if !rt.cfg.Index.CaughtUp() {
			// A miss now could be a known user the replica has not re-read yet.
			p := problem.New(fasthttp.StatusServiceUnavailable, "the home index replica is still loading")
			p.RetryAfter = 1
			return resolution{}, p
		}
		if e, ok := rt.cfg.Index.Lookup(id.key); ok {
			return resolution{region: e.Region, source: srcIndex}, nil
		}
	}
	r := resolution{}
	r.region, r.source, r.rule = rt.evaluate(id.email, client)
	if !id.hasID {
		r.source, r.rule = srcNearest, ""
	}
	return r, nil
}

// requestIDOK reports whether a client-supplied request id may be kept.
func requestIDOK(v []byte) bool {
	if len(v) == 0 || len(v) > 64 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// hopHeaders are removed from forwarded requests and responses (RFC 9110
// 7.6.1), besides those the Connection header names.
var hopHeaders = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Upgrade"}

// peer returns the TCP peer's address.
func peer(ctx *fasthttp.RequestCtx) netip.Addr {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// clientAddr is clientIP for fasthttp requests.
func (rt *Router) clientAddr(ctx *fasthttp.RequestCtx, p netip.Addr) netip.Addr {
	if len(rt.cfg.TrustedProxies) == 0 || !isTrusted(p, rt.cfg.TrustedProxies) {
		return p
	}
	var xff []string
	for _, v := range ctx.Request.Header.PeekAll("X-Forwarded-For") {
		xff = append(xff, string(v))
	}
	return clientIP(p.String(), xff, rt.cfg.TrustedProxies)
}

// stripped removes the hop-by-hop headers, those named by Connection, and
// every Domicile- header from h.
func stripRequest(h *fasthttp.RequestHeader) {
	if c := h.Peek("Connection"); len(c) > 0 {
		for f := range bytes.SplitSeq(c, []byte(",")) {
			if f = bytes.TrimSpace(f); len(f) > 0 && !bytes.EqualFold(f, []byte("keep-alive")) && !bytes.EqualFold(f, []byte("close")) {
				h.DelBytes(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	var own [][]byte
	for k := range h.All() {
		if len(k) >= 9 && bytes.EqualFold(k[:9], []byte("domicile-")) {
			own = append(own, append([]byte(nil), k...))
		}
	}
	for _, k := range own {
		h.DelBytes(k)
	}
}

func stripResponse(h *fasthttp.ResponseHeader) {
	if c := h.Peek("Connection"); len(c) > 0 {
		for f := range bytes.SplitSeq(c, []byte(",")) {
			if f = bytes.TrimSpace(f); len(f) > 0 && !bytes.EqualFold(f, []byte("keep-alive")) && !bytes.EqualFold(f, []byte("close")) {
				h.DelBytes(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// reqCounter makes fallback request ids unique within the process.
var reqCounter atomic.Uint64

// forward resolves the home region of a request and sends it there.
func (rt *Router) forward(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	p := rt.parsers.Get()
	id, perr := rt.identify(ctx, p)
	rt.parsers.Put(p)
	if perr != nil {
		rt.fail(ctx, perr)
		return
	}
	peerAddr := peer(ctx)
	client := rt.clientAddr(ctx, peerAddr)
	if rt.credential(ctx.Path()) {
		if perr := rt.limit(client, &id, start); perr != nil {
			rt.fail(ctx, perr)
			return
		}
	}
	res, perr := rt.resolveID(&id, client, start)
	if perr != nil {
		rt.fail(ctx, perr)
		return
	}
	pl := rt.pools[res.region]
	if pl == nil {
		// The index names a region this router does not know (a policy
		// that dropped it, or a newer router config elsewhere).
		rt.log.Error("resolved to unknown region", "key", id.key.String(), "region", res.region, "source", res.source)
		p := problem.New(fasthttp.StatusServiceUnavailable, "home region is not reachable from this router")
		p.RetryAfter = 5
		rt.fail(ctx, p)
		return
	}

	h := &ctx.Request.Header
	rid := h.Peek(HeaderRequestID)
	var ridBuf [40]byte
	if !requestIDOK(rid) {
		rid = strconv.AppendUint(append(ridBuf[:0], rt.instance...), reqCounter.Add(1), 36)
		h.SetBytesV(HeaderRequestID, rid)
	}
	ridStr := string(rid)
	if rt.log.Enabled(context.Background(), slog.LevelDebug) { // only the keyed hash of the identifier, never the identifier
		rt.log.Debug("route", "request_id", ridStr, "path", string(ctx.Path()), "key", id.key.String(), "region", res.region, "source", res.source)
	}
	stripRequest(h)
	// X-Forwarded-*: the router is the first proxy the regions trust.
	if xff := h.Peek("X-Forwarded-For"); len(xff) > 0 && client != peerAddr {
		h.Set("X-Forwarded-For", string(xff)+", "+peerAddr.String())
	} else {
		var b [48]byte
		h.SetBytesV("X-Forwarded-For", peerAddr.AppendTo(b[:0]))
	}
	h.SetBytesV("X-Forwarded-Host", h.Host())
	proto := "http"
	if ctx.IsTLS() {
		proto = "https"
	}
	h.Set("X-Forwarded-Proto", proto)
	// RFC 7239: the router's own view replaces whatever the client sent
	// (only the address it resolved, which honours trusted proxies).
	var fwd [128]byte
	f := append(fwd[:0], "for="...)
	if client.Is6() {
		f = append(append(append(f, `"[`...), client.String()...), `]"`...)
	} else {
		f = client.AppendTo(f)
	}
	f = append(append(f, ";proto="...), proto...)
	h.SetBytesV("Forwarded", f)
	h.Set(HeaderRouter, rt.cfg.Name)
	if res.rule != "" {
		h.Set(homeindex.HeaderHomeRule, res.rule)
	}
	// The signature covers the request target exactly as it is sent on
	// (path and query, not normalised), which is what the region sees.
	var sig [256]byte
	h.SetBytesV(routesig.Header, rt.signer.AppendHeader(sig[:0], string(ctx.Method()), string(h.RequestURI()), res.region, start))

	// Send it to a healthy node; another node only if no byte was sent,
	// or the request is idempotent and its body is in memory.
	retryable := idempotent(ctx.Method()) && !ctx.Request.IsBodyStream()
	var tried [4]*node
	triedN := tried[:0]
	for {
		n := pl.pick(triedN)
		if n == nil {
			p := problem.New(fasthttp.StatusServiceUnavailable, "region "+res.region+" has no healthy node")
			if len(triedN) > 0 {
				p = problem.New(fasthttp.StatusBadGateway, "region "+res.region+" did not answer")
			}
			p.RetryAfter = 1
			rt.fail(ctx, p)
			return
		}
		triedN = append(triedN, n)
		t0 := time.Now()
		err := n.client.Do(&ctx.Request, &ctx.Response)
		if err == nil {
			rt.upstream[res.region].Observe(time.Since(t0).Seconds())
			stripResponse(&ctx.Response.Header)
			rt.resolved(res.source, rt.routeLabel(ctx.Path()), pl).Inc()
			rt.requests(ctx.Response.StatusCode()).Inc()
			return
		}
		sent := !notSent(err)
		if !sent {
			n.observe(false, true, &rt.health, rt.log)
		}
		rt.log.Warn("forwarding failed", "request_id", ridStr, "region", res.region, "node", n.url, "err", err, "retry", !sent || retryable)
		ctx.Response.Reset()
		if sent && !retryable {
			p := problem.New(fasthttp.StatusBadGateway, "region "+res.region+" did not answer; the request may or may not have been processed")
			rt.fail(ctx, p)
			return
		}
	}
}
