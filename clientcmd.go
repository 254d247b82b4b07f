package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	// defaultAddr is where `echohub client` connects without an argument.
	defaultAddr = "127.0.0.1:7000"
	// sendFailedWait is how long runClient waits, after a failed send, for
	// the read side to say why.
	sendFailedWait = 100 * time.Millisecond
)

// clientCommand is `echohub client [--tls ...] [ADDR]`, or with a ws:// or
// wss:// URL a WebSocket client (clientws.go).
func clientCommand() *cli.Command {
	return &cli.Command{
		Name:      "client",
		Usage:     "connect to a hub: stdin goes to the server, the server's stream to stdout (like nc)",
		ArgsUsage: "[ADDR | ws://HOST:PORT/ws | wss://HOST:PORT/ws]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "tls", Usage: "connect over TLS, checking the server's certificate for ADDR's host"},
			&cli.StringFlag{Name: "tls-ca", Usage: "trust only the CA certificates in PEM `FILE`, not the system's"},
			&cli.StringFlag{Name: "tls-cert", Usage: "present the client certificate in PEM `FILE` (mutual TLS); needs --tls-key"},
			&cli.StringFlag{Name: "tls-key", Usage: "the private key of --tls-cert, in PEM `FILE`"},
			&cli.BoolFlag{Name: "tls-insecure", Usage: "do not check the server's certificate (for testing only)"},
			&cli.StringFlag{Name: "framing", Value: "line", Usage: "ws:// and wss:// only: the server's --framing `MODE`, which says how stdin is cut into WebSocket messages and how they are written to stdout"},
		},
		Action: func(cCtx *cli.Context) error {
			addr := defaultAddr
			switch cCtx.NArg() {
			case 0:
			case 1:
				addr = cCtx.Args().First()
			default:
				return fmt.Errorf("client: want at most one ADDR, got %d arguments", cCtx.NArg())
			}
			if isWebSocketURL(addr) {
				return wsClientAction(cCtx, addr)
			}
			if cCtx.IsSet("framing") {
				return errors.New("--framing: needs a ws:// or wss:// address")
			}
			tlsConfig, err := clientTLSFlags(cCtx, cCtx.Bool("tls"), addr, "--tls")
			if err != nil {
				return err
			}
			return runClient(cCtx.Context, addr, tlsConfig, cCtx.App.Reader, cCtx.App.Writer)
		},
	}
}

// runClient copies stdin to the server at addr, over TLS with a non-nil
// tlsConfig, and the server's stream to stdout. At EOF on stdin it
// half-closes the connection and goes on printing until the server closes;
// when the server closes first, or ctx is done, it returns at once, and when
// sending fails, within sendFailedWait. A copy from stdin still blocked in
// Read then ends when stdin does (the process exits).
func runClient(ctx context.Context, addr string, tlsConfig *tls.Config, stdin io.Reader, stdout io.Writer) error {
	var d interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	} = new(net.Dialer)
	if tlsConfig != nil {
		d = &tls.Dialer{Config: tlsConfig} // DialContext does the handshake
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	down := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, conn)
		down <- err
	}()
	up := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stdin)
		if err == nil {
			// A *net.TCPConn sends FIN, a *tls.Conn a close_notify alert;
			// the server reads EOF either way.
			err = conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		up <- err
	}()

	select {
	case err = <-down:
	case err = <-up:
		if err == nil {
			err = <-down
			break
		}
		// Sending failed. If the connection broke, the read side usually
		// has the reason at once (a TLS alert such as "certificate
		// required", where sending has only "broken pipe"): report that.
		// Either way, wait for the copy to stdout to end before returning.
		conn.SetReadDeadline(time.Now().Add(sendFailedWait))
		if derr := <-down; derr != nil && !errors.Is(derr, os.ErrDeadlineExceeded) {
			err = derr
		}
	}
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// clientTLSFlags returns the TLS config that the client command's --tls-*
// flags ask for, to reach hostPort, when on is true, and nil otherwise; a
// --tls-* flag set while on is false is an error saying it needs what.
func clientTLSFlags(cCtx *cli.Context, on bool, hostPort, what string) (*tls.Config, error) {
	if !on {
		for _, name := range []string{"tls-ca", "tls-cert", "tls-key", "tls-insecure"} {
			if cCtx.IsSet(name) {
				return nil, fmt.Errorf("--%s: needs %s", name, what)
			}
		}
		return nil, nil
	}
	return clientTLSConfig(hostPort, cCtx.String("tls-ca"), cCtx.String("tls-cert"),
		cCtx.String("tls-key"), cCtx.Bool("tls-insecure"))
}
