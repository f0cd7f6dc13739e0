package router

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/session"
)

// Routing of the OAuth 2.0 / OpenID Connect endpoints.
//
// Tokens name the region that can act on them: opaque tokens (codes,
// refresh tokens) are "<region>.<base64url>"; access tokens are JWTs
// whose header kid is "<region>-<n>" (the signing region) and whose
// payload sub is "<home region>.<user id>". The router reads them only to
// route; the region verifies them.
//
//   - POST /oauth2/token goes to the region of its code or refresh_token;
//     a client_credentials grant (no user) to the local region;
//   - POST /oauth2/introspect and /oauth2/revoke to the region of the
//     token: its prefix, or its JWT header's kid;
//   - GET|POST /userinfo to the region of the access token's sub (the
//     user's home: the answer is personal data);
//   - GET /oauth2/authorize with prompt=none and a live session to the
//     local region (SSO needs only the session token, not the user's
//     data); otherwise as any request (session → home, identifier, ...);
//   - /oauth2/logout as any request, and by the sub of its id_token_hint
//     when there is no live session.
//
// The router refuses what it cannot route (400 or, for /userinfo, 401,
// with an RFC 6749 / RFC 6750 error body) rather than guess.

// Resolution sources of the OAuth endpoints.
const (
	srcToken = "token" // a token's region prefix, kid or sub
	srcLocal = "local" // the router's own region (SSO, client credentials)
)

// oauthKind is an OAuth endpoint the router treats apart.
type oauthKind uint8

const (
	notOAuth oauthKind = iota
	oauthAuthorize
	oauthLogout
	// The endpoints from here on are routed by a token, and the router's
	// own errors on them are OAuth errors.
	oauthToken
	oauthIntrospect
	oauthRevoke
	oauthUserinfo
)

func oauthKindOf(path []byte) oauthKind {
	switch string(path) {
	case pathAuthorize:
		return oauthAuthorize
	case pathLogout:
		return oauthLogout
	case pathToken:
		return oauthToken
	case pathIntrospect:
		return oauthIntrospect
	case pathRevoke:
		return oauthRevoke
	case pathUserinfo:
		return oauthUserinfo
	}
	return notOAuth
}

// byToken reports whether the endpoint is routed by a token.
func (k oauthKind) byToken() bool { return k >= oauthToken }

// oauthError is an error response of the OAuth endpoints (RFC 6749 5.2,
// RFC 6750 3.1).
type oauthError struct {
	status     int
	code       string // "error"; empty for a /userinfo request without a token
	desc       string // "error_description": ASCII, no quote or backslash
	retryAfter int
}

func invalidRequest(desc string) *oauthError {
	return &oauthError{status: fasthttp.StatusBadRequest, code: "invalid_request", desc: desc}
}

// oauthErrorOf is the OAuth form of one of the router's problems.
func oauthErrorOf(p *problem.Problem) *oauthError {
	e := &oauthError{status: p.Status, code: "invalid_request", desc: p.Detail, retryAfter: p.RetryAfter}
	switch {
	case p.Status == fasthttp.StatusTooManyRequests || p.Status == fasthttp.StatusServiceUnavailable:
		e.code = "temporarily_unavailable"
	case p.Status >= 500:
		e.code = "server_error"
	}
	return e
}

type oauthErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// failOAuth writes an OAuth error.
func (rt *Router) failOAuth(ctx *fasthttp.RequestCtx, kind oauthKind, e *oauthError) {
	if ctx.Request.Header.ContentLength() != 0 && !ctx.Request.Header.IsGet() {
		ctx.SetConnectionClose() // as fail: the body may not have been read
	}
	h := &ctx.Response.Header
	h.SetContentType("application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if kind == oauthUserinfo && (e.status == fasthttp.StatusUnauthorized || e.status == fasthttp.StatusBadRequest) {
		v := "Bearer"
		if e.code != "" {
			v += ` error="` + e.code + `"`
			if e.desc != "" {
				v += `, error_description="` + e.desc + `"`
			}
		}
		h.Set("WWW-Authenticate", v)
	}
	code := e.code
	if code == "" {
		code = "invalid_request"
	}
	body, _ := json.Marshal(oauthErrorBody{Error: code, Description: e.desc})
	ctx.SetStatusCode(e.status)
	ctx.SetBody(body)
	rt.requests(e.status).Inc()
}

// resolveByToken routes a request to an endpoint routed by a token.
func (rt *Router) resolveByToken(ctx *fasthttp.RequestCtx, kind oauthKind, id *identity, client netip.Addr) (resolution, *oauthError) {
	if kind == oauthUserinfo {
		return rt.routeUserinfo(ctx, id)
	}
	if !ctx.IsPost() {
		return resolution{}, invalidRequest("this endpoint takes a POST request")
	}
	if !id.form {
		return resolution{}, invalidRequest("this endpoint takes an application/x-www-form-urlencoded body")
	}
	if kind == oauthToken {
		return rt.routeTokenRequest(ctx, client)
	}
	// Introspection and revocation: by the token.
	q := ctx.QueryArgs()
	if q.Has("token") {
		return resolution{}, invalidRequest("token: send it in the request body, not the query")
	}
	tok, n := formValue(ctx.PostArgs(), "token")
	switch {
	case n == 0 || len(tok) == 0:
		return resolution{}, invalidRequest("token: missing")
	case n > 1:
		return resolution{}, invalidRequest("token: repeated")
	}
	var pl *pool
	var oe *oauthError
	if bytes.Count(tok, []byte(".")) == 2 {
		pl, oe = rt.byKID(tok, "token")
	} else {
		pl, oe = rt.byPrefix(tok, "token", "invalid_token")
	}
	if oe != nil {
		return resolution{}, oe
	}
	return resolution{region: pl.name, source: srcToken}, nil
}

// routeTokenRequest routes POST /oauth2/token by its grant.
func (rt *Router) routeTokenRequest(ctx *fasthttp.RequestCtx, client netip.Addr) (resolution, *oauthError) {
	q := ctx.QueryArgs()
	if q.Has("grant_type") || q.Has("code") || q.Has("refresh_token") {
		return resolution{}, invalidRequest("grant_type, code and refresh_token go in the request body, not the query")
	}
	var grant, code, refresh []byte
	var nGrant, nCode, nRefresh int
	for k, v := range ctx.PostArgs().All() {
		switch string(k) {
		case "grant_type":
			grant, nGrant = v, nGrant+1
		case "code":
			code, nCode = v, nCode+1
		case "refresh_token":
			refresh, nRefresh = v, nRefresh+1
		}
	}
	switch {
	case nGrant > 1:
		return resolution{}, invalidRequest("grant_type: repeated")
	case nCode > 1:
		return resolution{}, invalidRequest("code: repeated")
	case nRefresh > 1:
		return resolution{}, invalidRequest("refresh_token: repeated")
	}
	var pl *pool
	var oe *oauthError
	switch string(grant) {
	case "":
		return resolution{}, invalidRequest("grant_type: missing")
	case "authorization_code":
		pl, oe = rt.byPrefix(code, "code", "invalid_grant")
	case "refresh_token":
		pl, oe = rt.byPrefix(refresh, "refresh_token", "invalid_grant")
	case "client_credentials":
		return rt.local(client), nil
	default:
		return resolution{}, &oauthError{status: fasthttp.StatusBadRequest, code: "unsupported_grant_type", desc: "grant_type: not supported"}
	}
	if oe != nil {
		return resolution{}, oe
	}
	return resolution{region: pl.name, source: srcToken}, nil
}

// local is where an identity-only request goes: the local region, or
// without one the region the policy gives the client's address.
func (rt *Router) local(client netip.Addr) resolution {
	if rt.cfg.LocalRegion != "" {
		return resolution{region: rt.cfg.LocalRegion, source: srcLocal}
	}
	r := resolution{source: srcNearest}
	r.region, _, _ = rt.evaluate("", client)
	return r
}

// byPrefix is the region of an opaque token "<region>.<base64url>".
// unknown is the error code for a well-formed token of a region the router
// does not know.
func (rt *Router) byPrefix(tok []byte, field, unknown string) (*pool, *oauthError) {
	if len(tok) == 0 {
		return nil, invalidRequest(field + ": missing")
	}
	i := bytes.IndexByte(tok, '.')
	if i <= 0 || i == len(tok)-1 {
		return nil, invalidRequest(field + ": malformed")
	}
	if pl := rt.pools[string(tok[:i])]; pl != nil {
		return pl, nil
	}
	return nil, &oauthError{status: fasthttp.StatusBadRequest, code: unknown, desc: field + ": not issued by a known region"}
}

// maxJWTPart bounds the JWT parts the router decodes to route.
const maxJWTPart = 8 << 10

// decodeJWTPart decodes part i (0: header, 1: payload) of a compact JWS into
// buf.
func decodeJWTPart(tok []byte, i int, buf []byte) ([]byte, bool) {
	parts := bytes.SplitN(tok, []byte("."), 4)
	if len(parts) != 3 || len(parts[i]) == 0 || len(parts[i]) > maxJWTPart {
		return nil, false
	}
	out, err := base64.RawURLEncoding.AppendDecode(buf[:0], parts[i])
	return out, err == nil
}

// jwtString reads a string member of a JWT part.
func (rt *Router) jwtString(tok []byte, part int, member string) (string, bool) {
	var buf [1024]byte
	b, ok := decodeJWTPart(tok, part, buf[:])
	if !ok {
		return "", false
	}
	p := rt.parsers.Get()
	defer rt.parsers.Put(p)
	v, err := p.ParseBytes(b)
	if err != nil || v.Type() != fastjson.TypeObject {
		return "", false
	}
	m := v.Get(member)
	if m == nil || m.Type() != fastjson.TypeString {
		return "", false
	}
	s, _ := m.StringBytes()
	return string(s), true
}

// byKID is the region of a JWT by the kid of its header (the region that
// signed it).
func (rt *Router) byKID(tok []byte, field string) (*pool, *oauthError) {
	kid, ok := rt.jwtString(tok, 0, "kid")
	if !ok {
		return nil, invalidRequest(field + ": malformed")
	}
	region, err := session.KIDRegion(kid)
	if err != nil {
		return nil, invalidRequest(field + ": malformed")
	}
	if pl := rt.pools[region]; pl != nil {
		return pl, nil
	}
	return nil, &oauthError{status: fasthttp.StatusBadRequest, code: "invalid_token", desc: field + ": not issued by a known region"}
}

// bySub is the region of a JWT whose sub is "<home region>.<user id>", or
// nil.
func (rt *Router) bySub(tok []byte) *pool {
	sub, ok := rt.jwtString(tok, 1, "sub")
	if !ok {
		return nil
	}
	i := strings.IndexByte(sub, '.')
	if i <= 0 || i == len(sub)-1 {
		return nil
	}
	return rt.pools[sub[:i]]
}

// routeUserinfo routes /userinfo by the access token's sub: the user's
// home region. The token may come in the Authorization header, the form
// body or the query (RFC 6750 2), but in only one of them.
func (rt *Router) routeUserinfo(ctx *fasthttp.RequestCtx, id *identity) (resolution, *oauthError) {
	if !ctx.IsGet() && !ctx.IsPost() {
		return resolution{}, invalidRequest("userinfo takes GET or POST")
	}
	var tok []byte
	n := 0
	if a := ctx.Request.Header.Peek("Authorization"); len(a) > 0 {
		if len(a) > 7 && bytes.EqualFold(a[:7], []byte("bearer ")) {
			tok, n = a[7:], n+1
		}
	}
	if id.form {
		v, k := formValue(ctx.PostArgs(), "access_token")
		if k > 0 {
			tok, n = v, n+k
		}
	}
	if v, k := formValue(ctx.QueryArgs(), "access_token"); k > 0 {
		tok, n = v, n+k
	}
	switch {
	case n == 0:
		return resolution{}, &oauthError{status: fasthttp.StatusUnauthorized, desc: "no access token"}
	case n > 1:
		return resolution{}, invalidRequest("more than one access token")
	}
	pl := rt.bySub(tok)
	if pl == nil {
		return resolution{}, &oauthError{status: fasthttp.StatusUnauthorized, code: "invalid_token", desc: "the access token is malformed or names no known region"}
	}
	return resolution{region: pl.name, source: srcToken}, nil
}

// formValue returns the value of a parameter and how many times it occurs.
func formValue(args *fasthttp.Args, name string) (v []byte, n int) {
	for k, val := range args.All() {
		if string(k) == name {
			v, n = val, n+1
		}
	}
	return v, n
}

// promptNone reports whether an authorization request asks for prompt=none
// (and nothing else), in its query or its form body; a request with more
// than one prompt parameter is not taken as one.
func promptNone(ctx *fasthttp.RequestCtx, form bool) bool {
	v, n := formValue(ctx.QueryArgs(), "prompt")
	if form {
		bv, bn := formValue(ctx.PostArgs(), "prompt")
		if bn > 0 {
			v, n = bv, n+bn
		}
	}
	return n == 1 && string(v) == "none"
}

// idTokenHint returns the id_token_hint of a logout request.
func idTokenHint(ctx *fasthttp.RequestCtx, form bool) []byte {
	v, n := formValue(ctx.QueryArgs(), "id_token_hint")
	if form {
		bv, bn := formValue(ctx.PostArgs(), "id_token_hint")
		if bn > 0 {
			v, n = bv, n+bn
		}
	}
	if n != 1 {
		return nil
	}
	return v
}
