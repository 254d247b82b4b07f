package main

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBenchEncodeDecode(t *testing.T) {
	tests := []struct {
		name    string
		framing string
		size    int
		h       benchHeader
	}{
		{"zero line", benchLine, 64, benchHeader{}},
		{"zero len32", benchLen32, 64, benchHeader{}},
		{"smallest line", benchLine, benchHeaderLen + 1, benchHeader{pub: 1, seq: 2, ts: 3}},
		{"smallest len32", benchLen32, benchHeaderLen, benchHeader{pub: 1, seq: 2, ts: 3}},
		{"largest values", benchLine, 1024, benchHeader{pub: math.MaxUint16, seq: math.MaxUint64, ts: math.MaxInt64}},
		{"typical len32", benchLen32, 1024, benchHeader{pub: 7, seq: 123456789, ts: 987654321012}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := benchNewFrame(tt.framing, tt.size)
			benchEncode(frame[len(frame)-tt.size:], tt.h)
			if n := len(frame); n != benchWireSize(tt.framing, tt.size) {
				t.Fatalf("len(frame) = %d; want %d", n, benchWireSize(tt.framing, tt.size))
			}
			payload, n, err := benchNextFrame(tt.framing, frame, benchMaxSize)
			if n != len(frame) || err != nil {
				t.Fatalf("benchNextFrame(%q) = %q, %d, %v; want the whole frame", frame, payload, n, err)
			}
			wantNL := -1 // len32 payloads hold no newline at all
			if tt.framing == benchLine {
				wantNL = tt.size - 1
			}
			if len(payload) != tt.size || bytes.IndexByte(payload, '\n') != wantNL {
				t.Fatalf("payload %q: want %d bytes, the first newline at %d", payload, tt.size, wantNL)
			}
			got, ok := benchDecode(payload)
			if !ok {
				t.Fatalf("benchDecode(%q) failed", payload)
			}
			if diff := cmp.Diff(tt.h, got, cmp.AllowUnexported(benchHeader{})); diff != "" {
				t.Errorf("benchDecode(%q) (-want +got):\n%s", payload, diff)
			}
		})
	}
}

func TestBenchDecodeRejects(t *testing.T) {
	valid := []byte("M 0001 0000000000000002 0000000000000003")
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"truncated", valid[:benchHeaderLen-1]},
		{"garbage", []byte("hello, this is not a bench message at all\n")},
		{"probe", benchProbe(benchLine, 1)},
		{"uppercase hex", []byte("M 000A 0000000000000002 0000000000000003")},
		{"missing separator", []byte("M 0001-0000000000000002 0000000000000003")},
		{"negative time", []byte("M 0001 0000000000000002 8000000000000003")},
	}
	if _, ok := benchDecode(valid); !ok {
		t.Fatalf("benchDecode(%q) failed; the cases below start from it", valid)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if h, ok := benchDecode(tt.payload); ok {
				t.Errorf("benchDecode(%q) = %+v, true; want false", tt.payload, h)
			}
		})
	}
}

func FuzzBenchDecode(f *testing.F) {
	f.Add([]byte{})                                                      // empty
	f.Add([]byte("M 0001 00000000"))                                     // truncated header
	f.Add([]byte("\x00\xff garbage \n\n"))                               // garbage
	f.Add([]byte("M 0001 0000000000000002 0000000000000003......\n"))    // valid line message
	f.Add([]byte("\x00\x00\x00\x28M 0001 0000000000000002 00000000000")) // truncated len32 frame
	f.Add(benchProbe(benchLine, 42))                                     // probe
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, ok := benchDecode(data); ok {
			// Only the canonical encoding parses: re-encoding gives it back.
			again := make([]byte, benchHeaderLen)
			benchEncode(again, h)
			if !bytes.Equal(again, data[:benchHeaderLen]) {
				t.Errorf("benchDecode(%q) = %+v, which encodes as %q", data, h, again)
			}
		}
		for _, framing := range []string{benchLine, benchLen32} {
			payload, n, err := benchNextFrame(framing, data, 64)
			if n < 0 || n > len(data) || len(payload) > n || (err != nil && n != 0) {
				t.Errorf("benchNextFrame(%s, %q) = %q, %d, %v", framing, data, payload, n, err)
			}
		}
	})
}

func TestBenchNextFrame(t *testing.T) {
	tests := []struct {
		name    string
		framing string
		in      string
		want    string
		n       int
		err     error
	}{
		{"line empty", benchLine, "", "", 0, nil},
		{"line partial", benchLine, "abc", "", 0, nil},
		{"line two", benchLine, "ab\ncd\n", "ab\n", 3, nil},
		{"len32 short header", benchLen32, "\x00\x00", "", 0, nil},
		{"len32 partial", benchLen32, "\x00\x00\x00\x03ab", "", 0, nil},
		{"len32 two", benchLen32, "\x00\x00\x00\x02ab\x00\x00\x00\x01c", "ab", 6, nil},
		{"len32 empty payload", benchLen32, "\x00\x00\x00\x00", "", 4, nil},
		{"len32 too long", benchLen32, "\x00\x01\x00\x00", "", 0, errBenchFrameTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := benchNextFrame(tt.framing, []byte(tt.in), 1024)
			if string(got) != tt.want || n != tt.n || !errors.Is(err, tt.err) {
				t.Errorf("benchNextFrame(%s, %q) = %q, %d, %v; want %q, %d, %v", tt.framing, tt.in, got, n, err, tt.want, tt.n, tt.err)
			}
		})
	}
}
