package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// framing is how a connection's byte stream is cut into messages (--framing).
type framing int

const (
	framingLine  framing = iota // a message is the bytes up to and including '\n'
	framingRaw                  // a message is whatever one read returned
	framingLen32                // 4-byte big-endian length, then that many payload bytes
)

// len32Header is the size of a len32 frame's length prefix.
const len32Header = 4

var framingNames = []string{framingLine: "line", framingRaw: "raw", framingLen32: "len32"}

func (f framing) String() string { return framingNames[f] }

// parseFraming returns the framing named s.
func parseFraming(s string) (framing, error) {
	for i, name := range framingNames {
		if s == name {
			return framing(i), nil
		}
	}
	return 0, fmt.Errorf("unknown value %q (want %s)", s, strings.Join(framingNames, ", "))
}

// maxFrame is the largest number of bytes one message occupies on the wire:
// the read buffer never grows past it.
func (f framing) maxFrame(maxMessage int) int {
	if f == framingLen32 {
		return len32Header + maxMessage
	}
	return maxMessage
}

// encodeNotice frames the one-line notice a client gets before the server
// closes it (server full, message too long), so that a len32 client can parse it.
func (f framing) encodeNotice(text string) []byte {
	if f == framingLen32 {
		b := binary.BigEndian.AppendUint32(make([]byte, 0, len32Header+len(text)), uint32(len(text)))
		return append(b, text...)
	}
	return []byte(text + "\n")
}

// errMessageTooLong reports a line or len32 payload over --max-message.
var errMessageTooLong = errors.New("message too long")

// minReadBuffer is the read buffer of a connection that has been quiet: idle
// connections are cheap, and the buffer doubles up to maxFrame under load.
const minReadBuffer = 128

// A framer cuts one connection's stream into messages. It enforces
// --max-message while reading: the buffer never grows past one largest frame,
// so an over-long message is refused before it is ever held in memory.
type framer struct {
	r        io.Reader
	mode     framing
	max      int // --max-message
	maxBatch int // most messages returned by one call to next

	buf        []byte // buf[start:end] is read but not yet returned
	start, end int
	scanned    int   // line mode: buf[start:scanned] holds no '\n'
	short      int   // consecutive reads that used under a quarter of buf
	full       bool  // the last read filled buf: the stream has more, so grow it
	err        error // first read error, returned once buffered messages are out
}

// newFramer returns a framer reading from r.
func newFramer(r io.Reader, mode framing, maxMessage, maxBatch int) *framer {
	return &framer{r: r, mode: mode, max: maxMessage, maxBatch: max(1, maxBatch)}
}

// next returns the next run of 1 to maxBatch complete messages, framed as they
// arrived, in a new slice that the caller owns, and their count. At the end of
// the stream it returns io.EOF; a read error is returned after every complete
// message before it. In line mode a final line without '\n' at EOF is returned
// with '\n' appended (README); a partial len32 frame at EOF is discarded.
func (f *framer) next() ([]byte, int, error) {
	for {
		if data, n, err := f.cut(); n > 0 || err != nil {
			return data, n, err
		}
		if f.err != nil {
			return f.atEOF()
		}
		f.fill()
	}
}

// cut returns the complete messages at the front of the buffer, if any.
func (f *framer) cut() ([]byte, int, error) {
	var end, n int
	switch f.mode {
	case framingRaw:
		end, n = f.end, min(1, f.end-f.start)
	case framingLine:
		end = f.start
		for n < f.maxBatch {
			from := max(end, f.scanned)
			i := bytes.IndexByte(f.buf[from:f.end], '\n')
			if i < 0 {
				f.scanned = f.end
				break
			}
			end, f.scanned = from+i+1, from+i+1
			n++
		}
		if n == 0 && f.end-f.start >= f.max {
			return nil, 0, errMessageTooLong // the line would be over max, counting its '\n'
		}
	case framingLen32:
		end = f.start
		for n < f.maxBatch && f.end-end >= len32Header {
			size := binary.BigEndian.Uint32(f.buf[end:])
			if uint64(size) > uint64(f.max) {
				if n == 0 {
					return nil, 0, errMessageTooLong
				}
				break // return the good frames before it first
			}
			if f.end-end-len32Header < int(size) {
				break
			}
			end += len32Header + int(size)
			n++
		}
	}
	if n == 0 {
		return nil, 0, nil
	}
	data := bytes.Clone(f.buf[f.start:end])
	f.start = end
	return data, n, nil
}

// fill reads more of the stream, first making room: it moves a partial message
// to the front, grows a full buffer up to one largest frame, and shrinks a
// buffer that recent reads have left mostly unused.
func (f *framer) fill() {
	limit := f.mode.maxFrame(f.max)
	switch {
	case f.buf == nil:
		f.buf = make([]byte, min(minReadBuffer, limit))
	case f.start == f.end:
		f.start, f.end, f.scanned = 0, 0, 0
		switch {
		case f.full && len(f.buf) < limit:
			// Under load. Raw mode always gets here, since cut takes the
			// whole buffer, so this is how its reads reach --max-message.
			f.buf, f.short = make([]byte, min(2*len(f.buf), limit)), 0
		case f.short >= 4 && len(f.buf) > minReadBuffer:
			f.buf, f.short = make([]byte, max(minReadBuffer, len(f.buf)/4)), 0
		}
	case f.start > 0:
		copy(f.buf, f.buf[f.start:f.end]) // the partial message is short
		f.end -= f.start
		f.scanned = max(0, f.scanned-f.start)
		f.start = 0
	}
	if f.end == len(f.buf) {
		if len(f.buf) == limit {
			// Unreachable: a full buffer of maxFrame bytes always holds a
			// complete or an over-long message, which cut returns first.
			// Never Read into an empty slice.
			f.err = errMessageTooLong
			return
		}
		grown := make([]byte, min(2*len(f.buf), limit))
		copy(grown, f.buf[:f.end])
		f.buf = grown
	}
	n, err := f.r.Read(f.buf[f.end:])
	f.end += n
	f.full = f.end == len(f.buf)
	if n < len(f.buf)/4 {
		f.short++
	} else {
		f.short = 0
	}
	if err != nil {
		f.err = err
	}
}

// atEOF returns what is left once the stream has ended, then the read error.
func (f *framer) atEOF() ([]byte, int, error) {
	if f.start < f.end && f.mode == framingLine && errors.Is(f.err, io.EOF) {
		data := append(bytes.Clone(f.buf[f.start:f.end]), '\n')
		f.start = f.end
		return data, 1, nil
	}
	return nil, 0, f.err // keep the discarded partial message for partial()
}

// partial reports how many bytes of an incomplete message the framer holds.
func (f *framer) partial() int { return f.end - f.start }
