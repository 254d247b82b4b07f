// Command echohub is a TCP broadcast hub: every message from any client is
// delivered, byte-exact, to every connected client.
//
// Run `echohub serve` and connect with `echohub client`, nc or telnet; see
// README.md for the flags, the guarantees and the design.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process at once
	}()
	os.Exit(run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole command line: it runs args and returns the exit code. An
// error is printed once to stderr as "echohub: <err>"; help goes to stdout.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := &cli.App{
		Name:           "echohub",
		Usage:          "a TCP broadcast hub: every message from any client reaches every client",
		HideVersion:    true,
		Reader:         stdin,
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {}, // run prints errors, once
		OnUsageError:   usageError,
		Commands:       []*cli.Command{serveCommand(), clientCommand(), benchCommand(), healthcheckCommand(), versionCommand()},
	}
	for _, c := range app.Commands {
		c.OnUsageError = usageError
	}
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") && app.Command(args[1]) == nil && args[1] != "help" && args[1] != "h" {
		fmt.Fprintf(stderr, "echohub: unknown command %q (want serve, client, bench, healthcheck or version)\n", args[1])
		return 1
	}
	if err := app.RunContext(ctx, args); err != nil {
		fmt.Fprintf(stderr, "echohub: %v\n", err)
		return 1
	}
	return 0
}

// usageError turns a flag parsing error into run's one-line error, without
// the help text urfave/cli would print.
func usageError(cCtx *cli.Context, err error, _ bool) error {
	if cCtx.Command != nil && cCtx.Command.Name != "" {
		return fmt.Errorf("%s: %w", cCtx.Command.Name, err)
	}
	return err
}

// serveCommand is `echohub serve`.
func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the hub",
		Flags: serveFlags(),
		Action: func(cCtx *cli.Context) error {
			if cCtx.NArg() > 0 {
				return fmt.Errorf("serve: unexpected argument %q", cCtx.Args().First())
			}
			cfg, err := configFromCLI(cCtx)
			if err != nil {
				return err
			}
			log := newLogger(cCtx.App.ErrWriter, cfg.logLevel, cfg.logFormat)
			if cfg, err = fitFileLimit(cfg, log); err != nil { // may lower --max-clients (README, Limits)
				return err
			}
			ln, err := net.Listen("tcp", cfg.listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			return serve(cCtx.Context, cfg, log, ln)
		},
	}
}

// serve runs a server on ln, and the HTTP API on --metrics-listen if set,
// until ctx is done or serving fails, and then shuts it down gracefully within
// --shutdown-timeout. A timeout during shutdown is logged, not an error
// (README). With TLS, SIGHUP re-reads the certificate files.
func serve(ctx context.Context, cfg config, log zerolog.Logger, ln net.Listener) error {
	s := newServer(cfg, log)
	if len(cfg.backplane) > 0 {
		// Before anything serves: a backplane that cannot be reached, has no
		// JetStream or carries another framing stops serve with one line.
		bp, err := dialBackplane(ctx, cfg, log)
		if err != nil {
			ln.Close()
			return err
		}
		s.useBackplane(bp)
	}
	api, err := listenHTTPAPI(s) // nil when --metrics-listen is empty
	if err != nil {
		ln.Close()
		s.Shutdown(context.Background()) // Serve never ran: this closes the backplane's connection, if any
		return err
	}
	web, err := listenWeb(s) // nil when --web-listen is empty
	if err != nil {
		ln.Close()
		if api != nil {
			api.ln.Close()
		}
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	if cfg.tls != nil {
		// Notify before serving, so that from "listening" on a SIGHUP
		// reloads the certificates rather than killing the process.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		g.Go(func() error {
			cfg.tls.reloadOn(gctx, hup, log)
			return nil
		})
	}
	g.Go(api.serve) // returns once api.shutdown below has run, or at once if api is nil
	g.Go(web.serve) // likewise with web.shutdown
	g.Go(func() error {
		if err := s.Serve(ln); !errors.Is(err, errServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info().Dur("timeout", cfg.shutdownTimeout).Msg("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			log.Warn().Err(err).Msg("shutdown timed out; remaining clients were closed")
		}
		web.shutdown() // after the hub's, which closed the web listener at its step 1 and then the WebSocket clients
		api.shutdown() // only now: /readyz answers 503 while the hub drains
		return nil
	})
	return g.Wait()
}

// versionCommand is `echohub version`.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(cCtx *cli.Context) error {
			fmt.Fprintln(cCtx.App.Writer, "echohub", versionString())
			return nil
		},
	}
}
