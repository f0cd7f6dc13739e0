package router

import (
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"untrusted peer, no header", "198.51.100.7:5555", nil, "198.51.100.7"},
		{"untrusted peer, forged header ignored", "198.51.100.7:5555", []string{"203.0.113.9"}, "198.51.100.7"},
		{"trusted peer uses header", "127.0.0.1:5555", []string{"203.0.113.9"}, "203.0.113.9"},
		{"rightmost untrusted wins", "127.0.0.1:5555", []string{"192.0.2.1, 203.0.113.9"}, "203.0.113.9"},
		{"trusted hops skipped", "127.0.0.1:5555", []string{"203.0.113.9, 10.1.2.3"}, "203.0.113.9"},
		{"several header lines", "127.0.0.1:5555", []string{"192.0.2.1", "203.0.113.9, 10.1.2.3"}, "203.0.113.9"},
		{"garbage stops the walk", "127.0.0.1:5555", []string{"203.0.113.9, not-an-ip"}, "127.0.0.1"},
		{"trusted peer without header", "127.0.0.1:5555", nil, "127.0.0.1"},
		{"ipv6 peer", "[2001:db8::1]:443", nil, "2001:db8::1"},
		{"v4-mapped peer is unmapped", "[::ffff:127.0.0.1]:1", []string{"203.0.113.9"}, "203.0.113.9"},
		{"unparsable remote", "nonsense", nil, "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clientIP(tt.remote, tt.xff, trusted).String()
			if got != tt.want {
				t.Fatalf("clientIP(%q, %q) = %s, want %s", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}
