//go:build !race

package main

// raceEnabled reports whether the race detector is on; it doubles goroutine
// stack sizes, among other things.
const raceEnabled = false
