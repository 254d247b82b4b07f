package main

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// newLogger returns the server's logger, writing to w at level. Format auto is
// console (human-readable) when w is a terminal and JSON otherwise.
func newLogger(w io.Writer, level zerolog.Level, format string) zerolog.Logger {
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
