package wrk

import (
	"testing"
	"time"
)

const wrkSample = `Running 3s test @ http://127.0.0.1:41677
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms    2.03ms  41.62ms   94.22%
    Req/Sec    27.31k     3.05k   33.41k    71.67%
  Latency Distribution
     50%  798.00us
     75%    1.12ms
     90%    2.01ms
     99%    1.20s
  163122 requests in 3.00s, 17.89MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 25
Requests/sec:  54327.81
Transfer/sec:      5.96MB
`

func TestParse(t *testing.T) {
	r, err := Parse(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Requests: 163122, RPS: 54327.81, P50: 798 * time.Microsecond, P75: 1120 * time.Microsecond,
		P90: 2010 * time.Microsecond, P99: 1200 * time.Millisecond, Non2xx: 25, SocketErrors: SocketErrors{Read: 3, Timeout: 7}}
	r.Output = ""
	if r.Requests != want.Requests || r.RPS != want.RPS || r.P50 != want.P50 || r.P75 != want.P75 ||
		r.P90 != want.P90 || r.P99 != want.P99 || r.Non2xx != want.Non2xx || r.SocketErrors != want.SocketErrors {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if _, err := Parse("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Fatal("parsed a failed run")
	}
}
