//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit, if it is
// lower and the kernel allows it, and returns the soft limit then in force.
// ok is true: Unix systems have such a limit.
func raiseFileLimit() (limit uint64, ok bool, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, false, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = raised.Max
		// macOS refuses RLIM_INFINITY for the soft limit; then the
		// limit Go raised it to at start-up stays.
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	return uint64(lim.Cur), true, nil // int64 on FreeBSD, where RLIM_INFINITY is MaxInt64
}
