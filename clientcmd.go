package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/urfave/cli/v2"
)

// defaultAddr is where `echohub client` connects without an argument.
const defaultAddr = "127.0.0.1:7000"

// clientCommand is `echohub client [ADDR]`.
func clientCommand() *cli.Command {
	return &cli.Command{
		Name:      "client",
		Usage:     "connect to a hub: stdin goes to the server, the server's stream to stdout (like nc)",
		ArgsUsage: "[ADDR]",
		Action: func(cCtx *cli.Context) error {
			addr := defaultAddr
			switch cCtx.NArg() {
			case 0:
			case 1:
				addr = cCtx.Args().First()
			default:
				return fmt.Errorf("client: want at most one ADDR, got %d arguments", cCtx.NArg())
			}
			return runClient(cCtx.Context, addr, cCtx.App.Reader, cCtx.App.Writer)
		},
	}
}

// runClient copies stdin to the server at addr and the server's stream to
// stdout. At EOF on stdin it half-closes the connection and goes on printing
// until the server closes; when the server closes first, or ctx is done, it
// returns at once. A copy from stdin still blocked in Read then ends when
// stdin does (the process exits).
func runClient(ctx context.Context, addr string, stdin io.Reader, stdout io.Writer) error {
	var d net.Dialer
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
			err = conn.(*net.TCPConn).CloseWrite()
		}
		up <- err
	}()

	select {
	case err = <-down:
	case err = <-up:
		if err == nil {
			err = <-down
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
