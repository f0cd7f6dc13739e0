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
	"slices"
	"strconv"
	"sync"
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

// maxBufferedBody is the largest request or response body of known length
// that the router holds in memory instead of streaming it.
const maxBufferedBody = 64 << 10

// maxOwnBody bounds the bodies of the router's own routes (admin API,
// internal index API).
const maxOwnBody = 4 << 20

// ownRoute reports whether the router serves path itself (through echo)
// rather than forwarding it.
func ownRoute(path []byte) bool {
	switch string(path) {
	case "/healthz", "/readyz", "/metrics", pathDiscovery, pathJWKS, pathSessionKeys:
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
		// echo reads the body through net/http; bring it into memory
		// first (bounded) rather than letting the adaptor read a stream.
		if ctx.Request.IsBodyStream() {
			if _, perr := readBody(ctx, maxOwnBody); perr != nil {
				rt.fail(ctx, perr)
				return
			}
		}
		rt.echoFast(ctx)
		return
	}
	rt.forward(ctx)
}

// fail writes a problem document (an OAuth error on the endpoints routed
// by a token, whose clients expect one).
func (rt *Router) fail(ctx *fasthttp.RequestCtx, p *problem.Problem) {
	if k := oauthKindOf(ctx.Path()); k.byToken() {
		rt.failOAuth(ctx, k, oauthErrorOf(p))
		return
	}
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
	srcLink    = "link"
)

// identity is what a request tells about its user.
type identity struct {
	token []byte // session token, if any
	email string // normalised identifier, if any
	key   homeindex.Key
	hasID bool
	// hint is the home= query parameter of links the regions email
	// (verification, password reset): it names the region that issued the
	// link's token. It only picks where a request without a session or an
	// identifier goes; a region refuses anything it did not issue.
	hint []byte
	// form: the body was read and is a form (ctx.PostArgs may be used).
	form bool
	// sso: an authorization request with prompt=none, which goes to the
	// local region if the session is live.
	sso bool
	// idTokenHint is the id_token_hint of a logout request: its sub names
	// the home region when the session does not.
	idTokenHint []byte
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
	// A pooled scratch buffer: SetBody copies it into the request.
	bp := bodyBufs.Get().(*[]byte)
	buf := slices.Grow((*bp)[:0], max(n, 512))
	defer func() { *bp = buf[:0]; bodyBufs.Put(bp) }()
	lr := io.LimitedReader{R: ctx.RequestBodyStream(), N: int64(limit) + 1}
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

// Identifier fields. A request carries at most one of them, in any case.
var idFields = [...]string{"email", "identifier", "username", "login_hint"}

// isIDField reports whether a body field is an identifier field, ignoring
// case (as encoding/json matches struct fields).
func isIDField(k []byte) bool {
	for _, f := range idFields {
		if bytes.EqualFold(k, []byte(f)) {
			return true
		}
	}
	return false
}

// validPercent reports whether every '%' in a form body starts a valid
// escape (the router's form decoder is lenient; the region's is not).
func validPercent(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] == '%' {
			if i+2 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

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
	}
	id.hint = ctx.QueryArgs().Peek("home")
	if !h.IsGet() && !h.IsHead() && h.ContentLength() != 0 {
		ct := mediaType(h)
		var body []byte
		switch {
		case bytes.EqualFold(ct, []byte("application/json")):
			b, perr := readBody(ctx, rt.cfg.MaxBodyBytes)
			if perr != nil {
				return id, perr
			}
			if !utf8.Valid(b) {
				return id, problem.New(fasthttp.StatusBadRequest, "body: not valid UTF-8")
			}
			v, err := p.ParseBytes(b)
			if err != nil {
				return id, problem.New(fasthttp.StatusBadRequest, "body: invalid JSON: "+err.Error())
			}
			if o, err := v.Object(); err == nil {
				var perr *problem.Problem
				o.Visit(func(k []byte, fv *fastjson.Value) {
					if perr != nil || !isIDField(k) {
						return
					}
					s, err := fv.StringBytes()
					switch {
					case err != nil:
						perr = problem.New(fasthttp.StatusBadRequest, string(k)+": must be a string")
					case body != nil:
						// Two identifier fields (or one twice, or in two
						// cases): the region might read the other one.
						perr = problem.New(fasthttp.StatusBadRequest, "body: more than one identifier field")
					default:
						body = s
					}
				})
				if perr != nil {
					return id, perr
				}
			}
		case bytes.EqualFold(ct, []byte("application/x-www-form-urlencoded")):
			if perr := rt.readFormBody(ctx); perr != nil {
				return id, perr
			}
			id.form = true
			args := ctx.PostArgs()
			for k, v := range args.All() {
				if !isIDField(k) {
					continue
				}
				if body != nil {
					return id, problem.New(fasthttp.StatusBadRequest, "body: more than one identifier field")
				}
				body = v
				if body == nil {
					body = []byte{}
				}
			}
		}
		if body != nil {
			if raw != nil && !bytes.Equal(raw, body) {
				return id, problem.New(fasthttp.StatusBadRequest, "login_hint and the body name different identifiers")
			}
			raw = body
		}
	}
	if raw != nil {
		if !utf8.Valid(raw) || bytes.ContainsRune(raw, utf8.RuneError) || bytes.IndexByte(raw, '\\') >= 0 {
			// U+FFFD and backslashes: an invalid or unpaired escape that
			// another JSON decoder would read differently.
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

// mediaType is the media type of a request's body, without parameters.
func mediaType(h *fasthttp.RequestHeader) []byte {
	ct := h.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.TrimSpace(ct)
}

// readForm reads a form body (up to MaxBodyBytes), as identify does, for
// the endpoints routed by a token: they carry no identifier.
func (rt *Router) readForm(ctx *fasthttp.RequestCtx) (identity, *problem.Problem) {
	var id identity
	h := &ctx.Request.Header
	if h.IsGet() || h.IsHead() || h.ContentLength() == 0 || !bytes.EqualFold(mediaType(h), []byte("application/x-www-form-urlencoded")) {
		return id, nil
	}
	if perr := rt.readFormBody(ctx); perr != nil {
		return id, perr
	}
	id.form = true
	return id, nil
}

// readFormBody reads a form body (up to MaxBodyBytes) and checks its
// percent-encoding.
func (rt *Router) readFormBody(ctx *fasthttp.RequestCtx) *problem.Problem {
	b, perr := readBody(ctx, rt.cfg.MaxBodyBytes)
	if perr != nil {
		return perr
	}
	if !validPercent(b) {
		return problem.New(fasthttp.StatusBadRequest, "body: invalid percent-encoding")
	}
	return nil
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
				if id.sso && rt.cfg.LocalRegion != "" && c.Home != rt.cfg.LocalRegion {
					// SSO of a travelling user: answered from the
					// session alone, where the user is.
					return resolution{region: rt.cfg.LocalRegion, source: srcLocal}, nil
				}
				return resolution{region: c.Home, source: srcSession}, nil
			}
		}
	}
	if len(id.idTokenHint) > 0 {
		if pl := rt.bySub(id.idTokenHint); pl != nil {
			return resolution{region: pl.name, source: srcToken}, nil
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
	if !id.hasID && len(id.hint) > 0 {
		if pl, ok := rt.pools[string(id.hint)]; ok {
			return resolution{region: pl.name, source: srcLink}, nil
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

// The headers the router sets, in canonical form (SetCanonical skips
// normalising the name on every request).
var (
	hdrRequestID       = []byte(HeaderRequestID)
	hdrXForwardedFor   = []byte("X-Forwarded-For")
	hdrXForwardedHost  = []byte("X-Forwarded-Host")
	hdrXForwardedProto = []byte("X-Forwarded-Proto")
	hdrForwarded       = []byte("Forwarded")
	hdrRouter          = []byte(HeaderRouter)
	hdrRoute           = []byte(routesig.Header)
)

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

// stripRequest removes the hop-by-hop headers, those named by Connection,
// and every Domicile- header from h. It reports false if a header name is
// not a valid token (RFC 9110 5.1), which the request is refused for. It
// looks at every header once, and deletes only those present (each
// deletion looks at every header again).
func stripRequest(h *fasthttp.RequestHeader) bool {
	delConnectionNamed(h)
	var own [][]byte
	var hop uint16
	for k := range h.All() {
		if !validToken(k) {
			return false
		}
		if len(k) >= 9 && bytes.EqualFold(k[:9], []byte("domicile-")) {
			own = append(own, append([]byte(nil), k...))
		}
		hop |= hopBit(k)
	}
	delHop(h, hop)
	for _, k := range own {
		h.DelBytes(k)
	}
	return true
}

// validToken reports whether b is an RFC 9110 token.
func validToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-32] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// stripResponse removes the hop-by-hop headers and those named by
// Connection from a response.
func stripResponse(h *fasthttp.ResponseHeader) {
	delConnectionNamed(h)
	var hop uint16
	for k := range h.All() {
		hop |= hopBit(k)
	}
	delHop(h, hop)
}

// hopHeader is a request or response header.
type hopHeader interface {
	Peek(key string) []byte
	Del(key string)
	DelBytes(key []byte)
}

// delConnectionNamed removes the headers that Connection names.
func delConnectionNamed(h hopHeader) {
	if c := h.Peek("Connection"); len(c) > 0 {
		for f := range bytes.SplitSeq(c, []byte(",")) {
			if f = bytes.TrimSpace(f); len(f) > 0 && !bytes.EqualFold(f, []byte("keep-alive")) && !bytes.EqualFold(f, []byte("close")) {
				h.DelBytes(f)
			}
		}
	}
}

// hopBit returns 1<<i if k is hopHeaders[i] (in any case), else 0.
func hopBit(k []byte) uint16 {
	if len(k) >= len(hopLens) || !hopLens[len(k)] {
		return 0 // no hop-by-hop header has this length: the common case
	}
	for i, name := range hopNames {
		if len(k) == len(name) && bytes.EqualFold(k, name) {
			return 1 << i
		}
	}
	return 0
}

// hopNames are the hopHeaders names as bytes, and hopLens marks their
// lengths.
var hopNames, hopLens = func() (n [len(hopHeaders)][]byte, l [32]bool) {
	for i, h := range hopHeaders {
		n[i], l[len(h)] = []byte(h), true
	}
	return n, l
}()

// delHop deletes Connection (always: it also clears fasthttp's
// connection-close flag, so the client's "close" is not sent on) and the
// other hop-by-hop headers whose bits are set in hop.
func delHop(h hopHeader, hop uint16) {
	h.Del("Connection")
	for i, k := range hopHeaders[1:] {
		if hop&(1<<(i+1)) != 0 {
			h.Del(k)
		}
	}
}

// reqCounter makes fallback request ids unique within the process.
var reqCounter atomic.Uint64

// forward resolves the home region of a request and sends it there.
func (rt *Router) forward(ctx *fasthttp.RequestCtx) {
	start := ctx.Time() // read by fasthttp when the request arrived
	path := ctx.Path()
	rte := rt.routeOf(path)
	kind := rte.kind
	var (
		id   identity
		perr *problem.Problem
	)
	if kind.byToken() {
		// Routed by a token: no identifier to look for.
		id, perr = rt.readForm(ctx)
	} else {
		p := rt.parsers.Get()
		id, perr = rt.identify(ctx, p)
		rt.parsers.Put(p)
	}
	if perr != nil {
		rt.fail(ctx, perr)
		return
	}
	peerAddr := peer(ctx)
	client := rt.clientAddr(ctx, peerAddr)
	if rte.credential {
		if perr := rt.limit(client, &id, start); perr != nil {
			rt.fail(ctx, perr)
			return
		}
	}
	var res resolution
	switch {
	case kind.byToken():
		var oerr *oauthError
		if res, oerr = rt.resolveByToken(ctx, kind, &id, client); oerr != nil {
			rt.failOAuth(ctx, kind, oerr)
			return
		}
	default:
		switch kind {
		case oauthAuthorize:
			id.sso = rt.cfg.LocalRegion != "" && len(id.token) > 0 && promptNone(ctx, id.form)
		case oauthLogout:
			id.idTokenHint = idTokenHint(ctx, id.form)
		}
		if res, perr = rt.resolveID(&id, client, start); perr != nil {
			rt.fail(ctx, perr)
			return
		}
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
		h.SetCanonical(hdrRequestID, rid)
	}
	// A copy for the logs (rid points into the header, which changes
	// below), made a string only if something is logged.
	var ridKeep [64]byte
	ridCopy := append(ridKeep[:0], rid...)
	if rt.log.Enabled(context.Background(), slog.LevelDebug) { // only the keyed hash of the identifier, never the identifier
		rt.log.Debug("route", "request_id", string(ridCopy), "path", string(path), "key", id.key.String(), "region", res.region, "source", res.source)
	}
	if !stripRequest(h) {
		rt.fail(ctx, problem.New(fasthttp.StatusBadRequest, "a header name is not a valid token"))
		return
	}
	// X-Forwarded-*: the router is the first proxy the regions trust.
	if xff := h.Peek("X-Forwarded-For"); len(xff) > 0 && client != peerAddr {
		h.Set("X-Forwarded-For", string(xff)+", "+peerAddr.String())
	} else {
		var b [48]byte
		h.SetCanonical(hdrXForwardedFor, peerAddr.AppendTo(b[:0]))
	}
	h.SetCanonical(hdrXForwardedHost, h.Host())
	proto := "http"
	if ctx.IsTLS() {
		proto = "https"
	}
	h.SetCanonical(hdrXForwardedProto, []byte(proto))
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
	h.SetCanonical(hdrForwarded, f)
	h.SetCanonical(hdrRouter, rt.name)
	if res.rule != "" {
		h.Set(homeindex.HeaderHomeRule, res.rule)
	}
	// The signature covers the request target exactly as it is sent on
	// (path and query, not normalised), which is what the region sees.
	var sig [256]byte
	// It also carries the identifier's hash, so the region can check that
	// it reads the same identifier from the request as the router did.
	var ident *[routesig.IdentLen]byte
	if id.hasID {
		ident = (*[routesig.IdentLen]byte)(&id.key)
	}
	h.SetCanonical(hdrRoute, rt.signer.AppendHeaderFor(sig[:0], string(ctx.Method()), string(h.RequestURI()), res.region, ident, start))

	// Send it to a healthy node; another node only if no byte was sent,
	// or the request is idempotent and its body is in memory.
	if ctx.Request.IsBodyStream() {
		// A small body of known length is read into memory: it is sent
		// on in one write, and an idempotent request can be retried.
		if n := ctx.Request.Header.ContentLength(); n >= 0 && n <= maxBufferedBody {
			if _, perr := readBody(ctx, maxBufferedBody); perr != nil {
				rt.fail(ctx, perr)
				return
			}
		}
	}
	retryable := idempotent(ctx.Method()) && !ctx.Request.IsBodyStream()
	var body *trackedBody
	if ctx.Request.IsBodyStream() {
		// Tell the client's broken body (a bad chunk, a short body) from
		// the region's failure.
		body = &trackedBody{r: ctx.RequestBodyStream(), want: int64(ctx.Request.Header.ContentLength())}
		ctx.Request.SetBodyStream(body, ctx.Request.Header.ContentLength())
	}
	var tried [4]*node
	triedN := tried[:0]
	for {
		nd := pl.pick(triedN)
		if nd == nil {
			p := problem.New(fasthttp.StatusServiceUnavailable, "region "+res.region+" has no healthy node")
			if len(triedN) > 0 {
				p = problem.New(fasthttp.StatusBadGateway, "region "+res.region+" did not answer")
			}
			p.RetryAfter = 1
			rt.fail(ctx, p)
			return
		}
		triedN = append(triedN, nd)
		err := nd.client.Do(&ctx.Request, &ctx.Response)
		if err == nil {
			stripResponse(&ctx.Response.Header)
			rt.resolved(res.source, rte.label, pl).Inc()
			rt.requests(ctx.Response.StatusCode()).Inc()
			return
		}
		if bad := (*badResponse)(nil); errors.As(err, &bad) {
			rt.log.Warn("bad response from region", "request_id", string(ridCopy), "region", res.region, "node", nd.url, "err", err)
			ctx.Response.Reset()
			rt.fail(ctx, problem.New(fasthttp.StatusBadGateway, "region "+res.region+" "+bad.what))
			return
		}
		if body != nil && body.err != nil {
			ctx.Response.Reset()
			ctx.SetConnectionClose()
			rt.fail(ctx, problem.New(fasthttp.StatusBadRequest, "body: could not be read: "+body.err.Error()))
			return
		}
		sent := !notSent(err)
		if refused(err) {
			nd.observe(false, true, &rt.health, rt.log)
		}
		rt.log.Warn("forwarding failed", "request_id", string(ridCopy), "region", res.region, "node", nd.url, "err", err, "retry", !sent || retryable)
		ctx.Response.Reset()
		if sent && !retryable {
			p := problem.New(fasthttp.StatusBadGateway, "region "+res.region+" did not answer; the request may or may not have been processed")
			rt.fail(ctx, p)
			return
		}
	}
}

// trackedBody records the error of reading the client's request body,
// including a body that ends before its Content-Length (want, or -1).
type trackedBody struct {
	r    io.Reader
	want int64
	got  int64
	err  error
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.got += int64(n)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		if b.want >= 0 && b.got < b.want {
			b.err = io.ErrUnexpectedEOF
			return n, b.err
		}
	default:
		b.err = err
	}
	return n, err
}

// bodyBufs are scratch buffers for readBody.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
