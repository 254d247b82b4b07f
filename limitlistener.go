package main

import (
	"net"
	"sync"
)

// A limitListener lets at most max connections be open at once, as
// golang.org/x/net/netutil.LimitListener does: past max, Accept waits until
// one of them closes, and a new connection waits in the kernel's accept
// queue, holding no file descriptor of this process. The HTTP API listens
// through one, so that its connections cannot use up the descriptors the hub
// needs (docs/metrics.md).
type limitListener struct {
	net.Listener
	// Immutable after newLimitListener.
	slots      chan struct{} // one token per open connection; cap max
	done       chan struct{} // closed by Close: a waiting Accept returns
	sendBuffer int           // when positive, SO_SNDBUF of accepted connections (tests)
	m          *metrics      // counts apiConns and apiAccepted

	closeOnce sync.Once
}

// newLimitListener returns ln limited to max open connections, counted in m.
func newLimitListener(ln net.Listener, max, sendBuffer int, m *metrics) *limitListener {
	return &limitListener{
		Listener:   ln,
		slots:      make(chan struct{}, max),
		done:       make(chan struct{}),
		sendBuffer: sendBuffer,
		m:          m,
	}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	conn, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok && l.sendBuffer > 0 {
		tc.SetWriteBuffer(l.sendBuffer)
	}
	l.m.apiAccepted.Add(1)
	l.m.apiConns.Add(1)
	return &limitConn{Conn: conn, l: l}, nil
}

// Close closes the listener; an Accept waiting for a slot returns
// net.ErrClosed.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// A limitConn gives its slot back when it is closed, once.
type limitConn struct {
	net.Conn
	l         *limitListener
	closeOnce sync.Once
}

// Close closes the connection and frees its slot.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.m.apiConns.Add(-1)
		<-c.l.slots
	})
	return err
}

// CloseWrite half-closes a TCP connection, so that net/http can still end a
// connection gracefully (it looks for this method).
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
