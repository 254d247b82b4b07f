//go:build !unix

package main

// raiseFileLimit reports that this platform (Windows, wasm, plan9) has no
// per-process open-file limit that sockets count against.
func raiseFileLimit() (limit uint64, ok bool, err error) { return 0, false, nil }
