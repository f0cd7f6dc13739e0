package router

import (
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkForward is the whole forwarding path of one request (a login
// with its identifier in a JSON body, resolved by the policy) against an
// upstream on loopback, for allocations and CPU; bench/router measures
// throughput and latency against nginx.
func BenchmarkForward(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"ok":true}`)
	}}
	go up.Serve(ln)
	defer up.Shutdown()
	u := "http://" + ln.Addr().String()
	rt := newTestRouter(b, map[string][]string{"eu-west": {u}, "us-east": {u}, "ap-southeast": {u}}, RateLimits{})
	body := `{"email":"ana@acme.de","password":"correct horse battery"}`
	remote := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.7:1234"))
	var req fasthttp.Request
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		req.Reset()
		req.Header.SetMethod("POST")
		req.SetRequestURI("/profile")
		req.Header.SetHost("id.example.com")
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
		req.Header.SetContentLength(len(body))
		ctx.Init(&req, remote, nil)
		rt.serveFast(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatal(ctx.Response.StatusCode(), string(ctx.Response.Body()))
		}
		if s := ctx.Response.BodyStream(); s != nil {
			io.Copy(io.Discard, s) // as the server does when it writes the response
			ctx.Response.CloseBodyStream()
		}
	}
}
