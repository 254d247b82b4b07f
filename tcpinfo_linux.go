package main

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// probePeer returns how many bytes conn's peer has acknowledged, from the
// kernel (TCP_INFO), and reports whether it could tell. A peer whose count
// does not grow while the server has data for it has stopped reading: its
// receive window stays closed. One that reads slowly reopens it and acks.
func probePeer(conn net.Conn) (acked uint64, ok bool) {
	if tc, isTLS := conn.(*tlsConn); isTLS {
		conn = tc.raw
	}
	sc, isSC := conn.(syscall.Conn)
	if !isSC {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	err = rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || info == nil {
		return 0, false
	}
	return info.Bytes_acked, true
}
