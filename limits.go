package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// This file holds the operational limits (docs/operations.md): who is admitted
// (--allow, --deny, --max-clients-per-ip), how fast one client may publish
// (--rate, --burst), and how dead peers are found (--keepalive).

// parsePrefixes reads the values of --allow or --deny: CIDRs, or plain
// addresses, which stand for themselves (/32 or /128). IPv4-mapped IPv6
// prefixes become IPv4 ones, since client addresses are compared unmapped.
// An empty value is an error, not "no rule": an allow list that came out
// empty by mistake (ECHOHUB_ALLOW= in a template) must not admit everyone.
func parsePrefixes(values []string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			return nil, errors.New("empty CIDR (want an address or a CIDR; leave the flag out for no rule)")
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("invalid CIDR %q (want an address or a CIDR such as 10.0.0.0/8 or fd00::/8)", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		prefixes = append(prefixes, p.Masked())
	}
	return prefixes, nil
}

// admits reports whether --allow and --deny let in a client from ip: ip is in
// some --allow prefix, or there are none, and it is in no --deny prefix. The
// lists are short, so a scan per accepted connection is cheap.
func (cfg config) admits(ip netip.Addr) bool {
	for _, p := range cfg.deny {
		if p.Contains(ip) {
			return false
		}
	}
	if len(cfg.allow) == 0 {
		return true
	}
	for _, p := range cfg.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// remoteIP returns the address conn comes from, unmapped and without a zone,
// so that it compares equal however the listener saw it. It is the zero Addr,
// which no prefix contains, if the address is not IP.
func remoteIP(conn net.Conn) netip.Addr {
	var ap netip.AddrPort
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		ap, _ = netip.ParseAddrPort(conn.RemoteAddr().String())
	}
	return ap.Addr().Unmap().WithZone("")
}

// gate decides, under s.mu, whether a client from ip is refused by
// --allow, --deny, --max-clients-per-ip or --max-clients, in that order (a
// denied address never learns whether the server is full), and returns the
// reason and the one notice line it is sent; reasonNone admits it. TCP and
// WebSocket clients pass the same gate.
func (s *server) gate(ip netip.Addr) (closeReason, string) {
	switch {
	case !s.cfg.admits(ip):
		return reasonDenied, fmt.Sprintf("echohub: not allowed from %s; closing", ip)
	case s.cfg.maxClientsPerIP > 0 && s.perIP[ip] >= s.cfg.maxClientsPerIP:
		return reasonTooManyFromIP, fmt.Sprintf("echohub: too many connections from %s (max %d); closing", ip, s.cfg.maxClientsPerIP)
	case s.cfg.maxClients > 0 && len(s.conns) >= s.cfg.maxClients:
		return reasonServerFull, fmt.Sprintf("echohub: server full (max %d clients); closing", s.cfg.maxClients)
	}
	return reasonNone, ""
}

// countIP adds delta to the clients admitted from ip, under s.mu. It keeps
// no count when --max-clients-per-ip is off.
func (s *server) countIP(ip netip.Addr, delta int) {
	if s.cfg.maxClientsPerIP == 0 {
		return
	}
	if n := s.perIP[ip] + delta; n > 0 {
		s.perIP[ip] = n
	} else {
		delete(s.perIP, ip)
	}
}

// refuse sends conn one notice line, closes it, counts r and logs it,
// sampled (see refusalLog). It runs on the accept loop, before any goroutine
// starts for conn, so the notice write has a short deadline.
func (s *server) refuse(conn net.Conn, r closeReason, notice string) {
	s.m.closes[r].Add(1)
	// Sampled: a connect storm must not flood the log.
	s.refusals.refused(conn.RemoteAddr(), r)
	if s.cfg.tls == nil { // with TLS, a plaintext line would only garble the handshake
		conn.SetWriteDeadline(time.Now().Add(noticeTimeout))
		conn.Write(s.cfg.framing.encodeNotice(notice))
	}
	conn.Close()
}

// An ingress slows one client's reader to --rate messages per second, with
// bursts of up to --burst (docs/operations.md, fair ingress). The reader waits for
// tokens before it hands messages to the hub, and reads nothing meanwhile,
// so TCP pushes back on that client alone: the hub never waits on a limiter.
// A client has none when --rate is 0.
type ingress struct {
	// Immutable after newIngress.
	limiter *rate.Limiter // --rate tokens per second, --burst deep
	burst   int           // limiter's burst: the most messages one wait may cover
	closed  chan struct{} // closed by stop, when the client closes

	// Owned by the client's readLoop.
	timer *time.Timer // reused between waits; nil until the first
}

// newIngress returns the ingress limit of one client under cfg, or nil if
// --rate is 0. A --burst of 0 means one second's worth, at least 1.
func newIngress(cfg config) *ingress {
	if cfg.rate == 0 {
		return nil
	}
	burst := cfg.burst
	if burst == 0 {
		burst = max(1, int(math.Ceil(cfg.rate)))
	}
	return &ingress{
		limiter: rate.NewLimiter(rate.Limit(cfg.rate), burst),
		burst:   burst,
		closed:  make(chan struct{}),
	}
}

// maxBatch returns how many messages the reader may hand the hub at once: at
// most a burst, so that one wait covers one handover and a throttled client's
// messages flow at the rate rather than in lumps.
func (in *ingress) maxBatch(n int) int {
	if in == nil {
		return n
	}
	return min(n, in.burst)
}

// stop ends any wait in progress for good: the client is closing. It is
// called once, from client.close.
func (in *ingress) stop() {
	if in != nil {
		close(in.closed)
	}
}

// throttle waits until c may hand the hub n more messages under --rate,
// counting them as rate limited if it had to wait. The wait ends early when
// c closes or the server shuts down; the messages are then handed over at
// once, as every message read before shutdown is delivered (README), and the
// next read fails. It runs on c's readLoop, and only if c.ingress is set.
func (c *client) throttle(n int) {
	in := c.ingress
	for n > 0 {
		k := min(n, in.burst)
		n -= k
		now := time.Now()
		d := in.limiter.ReserveN(now, k).DelayFrom(now)
		if d <= 0 {
			continue
		}
		c.hub.m.rateLimited.Add(uint64(k))
		if in.timer == nil {
			in.timer = time.NewTimer(d)
		} else {
			in.timer.Reset(d)
		}
		select {
		case <-in.timer.C:
		case <-in.closed:
			in.timer.Stop()
			return
		case <-c.hub.stop:
			in.timer.Stop()
			return
		}
	}
}

// setKeepAlive applies --keepalive to an accepted connection: probes start
// after the connection has been idle for d and repeat every d, and the
// kernel closes it after 3 unanswered ones, so a vanished peer frees its slot
// in about 4*d. With d = 0 keepalive is turned off (Go turns it on for
// accepted connections by default).
func setKeepAlive(conn net.Conn, d time.Duration) error {
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = nc.NetConn() // a *tls.Conn: set it on the TCP connection
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	return tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: d > 0, Idle: d, Interval: d, Count: 3})
}
