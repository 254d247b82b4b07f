//go:build !linux

package main

import "net"

// probePeer reports that the kernel cannot tell here whether a peer reads:
// only Linux's TCP_INFO is used. Elsewhere --stall-limit is the bound.
func probePeer(net.Conn) (acked uint64, ok bool) { return 0, false }
