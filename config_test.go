package main

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestSizeBounds32: at the largest sizes validate accepts, for every
// framing, every sum of sizes the server makes fits a 32-bit int, and the
// server's own code computes them without overflow; one byte more is refused
// with an error that states the true maximum. It runs on 386 too (CI:
// GOARCH=386 go test -run 'TestSizeBounds32|TestParseSize' .), where 2 GiB
// once overflowed and panicked on the first client.
func TestSizeBounds32(t *testing.T) {
	for _, f := range []framing{framingLine, framingRaw, framingLen32} {
		t.Run(f.String(), func(t *testing.T) {
			cfg := defaultConfig()
			cfg.framing, cfg.maxMessage, cfg.maxPending = f, maxMessageFor(f), maxSize
			if err := cfg.validate(); err != nil {
				t.Fatalf("validate(framing %s, max-message %d, max-pending %d) = %v; want nil", f, cfg.maxMessage, cfg.maxPending, err)
			}
			h := newHub(cfg, zerolog.Nop(), new(metrics))
			frame := int64(f.maxFrame(cfg.maxMessage)) // in int, as the server computes it
			for _, sum := range []struct {
				name string
				v    int64
			}{
				{"one frame", frame},
				{"read buffer doubled just short of a frame", 2 * (frame - 1)},
				{"write call: up to maxWriteBytes, plus one frame", maxWriteBytes + frame},
				{"hub batch: up to maxBatchBytes, plus one frame", int64(h.maxBatchBytes) + frame},
				{"queue", int64(cfg.maxPending)},
			} {
				if sum.v < 1 || sum.v > math.MaxInt32 {
					t.Errorf("%s = %d; want 1 to %d, a 32-bit int", sum.name, sum.v, math.MaxInt32)
				}
			}
			if frame > maxSize {
				t.Errorf("frame = %d; want at most maxSize, %d", frame, maxSize)
			}

			// A framer at the largest size reads a message: its buffer
			// starts small and its limit did not overflow.
			msg := "hello\n"
			if f == framingLen32 {
				msg = string(binary.BigEndian.AppendUint32(nil, 5)) + "hello"
			}
			fr := newFramer(strings.NewReader(msg), f, cfg.maxMessage, h.maxBatchMsgs)
			if data, n, err := fr.next(); string(data) != msg || n != 1 || err != nil {
				t.Errorf("next() = %q, %d, %v; want %q, 1, nil", data, n, err, msg)
			}

			cfg.maxMessage++
			err := cfg.validate()
			if want := "(1 to " + strconv.Itoa(maxMessageFor(f)) + ";"; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("validate(max-message %d) = %v; want an error stating %q", cfg.maxMessage, err, want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int // -1: refused
	}{
		{"0", 0},
		{"65536", 65536},
		{"64KiB", 64 << 10},
		{"4M", 4 << 20},
		{"1GiB", 1 << 30},              // the largest
		{"1073741824", 1 << 30},        // the same, in bytes
		{"1048576KiB", 1 << 30},        // and in KiB
		{"1073741825", -1},             // one byte more
		{"1048577KiB", -1},             // one KiB more
		{"2GiB", -1},                   // once said to be the largest, and refused
		{"2147483647", -1},             // int32's largest
		{"9223372036854775807KiB", -1}, // would overflow the shift
		{"-1", -1}, {"", -1}, {"1.5MiB", -1}, {"12 parsecs", -1},
	} {
		got, err := parseSize(tc.in)
		switch {
		case tc.want < 0 && (err == nil || !strings.Contains(err.Error(), "up to 1GiB")):
			t.Errorf("parseSize(%q) = %d, %v; want an error saying up to 1GiB", tc.in, got, err)
		case tc.want >= 0 && (got != tc.want || err != nil):
			t.Errorf("parseSize(%q) = %d, %v; want %d, nil", tc.in, got, err, tc.want)
		}
	}
}
