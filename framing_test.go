package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// errConnReset is a non-EOF read error injected mid-stream, like a connection reset.
var errConnReset = errors.New("connection reset")

// errEmptyRead is what chunkReader returns if the framer ever reads into an
// empty slice: a real conn would return 0, nil and the framer would spin.
var errEmptyRead = errors.New("read into an empty buffer")

// A chunkReader delivers data the way a network does. Each chunk of
// sizes[i%len(sizes)] bytes (all of data when sizes is empty) arrives over
// one or more reads, never more than one chunk per read. Once data is used
// up, every read returns err (io.EOF when nil).
type chunkReader struct {
	data    []byte
	sizes   []int
	err     error
	withEOF bool // return the last bytes together with the error, as io.Reader allows

	next int // index into sizes of the next chunk
	left int // bytes of the current chunk not yet delivered
	got  int // bytes delivered
	maxP int // largest len(p) passed to Read
}

// Read implements io.Reader.
func (r *chunkReader) Read(p []byte) (int, error) {
	r.maxP = max(r.maxP, len(p))
	if len(p) == 0 {
		return 0, errEmptyRead
	}
	if len(r.data) == 0 {
		return 0, r.end()
	}
	if r.left == 0 {
		r.left = len(r.data)
		if len(r.sizes) > 0 {
			r.left = max(1, r.sizes[r.next%len(r.sizes)])
			r.next++
		}
	}
	n := copy(p, r.data[:min(r.left, len(r.data))])
	r.left -= n
	r.data = r.data[n:]
	r.got += n
	if len(r.data) == 0 && r.withEOF {
		return n, r.end()
	}
	return n, nil
}

// end is the error a drained chunkReader returns.
func (r *chunkReader) end() error {
	if r.err != nil {
		return r.err
	}
	return io.EOF
}

// framed is everything a framer returned until its first error.
type framed struct {
	msgs   []string // single messages, as framed on the wire
	counts []int    // n of each successful next
	err    error
}

// drainFramer calls f.next until it fails, checking on every call the invariants
// that hold for all inputs: n is the number of messages in data and at most
// maxBatch, no message is over max, the buffer never grows past maxFrame,
// returned slices are never reused, and a framer that failed stays failed.
func drainFramer(t testing.TB, f *framer, desc string) framed {
	t.Helper()
	var got framed
	var batches, saved [][]byte
	limit := f.mode.maxFrame(f.max)
	for calls := 0; ; calls++ {
		if calls > 1<<20 {
			t.Fatalf("%s: next() never returned an error after %d calls", desc, calls)
		}
		data, n, err := f.next()
		if c := cap(f.buf); c > limit {
			t.Fatalf("%s: cap(buf) = %d after next(); want <= maxFrame %d", desc, c, limit)
		}
		if err != nil {
			if data != nil || n != 0 {
				t.Errorf("%s: next() = %q, %d, %v; want nil, 0, %v", desc, data, n, err, err)
			}
			got.err = err
			if data, n, again := f.next(); data != nil || n != 0 || again != err {
				t.Errorf("%s: next() after %v = %q, %d, %v; want nil, 0, %v", desc, err, data, n, again, err)
			}
			break
		}
		msgs, serr := splitMessages(f.mode, data)
		if serr != nil {
			t.Fatalf("%s: next() = %q, %d, nil; data does not split into messages: %v", desc, data, n, serr)
		}
		if n != len(msgs) || n < 1 || n > f.maxBatch {
			t.Errorf("%s: next() = %q, %d, nil; want n = %d messages in data, 1 <= n <= maxBatch %d",
				desc, data, n, len(msgs), f.maxBatch)
		}
		for _, m := range msgs {
			if size := payloadSize(f.mode, m); size > f.max {
				t.Errorf("%s: next() returned %q, %d bytes; want at most max %d", desc, m, size, f.max)
			}
		}
		got.msgs = append(got.msgs, msgs...)
		got.counts = append(got.counts, n)
		batches = append(batches, data)
		saved = append(saved, bytes.Clone(data))
	}
	for i := range batches {
		if !bytes.Equal(batches[i], saved[i]) {
			t.Errorf("%s: data of next() call %d became %q; want %q unchanged (a fresh slice)", desc, i, batches[i], saved[i])
		}
	}
	return got
}

// splitMessages cuts the data of one next() call back into single messages,
// each framed as on the wire.
func splitMessages(mode framing, data []byte) ([]string, error) {
	var msgs []string
	switch mode {
	case framingRaw:
		return []string{string(data)}, nil
	case framingLine:
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				return nil, fmt.Errorf("%q: line without '\\n'", data)
			}
			msgs = append(msgs, string(data[:i+1]))
			data = data[i+1:]
		}
	case framingLen32:
		for len(data) > 0 {
			if len(data) < len32Header {
				return nil, fmt.Errorf("%q: truncated header", data)
			}
			size := binary.BigEndian.Uint32(data)
			if uint64(len(data)-len32Header) < uint64(size) {
				return nil, fmt.Errorf("%q: truncated payload", data)
			}
			msgs = append(msgs, string(data[:len32Header+int(size)]))
			data = data[len32Header+int(size):]
		}
	}
	return msgs, nil
}

// payloadSize is the size that --max-message limits: a line counting its
// '\n', a len32 payload without its header, or a raw read.
func payloadSize(mode framing, msg string) int {
	if mode == framingLen32 {
		return len(msg) - len32Header
	}
	return len(msg)
}

// frame32 returns payload as one len32 frame.
func frame32(payload string) string {
	return header32(uint32(len(payload))) + payload
}

// header32 returns a len32 length prefix of size.
func header32(size uint32) string {
	return string(binary.BigEndian.AppendUint32(nil, size))
}

// quoteShort quotes s for a failure message, eliding the middle of long inputs.
func quoteShort(s string) string {
	if len(s) <= 48 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q…(%d bytes)…%q", s[:20], len(s)-40, s[len(s)-20:])
}

// A framerCase is one named table entry, shared by the three modes.
type framerCase struct {
	name       string
	in         string
	chunks     []int // sizes of the chunks the reader delivers; nil: all of in at once
	max, batch int
	readErr    error    // returned once in is used up; nil: io.EOF
	want       []string // single messages, framed as on the wire
	wantCounts []int    // n of each next() for the chunks delivery; nil: not checked
	wantErr    error
}

// runFramerCases runs every case through its own chunks. For line and len32,
// whose messages must not depend on how the stream is cut, it also runs each
// case one byte per read and with the error arriving alongside the last bytes.
func runFramerCases(t *testing.T, mode framing, tests []framerCase) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type delivery struct {
				name string
				r    *chunkReader
				wrap func(io.Reader) io.Reader
			}
			deliveries := []delivery{{name: fmt.Sprintf("chunks=%v", tt.chunks), r: &chunkReader{sizes: tt.chunks}}}
			if mode != framingRaw {
				deliveries = append(deliveries,
					delivery{name: "one byte per read", r: &chunkReader{}, wrap: iotest.OneByteReader},
					delivery{name: "error with last bytes", r: &chunkReader{sizes: tt.chunks, withEOF: true}})
			}
			for i, d := range deliveries {
				d.r.data, d.r.err = []byte(tt.in), tt.readErr
				var r io.Reader = d.r
				if d.wrap != nil {
					r = d.wrap(r)
				}
				f := newFramer(r, mode, tt.max, tt.batch)
				desc := fmt.Sprintf("%v framer on %s (max %d, batch %d, %s)", mode, quoteShort(tt.in), tt.max, tt.batch, d.name)
				got := drainFramer(t, f, desc)
				if diff := cmp.Diff(tt.want, got.msgs); diff != "" {
					t.Errorf("%s: messages mismatch (-want +got):\n%s", desc, diff)
				}
				if !errors.Is(got.err, tt.wantErr) {
					t.Errorf("%s: final error = %v; want %v", desc, got.err, tt.wantErr)
				}
				if i == 0 && tt.wantCounts != nil {
					if diff := cmp.Diff(tt.wantCounts, got.counts); diff != "" {
						t.Errorf("%s: messages per next() mismatch (-want +got):\n%s", desc, diff)
					}
				}
				if limit := mode.maxFrame(tt.max); d.r.maxP > limit {
					t.Errorf("%s: largest read = %d bytes; want at most maxFrame %d", desc, d.r.maxP, limit)
				}
			}
		})
	}
}

func TestFramerLine(t *testing.T) {
	x := strings.Repeat
	runFramerCases(t, framingLine, []framerCase{
		{name: "empty input", max: 8, batch: 4, wantErr: io.EOF},
		{name: "one line", in: "hello\n", max: 8, batch: 4, want: []string{"hello\n"}, wantErr: io.EOF},
		{name: "empty lines", in: "\n\n", max: 8, batch: 4, want: []string{"\n", "\n"}, wantErr: io.EOF},
		{name: "CRLF kept", in: "a\r\nb\r\n", max: 8, batch: 4, want: []string{"a\r\n", "b\r\n"}, wantErr: io.EOF},
		{
			name: "several lines in one read", in: "a\nbb\nccc\n", max: 64, batch: 4,
			want: []string{"a\n", "bb\n", "ccc\n"}, wantCounts: []int{3}, wantErr: io.EOF,
		},
		{
			name: "line split over reads", in: "hello\nworld\n", chunks: []int{2, 5, 3, 2}, max: 8, batch: 4,
			want: []string{"hello\n", "world\n"}, wantErr: io.EOF,
		},
		{name: "exactly max counting newline", in: "1234567\n", max: 8, batch: 4, want: []string{"1234567\n"}, wantErr: io.EOF},
		{name: "max+1 refused", in: "12345678\n", max: 8, batch: 4, wantErr: errMessageTooLong},
		{name: "max 1 allows only newline", in: "\n\na\n", max: 1, batch: 4, want: []string{"\n", "\n"}, wantErr: errMessageTooLong},
		// README: in line mode a final line without '\n' at EOF is delivered with '\n' appended.
		{name: "no trailing newline at EOF", in: "a\nbc", max: 8, batch: 4, want: []string{"a\n", "bc\n"}, wantErr: io.EOF},
		{name: "unterminated max-1 bytes fits with its newline", in: "1234567", max: 8, batch: 4, want: []string{"1234567\n"}, wantErr: io.EOF},
		{name: "unterminated max bytes is over max with its newline", in: "12345678", max: 8, batch: 4, wantErr: errMessageTooLong},
		{
			name: "maxBatch respected", in: x("a\n", 10), max: 64, batch: 3,
			want: strings.SplitAfter(x("a\n", 10), "\n")[:10], wantCounts: []int{3, 3, 3, 1}, wantErr: io.EOF,
		},
		{
			name: "messages before an over-long line come first", in: "a\nb\n123456789\nc\n", max: 8, batch: 4,
			want: []string{"a\n", "b\n"}, wantErr: errMessageTooLong,
		},
		{
			name: "read error mid-line", in: "a\nb\npar", chunks: []int{3, 2, 2}, max: 8, batch: 4, readErr: errConnReset,
			want: []string{"a\n", "b\n"}, wantErr: errConnReset,
		},
		{name: "read error on a line boundary", in: "a\n", max: 8, batch: 4, readErr: errConnReset, want: []string{"a\n"}, wantErr: errConnReset},
		// max over minReadBuffer: the buffer has to grow to hold the line.
		{
			name: "buffer grows to exactly max", in: "ok\n" + x("x", 999) + "\n", chunks: []int{100}, max: 1000, batch: 4,
			want: []string{"ok\n", x("x", 999) + "\n"}, wantErr: io.EOF,
		},
		{
			name: "grown buffer refuses max+1", in: "ok\n" + x("x", 1000) + "\n", chunks: []int{100}, max: 1000, batch: 4,
			want: []string{"ok\n"}, wantErr: errMessageTooLong,
		},
	})
}

func TestFramerLen32(t *testing.T) {
	runFramerCases(t, framingLen32, []framerCase{
		{name: "empty input", max: 8, batch: 4, wantErr: io.EOF},
		{name: "one frame", in: frame32("hello"), max: 8, batch: 4, want: []string{frame32("hello")}, wantErr: io.EOF},
		{name: "zero-length frame is a message", in: frame32(""), max: 8, batch: 4, want: []string{frame32("")}, wantErr: io.EOF},
		{name: "exactly max payload", in: frame32("12345678"), max: 8, batch: 4, want: []string{frame32("12345678")}, wantErr: io.EOF},
		{name: "max+1 refused", in: frame32("123456789"), max: 8, batch: 4, wantErr: errMessageTooLong},
		{name: "largest header refused", in: header32(1<<32-1) + "x", max: 8, batch: 4, wantErr: errMessageTooLong},
		{name: "truncated header at EOF", in: frame32("a") + "\x00\x00", max: 8, batch: 4, want: []string{frame32("a")}, wantErr: io.EOF},
		{name: "truncated payload at EOF", in: frame32("a") + header32(5) + "abc", max: 8, batch: 4, want: []string{frame32("a")}, wantErr: io.EOF},
		{
			name: "many frames in one read", in: frame32("a") + frame32("") + frame32("bb") + frame32("ccc"), max: 64, batch: 10,
			want: []string{frame32("a"), frame32(""), frame32("bb"), frame32("ccc")}, wantCounts: []int{4}, wantErr: io.EOF,
		},
		{
			name: "maxBatch respected", in: strings.Repeat(frame32("ab"), 5), max: 64, batch: 2,
			want: []string{frame32("ab"), frame32("ab"), frame32("ab"), frame32("ab"), frame32("ab")}, wantCounts: []int{2, 2, 1}, wantErr: io.EOF,
		},
		{
			name: "frame split over reads", in: frame32("hello") + frame32("world"), chunks: []int{1, 3, 2, 5, 7}, max: 8, batch: 4,
			want: []string{frame32("hello"), frame32("world")}, wantErr: io.EOF,
		},
		{
			name: "frames before an over-long header come first", in: frame32("a") + frame32("b") + header32(9), max: 8, batch: 4,
			want: []string{frame32("a"), frame32("b")}, wantErr: errMessageTooLong,
		},
		{
			name: "read error mid-frame", in: frame32("a") + header32(4) + "ab", max: 8, batch: 4, readErr: errConnReset,
			want: []string{frame32("a")}, wantErr: errConnReset,
		},
		// max over minReadBuffer: the buffer has to grow to hold the frame.
		{
			name: "buffer grows to exactly max payload", in: frame32("a") + frame32(strings.Repeat("x", 1000)), chunks: []int{300}, max: 1000, batch: 4,
			want: []string{frame32("a"), frame32(strings.Repeat("x", 1000))}, wantErr: io.EOF,
		},
	})
}

func TestFramerRaw(t *testing.T) {
	runFramerCases(t, framingRaw, []framerCase{
		{name: "empty input", max: 16, batch: 4, wantErr: io.EOF},
		{name: "chunks preserved", in: "abcdefghi", chunks: []int{3, 1, 5}, max: 16, batch: 4, want: []string{"abc", "d", "efghi"}, wantErr: io.EOF},
		{name: "newlines mean nothing", in: "a\nb\n", chunks: []int{1, 3}, max: 16, batch: 4, want: []string{"a", "\nb\n"}, wantErr: io.EOF},
		// config.go: in raw mode --max-message is the read size.
		{name: "reads no more than max", in: "abcdefghij", max: 4, batch: 4, want: []string{"abcd", "efgh", "ij"}, wantErr: io.EOF},
		{name: "read error after chunks", in: "abcd", chunks: []int{2}, max: 16, batch: 4, readErr: errConnReset, want: []string{"ab", "cd"}, wantErr: errConnReset},
	})
}

// TestFramerRawReadSize streams more than minReadBuffer at a time in raw
// mode: config.go documents --max-message as the raw read size, and the
// buffer "doubles up to maxFrame under load", so reads must reach max.
func TestFramerRawReadSize(t *testing.T) {
	const maxMessage = 4096
	in := bytes.Repeat([]byte("0123456789abcdef"), 20<<10/16) // 20 KiB, all available at once
	r := &chunkReader{data: in}
	f := newFramer(r, framingRaw, maxMessage, 4)
	desc := fmt.Sprintf("raw framer on %d bytes in one chunk (max %d)", len(in), maxMessage)
	got := drainFramer(t, f, desc) // checks each message <= max

	if joined := strings.Join(got.msgs, ""); joined != string(in) {
		t.Errorf("%s: messages re-encode to %s; want the input", desc, quoteShort(joined))
	}
	if !errors.Is(got.err, io.EOF) {
		t.Errorf("%s: final error = %v; want %v", desc, got.err, io.EOF)
	}
	if r.maxP != maxMessage {
		t.Errorf("%s: largest read = %d bytes; want %d (--max-message is the raw read size)", desc, r.maxP, maxMessage)
	}
}

// TestFramerLineTooLongOneByte feeds an over-long line one byte per read: the
// framer must refuse it after max bytes, never buffering more.
func TestFramerLineTooLongOneByte(t *testing.T) {
	const maxMessage = 1000 // over minReadBuffer, so the buffer grows while the line arrives
	in := "ok\n" + strings.Repeat("x", 5000) + "\n"
	r := &chunkReader{data: []byte(in)}
	f := newFramer(iotest.OneByteReader(r), framingLine, maxMessage, 4)
	desc := fmt.Sprintf("line framer on %s (max %d, one byte per read)", quoteShort(in), maxMessage)
	got := drainFramer(t, f, desc) // checks cap(f.buf) <= maxFrame after every call

	if diff := cmp.Diff([]string{"ok\n"}, got.msgs); diff != "" {
		t.Errorf("%s: messages mismatch (-want +got):\n%s", desc, diff)
	}
	if !errors.Is(got.err, errMessageTooLong) {
		t.Errorf("%s: final error = %v; want %v", desc, got.err, errMessageTooLong)
	}
	if want := len("ok\n") + maxMessage; r.got > want {
		t.Errorf("%s: read %d bytes before refusing; want at most %d", desc, r.got, want)
	}
	if c := cap(f.buf); c > maxMessage {
		t.Errorf("%s: cap(buf) = %d; want at most %d", desc, c, maxMessage)
	}
}

// TestFramerLen32RefusesBeforePayload proves an over-long len32 frame is
// refused from its header alone: the reader fails if asked for the payload.
func TestFramerLen32RefusesBeforePayload(t *testing.T) {
	errPayloadRead := errors.New("read past the header")
	in := frame32("ok") + header32(9) // max is 8
	for _, oneByte := range []bool{false, true} {
		r := &chunkReader{data: []byte(in), err: errPayloadRead}
		var rd io.Reader = r
		if oneByte {
			rd = iotest.OneByteReader(r)
		}
		f := newFramer(rd, framingLen32, 8, 4)
		desc := fmt.Sprintf("len32 framer on %q (max 8, one byte per read %v)", in, oneByte)
		got := drainFramer(t, f, desc)
		if diff := cmp.Diff([]string{frame32("ok")}, got.msgs); diff != "" {
			t.Errorf("%s: messages mismatch (-want +got):\n%s", desc, diff)
		}
		if !errors.Is(got.err, errMessageTooLong) {
			t.Errorf("%s: final error = %v; want %v", desc, got.err, errMessageTooLong)
		}
	}
}

// TestFramerPartialAfterEnd checks partial once next has failed:
// client.readFailed logs the bytes of a message discarded at EOF from it.
func TestFramerPartialAfterEnd(t *testing.T) {
	tests := []struct {
		name    string
		mode    framing
		in      string
		readErr error
		wantErr error
		want    int
	}{
		{name: "line complete", mode: framingLine, in: "a\n", wantErr: io.EOF, want: 0},
		{name: "line unterminated is delivered", mode: framingLine, in: "a\nbc", wantErr: io.EOF, want: 0},
		{name: "line read error mid-line", mode: framingLine, in: "a\npar", readErr: errConnReset, wantErr: errConnReset, want: 3},
		{name: "line too long", mode: framingLine, in: "abcdefghij", wantErr: errMessageTooLong, want: 8},
		{name: "len32 complete", mode: framingLen32, in: frame32("a"), wantErr: io.EOF, want: 0},
		{name: "len32 truncated header", mode: framingLen32, in: frame32("a") + "\x00\x00", wantErr: io.EOF, want: 2},
		{name: "len32 truncated payload", mode: framingLen32, in: header32(5) + "abc", wantErr: io.EOF, want: 7},
		{name: "len32 too long", mode: framingLen32, in: header32(9) + "ab", wantErr: errMessageTooLong, want: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFramer(&chunkReader{data: []byte(tt.in), err: tt.readErr}, tt.mode, 8, 4)
			desc := fmt.Sprintf("%v framer on %q (max 8)", tt.mode, tt.in)
			if got := drainFramer(t, f, desc); !errors.Is(got.err, tt.wantErr) {
				t.Fatalf("%s: final error = %v; want %v", desc, got.err, tt.wantErr)
			}
			if got := f.partial(); got != tt.want {
				t.Errorf("%s: partial() after %v = %d; want %d", desc, tt.wantErr, got, tt.want)
			}
		})
	}
}

func TestParseFraming(t *testing.T) {
	for _, want := range []framing{framingLine, framingRaw, framingLen32} {
		got, err := parseFraming(want.String())
		if err != nil || got != want {
			t.Errorf("parseFraming(%q) = %v, %v; want %v, nil", want.String(), got, err, want)
		}
	}
	for _, in := range []string{"", "LINE", "lines", "len16", " raw"} {
		got, err := parseFraming(in)
		if err == nil {
			t.Errorf("parseFraming(%q) = %v, nil; want an error", in, got)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("parseFraming(%q) error = %q; want it to name the value %q", in, err, in)
		}
	}
}

func TestFramingMaxFrame(t *testing.T) {
	tests := []struct {
		mode framing
		want int
	}{
		{framingLine, 100},
		{framingRaw, 100},
		{framingLen32, 104},
	}
	for _, tt := range tests {
		if got := tt.mode.maxFrame(100); got != tt.want {
			t.Errorf("%v.maxFrame(100) = %d; want %d", tt.mode, got, tt.want)
		}
	}
}

// TestFramingEncodeNotice checks that a notice is one message in the
// client's framing, so a line or len32 client can parse it.
func TestFramingEncodeNotice(t *testing.T) {
	const text = "echohub: server full (max 2 clients); closing"
	tests := []struct {
		mode framing
		want string
	}{
		{framingLine, text + "\n"},
		{framingLen32, header32(uint32(len(text))) + text},
	}
	for _, tt := range tests {
		got := tt.mode.encodeNotice(text)
		if string(got) != tt.want {
			t.Errorf("%v.encodeNotice(%q) = %q; want %q", tt.mode, text, got, tt.want)
		}
		f := newFramer(bytes.NewReader(got), tt.mode, len(text)+1, 4)
		desc := fmt.Sprintf("%v framer on %v.encodeNotice(%q)", tt.mode, tt.mode, text)
		read := drainFramer(t, f, desc)
		if diff := cmp.Diff([]string{tt.want}, read.msgs); diff != "" {
			t.Errorf("%s: messages mismatch (-want +got):\n%s", desc, diff)
		}
	}
}

// fuzzMax maps a fuzz byte to --max-message: mostly tiny, so short inputs hit
// the limit, and sometimes just around minReadBuffer, so the buffer grows.
func fuzzMax(seed byte) int {
	if seed < 200 {
		return 1 + int(seed)
	}
	return minReadBuffer - 32 + int(seed-200)*8 // 480 to 920
}

// fuzzDeliveries returns readers that cut in differently: in one read per
// buffer, one byte per read, with EOF alongside the last bytes, and in chunk
// sizes drawn from seed. Its names describe each delivery.
func fuzzDeliveries(in []byte, seed byte, maxMessage int) ([]string, []io.Reader) {
	sizes := make([]int, 16)
	x := uint32(seed) | 0x9e3779b0 // xorshift32 state, never zero
	for i := range sizes {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		sizes[i] = 1 + int(x%uint32(2*maxMessage+8))
	}
	return []string{"all at once", "one byte per read", "EOF with last bytes", fmt.Sprintf("chunks=%v", sizes)},
		[]io.Reader{
			&chunkReader{data: in},
			iotest.OneByteReader(&chunkReader{data: in}),
			&chunkReader{data: in, withEOF: true},
			&chunkReader{data: in, sizes: sizes},
		}
}

// lineModel is the line framer's specification, written plainly: the
// messages of in and the error that ends them.
func lineModel(in []byte, maxMessage int) ([]string, error) {
	var msgs []string
	for len(in) > 0 {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			// README: a final line without '\n' at EOF gets '\n' appended.
			if len(in)+1 > maxMessage {
				return msgs, errMessageTooLong
			}
			return append(msgs, string(in)+"\n"), io.EOF
		}
		if i+1 > maxMessage {
			return msgs, errMessageTooLong
		}
		msgs = append(msgs, string(in[:i+1]))
		in = in[i+1:]
	}
	return msgs, io.EOF
}

// len32Model is the len32 framer's specification, written plainly: the
// frames of in and the error that ends them. A partial frame at EOF is dropped.
func len32Model(in []byte, maxMessage int) ([]string, error) {
	var msgs []string
	for len(in) >= len32Header {
		size := binary.BigEndian.Uint32(in)
		if uint64(size) > uint64(maxMessage) {
			return msgs, errMessageTooLong
		}
		if uint64(len(in)-len32Header) < uint64(size) {
			break
		}
		msgs = append(msgs, string(in[:len32Header+int(size)]))
		in = in[len32Header+int(size):]
	}
	return msgs, io.EOF
}

// fuzzFramer checks the framer's properties on in for every delivery:
// drainFramer checks n, maxBatch, max and maxFrame on each call; here the
// messages re-encode to a prefix of the input, and every delivery yields the
// model's messages and error class.
func fuzzFramer(t *testing.T, mode framing, in []byte, chunkSeed, maxSeed byte) {
	t.Helper()
	maxMessage := fuzzMax(maxSeed)
	batch := 1 + int(chunkSeed>>5) // 1 to 8
	model := lineModel
	prefixOf := string(in) + "\n" // line mode may append '\n' to the final line
	if mode == framingLen32 {
		model, prefixOf = len32Model, string(in)
	}
	wantMsgs, wantErr := model(in, maxMessage)
	names, readers := fuzzDeliveries(in, chunkSeed, maxMessage)
	for i, r := range readers {
		desc := fmt.Sprintf("%v framer on %s (max %d, batch %d, %s)", mode, quoteShort(string(in)), maxMessage, batch, names[i])
		got := drainFramer(t, newFramer(r, mode, maxMessage, batch), desc)
		if joined := strings.Join(got.msgs, ""); !strings.HasPrefix(prefixOf, joined) {
			t.Fatalf("%s: messages re-encode to %s; want a prefix of the input", desc, quoteShort(joined))
		}
		if !slices.Equal(wantMsgs, got.msgs) { // cmp.Diff is slow on 100k messages
			t.Fatalf("%s: messages mismatch (-want +got):\n%s", desc, cmp.Diff(wantMsgs, got.msgs))
		}
		if !errors.Is(got.err, wantErr) {
			t.Fatalf("%s: final error = %v; want %v", desc, got.err, wantErr)
		}
	}
}

// FuzzLineFramer checks line framing properties on arbitrary input. Args: the
// stream, a chunk seed (low bits: chunk sizes; high 3 bits: maxBatch-1) and a
// max seed (see fuzzMax; seed 7 is max 8).
func FuzzLineFramer(f *testing.F) {
	f.Add([]byte(""), byte(0), byte(7))                                     // empty input
	f.Add([]byte("1234567\n"), byte(1), byte(7))                            // exactly max, counting '\n'
	f.Add([]byte("12345678\n"), byte(2), byte(7))                           // max+1
	f.Add([]byte("a\nbc"), byte(3), byte(7))                                // no trailing '\n': delivered with '\n'
	f.Add([]byte("1234567"), byte(4), byte(7))                              // no trailing '\n', exactly max once appended
	f.Add([]byte("12345678"), byte(5), byte(7))                             // no trailing '\n', max+1 once appended
	f.Add([]byte("a\r\nb\r\n"), byte(6), byte(7))                           // CRLF kept
	f.Add([]byte("\n\n\n"), byte(0), byte(0))                               // empty lines at max 1
	f.Add([]byte("a\nb\nc\nd\ne\nf\n"), byte(0x20), byte(7))                // several lines in one read, maxBatch 2
	f.Add([]byte("a\nb\n123456789\nc\n"), byte(0xe0), byte(7))              // lines before an over-long line
	f.Add([]byte("ok\n"+strings.Repeat("x", 600)+"\n"), byte(9), byte(230)) // the buffer grows past minReadBuffer (max 720)
	f.Add([]byte("\x00\x00\x00\x01a"), byte(7), byte(7))                    // a len32 frame read as a line
	f.Fuzz(func(t *testing.T, in []byte, chunkSeed, maxSeed byte) {
		fuzzFramer(t, framingLine, in, chunkSeed, maxSeed)
	})
}

// FuzzLen32Framer checks len32 framing properties on arbitrary input, with
// the same args as FuzzLineFramer.
func FuzzLen32Framer(f *testing.F) {
	f.Add([]byte(""), byte(0), byte(7))                                                            // empty input
	f.Add([]byte(frame32("12345678")), byte(1), byte(7))                                           // exactly max payload
	f.Add([]byte(frame32("123456789")), byte(2), byte(7))                                          // max+1
	f.Add([]byte(header32(9)), byte(3), byte(7))                                                   // max+1 header alone
	f.Add([]byte(frame32("a")+"\x00\x00\x00"), byte(4), byte(7))                                   // truncated 4-byte header
	f.Add([]byte(frame32("a")+header32(5)+"abc"), byte(5), byte(7))                                // truncated payload
	f.Add([]byte(frame32("")+frame32("")), byte(6), byte(7))                                       // zero-length frames
	f.Add([]byte(frame32("a\r\n")), byte(0), byte(7))                                              // CRLF in a payload
	f.Add([]byte(frame32("a")+frame32("bb")+frame32("ccc")+frame32("")), byte(0x20), byte(7))      // many frames in one read, maxBatch 2
	f.Add([]byte(header32(1<<32-1)), byte(7), byte(255))                                           // largest header
	f.Add([]byte(frame32("a")+frame32(strings.Repeat("x", 700))+frame32("b")), byte(9), byte(230)) // the buffer grows past minReadBuffer (max 720)
	f.Fuzz(func(t *testing.T, in []byte, chunkSeed, maxSeed byte) {
		fuzzFramer(t, framingLen32, in, chunkSeed, maxSeed)
	})
}
