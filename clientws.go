package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/urfave/cli/v2"
)

// rawChunk is the most stdin bytes `echohub client --framing raw` sends as
// one WebSocket message.
const rawChunk = 32 << 10

// isWebSocketURL reports whether addr is a ws:// or wss:// URL rather than a
// TCP address.
func isWebSocketURL(addr string) bool {
	return strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://")
}

// wsClientAction is `echohub client ws://...` and `wss://...`: the TLS flags
// apply to wss:// (which needs no --tls), and --framing says how stdin and
// stdout map to WebSocket messages.
func wsClientAction(cCtx *cli.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("client: invalid URL %q (want ws://HOST:PORT/ws or wss://HOST:PORT/ws)", rawURL)
	}
	mode, err := parseFraming(cCtx.String("framing"))
	if err != nil {
		return fmt.Errorf("--framing: %w", err)
	}
	if cCtx.Bool("tls") {
		return errors.New("--tls: not with a WebSocket URL (use wss://)")
	}
	hostPort := u.Host
	if u.Port() == "" {
		hostPort = net.JoinHostPort(u.Hostname(), "443")
	}
	tlsConfig, err := clientTLSFlags(cCtx, u.Scheme == "wss", hostPort, "a wss:// URL")
	if err != nil {
		return err
	}
	return runWSClient(cCtx.Context, u.String(), mode, tlsConfig, cCtx.App.Reader, cCtx.App.Writer)
}

// runWSClient connects to the WebSocket URL, over TLS with a non-nil
// tlsConfig, and works like runClient: stdin goes to the server, cut into
// messages as the server's --framing mode cuts a TCP stream (line: each line
// is a text message, without its '\n'; len32: each frame's payload is a
// binary message; raw: each read of stdin is one), and each message from the
// server goes to stdout framed the same way, so the output is what a TCP
// client of the same hub prints. At EOF on stdin it sends a close frame
// (1000) once its messages are sent; WebSocket has no half-close, so what the
// server sends after that is not printed. A close by the server with a
// status other than 1000 or 1001 is an error that carries the server's text.
func runWSClient(ctx context.Context, rawURL string, mode framing, tlsConfig *tls.Config, stdin io.Reader, stdout io.Writer) error {
	opts := &websocket.DialOptions{}
	if tlsConfig != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	}
	ws, _, err := websocket.Dial(ctx, rawURL, opts)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1) // the server bounds what it sends by its --max-message
	stop := context.AfterFunc(ctx, func() { ws.CloseNow() })
	defer stop()

	down := make(chan error, 1)
	go func() { down <- wsToStdout(ws, mode, stdout) }() // returns when the connection ends
	up := make(chan error, 1)
	go func() { // returns at EOF on stdin, or when sending fails; a Read of stdin still blocked ends with the process
		err := stdinToWS(ws, mode, stdin)
		if err == nil {
			err = ws.Close(websocket.StatusNormalClosure, "")
		}
		up <- err
	}()

	select {
	case err = <-down:
		if errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
			// Closed by us at EOF on stdin: the close handshake, not the
			// reader, may have met the server's close frame.
			err = <-up
		}
	case err = <-up:
		if derr := <-down; err == nil || derr != nil && websocket.CloseStatus(derr) != -1 {
			err = derr // the server's reason is the better report
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		return nil
	case -1:
	default:
		var ce websocket.CloseError
		errors.As(err, &ce)
		return fmt.Errorf("client: closed by the server: %s (status %d)", ce.Reason, int(ce.Code))
	}
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	return fmt.Errorf("client: %w", err)
}

// wsToStdout writes every message from ws to stdout, framed by mode, until
// the connection ends, and returns why it ended.
func wsToStdout(ws *websocket.Conn, mode framing, stdout io.Writer) error {
	var hdr [len32Header]byte
	for {
		_, data, err := ws.Read(context.Background())
		if err != nil {
			return err
		}
		switch mode {
		case framingLine:
			data = append(data, '\n')
		case framingLen32:
			binary.BigEndian.PutUint32(hdr[:], uint32(len(data)))
			if _, err := stdout.Write(hdr[:]); err != nil {
				return err
			}
		}
		if _, err := stdout.Write(data); err != nil {
			return err
		}
	}
}

// stdinToWS sends stdin to ws as messages cut by mode, until EOF on stdin.
func stdinToWS(ws *websocket.Conn, mode framing, stdin io.Reader) error {
	ctx := context.Background()
	r := bufio.NewReaderSize(stdin, rawChunk)
	for {
		var data []byte
		var err error
		var send bool
		typ := websocket.MessageBinary
		switch mode {
		case framingLine:
			data, err = r.ReadBytes('\n')
			send = len(data) > 0 // a line, or a final one without '\n'
			data = bytes.TrimSuffix(data, []byte("\n"))
			if utf8.Valid(data) {
				typ = websocket.MessageText
			}
			if send && errors.Is(err, io.EOF) {
				err = nil // the next read reports EOF
			}
		case framingLen32:
			var hdr [len32Header]byte
			if _, err = io.ReadFull(r, hdr[:]); err == nil {
				data = make([]byte, binary.BigEndian.Uint32(hdr[:]))
				_, err = io.ReadFull(r, data)
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				send = err == nil
			}
		case framingRaw:
			buf := make([]byte, rawChunk)
			var n int
			n, err = r.Read(buf)
			data, send = buf[:n], n > 0
		}
		if send {
			if werr := ws.Write(ctx, typ, data); werr != nil {
				return werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("stdin: truncated len32 frame at EOF")
		case err != nil:
			return err
		}
	}
}
