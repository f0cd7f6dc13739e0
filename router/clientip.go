package router

import (
	"net"
	"net/netip"
	"strings"
)

// clientIP returns the address of the client: the TCP peer, unless the
// peer is a trusted proxy, in which case X-Forwarded-For is walked from
// the right, skipping trusted hops, and the first untrusted address wins.
// A forged X-Forwarded-For from an untrusted peer is ignored.
func clientIP(remoteAddr string, xff []string, trusted []netip.Prefix) netip.Addr {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	if !isTrusted(peer, trusted) {
		return peer
	}
	addr := peer
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return addr // stop at garbage: what is left of it is not trustworthy
			}
			addr = a.Unmap()
			if !isTrusted(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
