package loadgen

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEncodeDecode(t *testing.T) {
	tests := []struct {
		name    string
		framing string
		size    int
		h       header
	}{
		{"zero line", Line, 64, header{}},
		{"zero len32", Len32, 64, header{}},
		{"smallest line", Line, headerLen + 1, header{pub: 1, seq: 2, ts: 3}},
		{"smallest len32", Len32, headerLen, header{pub: 1, seq: 2, ts: 3}},
		{"largest values", Line, 1024, header{pub: math.MaxUint16, seq: math.MaxUint64, ts: math.MaxInt64}},
		{"typical len32", Len32, 1024, header{pub: 7, seq: 123456789, ts: 987654321012}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := newFrame(tt.framing, tt.size)
			encode(frame[len(frame)-tt.size:], tt.h)
			if n := len(frame); n != wireSize(tt.framing, tt.size) {
				t.Fatalf("len(frame) = %d; want %d", n, wireSize(tt.framing, tt.size))
			}
			payload, n, err := nextFrame(tt.framing, frame, maxSize)
			if n != len(frame) || err != nil {
				t.Fatalf("nextFrame(%q) = %q, %d, %v; want the whole frame", frame, payload, n, err)
			}
			wantNL := -1 // len32 payloads hold no newline at all
			if tt.framing == Line {
				wantNL = tt.size - 1
			}
			if len(payload) != tt.size || bytes.IndexByte(payload, '\n') != wantNL {
				t.Fatalf("payload %q: want %d bytes, the first newline at %d", payload, tt.size, wantNL)
			}
			got, ok := decode(payload)
			if !ok {
				t.Fatalf("decode(%q) failed", payload)
			}
			if diff := cmp.Diff(tt.h, got, cmp.AllowUnexported(header{})); diff != "" {
				t.Errorf("decode(%q) (-want +got):\n%s", payload, diff)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := []byte("M 0001 0000000000000002 0000000000000003")
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"truncated", valid[:headerLen-1]},
		{"garbage", []byte("hello, this is not a bench message at all\n")},
		{"probe", probeFrame(Line, 1)},
		{"uppercase hex", []byte("M 000A 0000000000000002 0000000000000003")},
		{"missing separator", []byte("M 0001-0000000000000002 0000000000000003")},
		{"negative time", []byte("M 0001 0000000000000002 8000000000000003")},
	}
	if _, ok := decode(valid); !ok {
		t.Fatalf("decode(%q) failed; the cases below start from it", valid)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if h, ok := decode(tt.payload); ok {
				t.Errorf("decode(%q) = %+v, true; want false", tt.payload, h)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})                                                      // empty
	f.Add([]byte("M 0001 00000000"))                                     // truncated header
	f.Add([]byte("\x00\xff garbage \n\n"))                               // garbage
	f.Add([]byte("M 0001 0000000000000002 0000000000000003......\n"))    // valid line message
	f.Add([]byte("\x00\x00\x00\x28M 0001 0000000000000002 00000000000")) // truncated len32 frame
	f.Add(probeFrame(Line, 42))                                          // probe
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, ok := decode(data); ok {
			// Only the canonical encoding parses: re-encoding gives it back.
			again := make([]byte, headerLen)
			encode(again, h)
			if !bytes.Equal(again, data[:headerLen]) {
				t.Errorf("decode(%q) = %+v, which encodes as %q", data, h, again)
			}
		}
		for _, framing := range []string{Line, Len32} {
			payload, n, err := nextFrame(framing, data, 64)
			if n < 0 || n > len(data) || len(payload) > n || (err != nil && n != 0) {
				t.Errorf("nextFrame(%s, %q) = %q, %d, %v", framing, data, payload, n, err)
			}
		}
	})
}

func TestNextFrame(t *testing.T) {
	tests := []struct {
		name    string
		framing string
		in      string
		want    string
		n       int
		err     error
	}{
		{"line empty", Line, "", "", 0, nil},
		{"line partial", Line, "abc", "", 0, nil},
		{"line two", Line, "ab\ncd\n", "ab\n", 3, nil},
		{"len32 short header", Len32, "\x00\x00", "", 0, nil},
		{"len32 partial", Len32, "\x00\x00\x00\x03ab", "", 0, nil},
		{"len32 two", Len32, "\x00\x00\x00\x02ab\x00\x00\x00\x01c", "ab", 6, nil},
		{"len32 empty payload", Len32, "\x00\x00\x00\x00", "", 4, nil},
		{"len32 too long", Len32, "\x00\x01\x00\x00", "", 0, errFrameTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := nextFrame(tt.framing, []byte(tt.in), 1024)
			if string(got) != tt.want || n != tt.n || !errors.Is(err, tt.err) {
				t.Errorf("nextFrame(%s, %q) = %q, %d, %v; want %q, %d, %v", tt.framing, tt.in, got, n, err, tt.want, tt.n, tt.err)
			}
		})
	}
}
