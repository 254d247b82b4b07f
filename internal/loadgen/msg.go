package loadgen

import (
	"encoding/binary"
	"errors"
	"time"
)

// Wire format of one bench message. The payload is text, so that it is a valid
// line in line framing (it holds no '\n' before its end):
//
//	M <pub:4 hex> <seq:16 hex> <ts:16 hex><padding '.'...>['\n']
//
// pub is the publisher's index, seq its sequence number (0, 1, 2, ...), and ts
// the send time in nanoseconds on nanotime's monotonic clock, so it is only
// meaningful inside the process that wrote it. Hex digits are lowercase and
// fixed width, which makes the header exactly headerLen bytes and lets
// the parser reject anything that is not the canonical encoding.
//
// --size is the whole message: in line framing the header, the padding and the
// final '\n'; in len32 framing the payload after the 4-byte length.
//
// Probe messages, sent before the timed run to prove that every subscriber is
// registered, are "P <nonce:16 hex>" plus '\n' in line framing. They are never
// counted as messages.
const (
	headerLen       = 40      // "M 0001 0123456789abcdef 0123456789abcdef"
	maxSize         = 1 << 20 // largest --size accepted
	probePayloadLen = 18      // "P 0123456789abcdef"
)

// The framings the load generator speaks; echohub's README defines both.
const (
	Line  = "line"  // a message is the bytes up to and including '\n'
	Len32 = "len32" // 4-byte big-endian length, then that many bytes
)

// errFrameTooLong is returned by nextFrame for a len32 length that
// cannot be a bench message.
var errFrameTooLong = errors.New("frame too long")

// epoch is the origin of nanotime.
var epoch = time.Now()

// nanotime returns nanoseconds since epoch on the monotonic clock. It is
// the one clock behind send times, receive times and the run's schedule.
func nanotime() int64 { return int64(time.Since(epoch)) }

// A header is what a message says about itself.
type header struct {
	pub uint16 // publisher index
	seq uint64 // publisher's sequence number, from 0
	ts  int64  // send time on nanotime's clock (the scheduled one with --rate)
}

// minSize returns the smallest --size that holds a header in framing f.
func minSize(f string) int {
	if f == Line {
		return headerLen + 1 // the '\n'
	}
	return headerLen
}

// wireSize returns how many bytes one message of --size takes on the
// connection in framing f.
func wireSize(f string, size int) int {
	if f == Len32 {
		return 4 + size
	}
	return size
}

// newFrame returns a frame of --size with its framing and padding in
// place, for encode to fill in. Each publisher reuses one.
func newFrame(f string, size int) []byte {
	b := make([]byte, wireSize(f, size))
	p := b
	if f == Len32 {
		binary.BigEndian.PutUint32(b, uint32(size))
		p = b[4:]
	}
	for i := range p {
		p[i] = '.'
	}
	p[0] = 'M'
	if f == Line {
		p[len(p)-1] = '\n'
	}
	return b
}

// payloadOf returns the payload of frame, one whole frame in framing f.
func payloadOf(f string, frame []byte) []byte {
	if f == Len32 {
		return frame[4:]
	}
	return frame
}

// probeFrame returns a probe frame carrying nonce in framing f.
func probeFrame(f string, nonce uint64) []byte {
	var b []byte
	if f == Len32 {
		b = binary.BigEndian.AppendUint32(b, probePayloadLen)
	}
	b = append(b, "P 0123456789abcdef"...)
	putHex(b[len(b)-16:], nonce)
	if f == Line {
		b = append(b, '\n')
	}
	return b
}

// encode writes h as a header into payload[:headerLen].
func encode(payload []byte, h header) {
	p := payload[:headerLen]
	p[0], p[1], p[6], p[23] = 'M', ' ', ' ', ' '
	putHex(p[2:6], uint64(h.pub))
	putHex(p[7:23], h.seq)
	putHex(p[24:40], uint64(h.ts))
}

// decode parses the header at the start of a message payload. It reports
// false unless payload starts with a canonical header; the length of the
// payload and what follows the header are for the caller to check.
func decode(payload []byte) (header, bool) {
	if len(payload) < headerLen {
		return header{}, false
	}
	p := payload[:headerLen]
	if p[0] != 'M' || p[1] != ' ' || p[6] != ' ' || p[23] != ' ' {
		return header{}, false
	}
	pub, ok1 := getHex(p[2:6])
	seq, ok2 := getHex(p[7:23])
	ts, ok3 := getHex(p[24:40])
	if !ok1 || !ok2 || !ok3 || ts > 1<<63-1 {
		return header{}, false
	}
	return header{pub: uint16(pub), seq: seq, ts: int64(ts)}, true
}

// unhex maps a lowercase hex digit to its value and anything else to -1.
var unhex = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i, c := range "0123456789abcdef" {
		t[c] = int8(i)
	}
	return t
}()

// putHex writes v as len(dst) lowercase hex digits, most significant
// first, dropping digits that do not fit.
func putHex(dst []byte, v uint64) {
	const digits = "0123456789abcdef"
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = digits[v&0xf]
		v >>= 4
	}
}

// getHex parses at most 16 lowercase hex digits.
func getHex(src []byte) (uint64, bool) {
	var v uint64
	for _, c := range src {
		d := unhex[c]
		if d < 0 {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// nextFrame finds the first complete message in b, which starts on a
// message boundary. It returns the payload (in line framing, with its '\n')
// and the number of bytes the frame takes in b; n is 0 while b holds only part
// of a frame. In len32 framing a length over maxPayload is an error, since the
// stream cannot be resynchronised after it.
func nextFrame(f string, b []byte, maxPayload int) (payload []byte, n int, err error) {
	if f == Line {
		for i, c := range b {
			if c == '\n' {
				return b[:i+1], i + 1, nil
			}
		}
		return nil, 0, nil
	}
	if len(b) < 4 {
		return nil, 0, nil
	}
	size := binary.BigEndian.Uint32(b)
	if uint64(size) > uint64(maxPayload) {
		return nil, 0, errFrameTooLong
	}
	if len(b)-4 < int(size) {
		return nil, 0, nil
	}
	return b[4 : 4+size], 4 + int(size), nil
}
