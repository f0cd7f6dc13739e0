package router

import (
	"bufio"
	"errors"
	"io"
	"net/http/httputil"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// regionTransport is how the router sends a request to a region node. It is
// fasthttp's own round trip (DefaultTransport: deadlines, the connection's
// age limit, the write, the response head with interim responses skipped)
// with one change: a response body of known length up to maxBufferedBody
// (nearly every response of an identity API) is read into the response at
// once, and only a longer body, or one of unknown length, is streamed to the
// client as it arrives. fasthttp streams either every response of a client
// or none; streaming every one cost four allocations, a pooled stream and a
// copy per forwarded request.
//
// It also observes each request's latency (from sending it to the response
// head) and reads the clock once for that and for the deadlines.
type regionTransport struct {
	latency prometheus.Observer
}

// maxInterim bounds the 1xx responses skipped before the final one.
const maxInterim = 16

// badResponse is a response the router does not pass on: the region
// answered (and may have acted on the request), but not in a way the client
// can be given.
type badResponse struct {
	what string // "sent ...", for the client's problem document
	err  error
}

func (e *badResponse) Error() string { return e.what + ": " + e.err.Error() }
func (e *badResponse) Unwrap() error { return e.err }

var errUnaskedUpgrade = errors.New("101 Switching Protocols to a request without Upgrade")

func (t regionTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	cc, err := hc.AcquireConn(0, req.ConnectionClose())
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	start := time.Now()
	if hc.WriteTimeout > 0 {
		if err := conn.SetWriteDeadline(start.Add(hc.WriteTimeout)); err != nil {
			hc.CloseConn(cc)
			return true, err
		}
	}
	aged := hc.MaxConnDuration > 0 && start.Sub(cc.CreatedTime()) > hc.MaxConnDuration && !req.ConnectionClose()
	if aged {
		req.SetConnectionClose()
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if aged {
		req.Header.ResetConnectionClose()
	}
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		return true, timeoutErr(err)
	}
	if hc.ReadTimeout > 0 {
		// A request held in memory was written at once; a streamed body
		// may have taken long, and the wait for the response starts now.
		rd := start
		if req.IsBodyStream() {
			rd = time.Now()
		}
		if err := conn.SetReadDeadline(rd.Add(hc.ReadTimeout)); err != nil {
			hc.CloseConn(cc)
			return true, err
		}
	}
	br := hc.AcquireReader(conn)
	if err := readHead(resp, br); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return true, timeoutErr(err)
	}
	if t.latency != nil {
		t.latency.Observe(time.Since(start).Seconds())
	}
	reusable := !aged && !req.ConnectionClose() && !resp.ConnectionClose()
	status := resp.StatusCode()
	n := resp.Header.ContentLength()
	switch {
	case status == fasthttp.StatusSwitchingProtocols:
		// The router asks for no upgrade (Upgrade is hop-by-hop and
		// removed), and does not tunnel one: what follows on this
		// connection is not HTTP/1.1.
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		resp.Reset()
		return false, &badResponse{what: "switched protocols unasked", err: errUnaskedUpgrade}
	case req.Header.IsHead() || status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified:
		resp.SkipBody = true // no body follows the head
	case n >= 0 && n <= maxBufferedBody:
		if err := resp.ReadBody(br, maxBufferedBody); err != nil {
			hc.ReleaseReader(br)
			hc.CloseConn(cc)
			return false, &badResponse{what: "sent an incomplete response", err: timeoutErr(err)}
		}
	default:
		body := &regionBody{br: br, reusable: reusable, release: func(reuse bool) {
			hc.ReleaseReader(br)
			if reuse {
				hc.ReleaseConn(cc)
			} else {
				hc.CloseConn(cc)
			}
		}}
		switch n {
		case -1: // chunked
			body.r, body.chunked = httputil.NewChunkedReader(br), true
		case -2: // until the region closes the connection
			body.r, body.reusable = br, false
		default:
			body.limit = io.LimitedReader{R: br, N: int64(n)}
			body.r = &body.limit
		}
		resp.SetBodyStream(body, n)
		return false, nil
	}
	hc.ReleaseReader(br)
	if reusable {
		hc.ReleaseConn(cc)
	} else {
		hc.CloseConn(cc)
	}
	return false, nil
}

// readHead reads a response head, skipping interim (1xx) responses other
// than 101.
func readHead(resp *fasthttp.Response, br *bufio.Reader) error {
	for range maxInterim {
		if err := resp.Header.Read(br); err != nil {
			return err
		}
		if s := resp.StatusCode(); s < 100 || s > 199 || s == fasthttp.StatusSwitchingProtocols {
			return nil
		}
	}
	return errors.New("too many interim responses")
}

func timeoutErr(err error) error {
	var t interface{ Timeout() bool }
	if errors.As(err, &t) && t.Timeout() {
		return fasthttp.ErrTimeout
	}
	return err
}

// regionBody streams a region's response body to the client and gives the
// connection back (or closes it) when the client's response is done.
type regionBody struct {
	release  func(reuse bool) // gives back the reader and the connection
	br       *bufio.Reader
	r        io.Reader
	limit    io.LimitedReader // a body of known length
	chunked  bool
	reusable bool  // the connection may serve another request once the body is read
	done     bool  // the whole body was read
	err      error // the first read error, io.EOF at the end
	closed   bool
}

// maxTrailer bounds the trailer section of a chunked body, which is read
// and dropped (the router forwards no trailers).
const maxTrailer = 16 << 10

func (b *regionBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		switch {
		case b.chunked:
			if terr := skipTrailer(b.br); terr != nil {
				err = terr
			}
		case b.r == &b.limit && b.limit.N > 0:
			err = io.ErrUnexpectedEOF
		}
		b.done = errors.Is(err, io.EOF)
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// skipTrailer reads the trailer section that ends a chunked body.
func skipTrailer(br *bufio.Reader) error {
	read := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if read += len(line); read > maxTrailer {
			return errors.New("chunked body: trailer too large")
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			return nil // the empty line that ends the message
		}
	}
}

// Close gives the connection back if the body was read to its end, and
// closes it otherwise (the client went away, or the region's body broke).
func (b *regionBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.release(b.done && b.reusable)
	return nil
}
