package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	// healthcheckTimeout bounds the whole probe, connect to body; the
	// Docker HEALTHCHECK gives it 3s.
	healthcheckTimeout = 2 * time.Second
	// defaultHealthURL is what healthcheck probes when neither --url nor
	// ECHOHUB_METRICS_LISTEN says otherwise.
	defaultHealthURL = "http://127.0.0.1:9090/healthz"
)

// healthcheckCommand is `echohub healthcheck`: the Docker HEALTHCHECK, which
// must work in an image with no shell and no curl.
func healthcheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "healthcheck",
		Usage: "probe a running server's /healthz: exit 0 on a 2xx answer, 1 otherwise",
		Flags: []cli.Flag{&cli.StringFlag{
			Name:  "url",
			Value: defaultHealthURL,
			Usage: "`URL` to GET; by default /healthz on $ECHOHUB_METRICS_LISTEN if set (0.0.0.0 or [::] probed as 127.0.0.1)",
		}},
		Action: func(cCtx *cli.Context) error {
			if cCtx.NArg() > 0 {
				return fmt.Errorf("healthcheck: unexpected argument %q", cCtx.Args().First())
			}
			url := cCtx.String("url")
			if !cCtx.IsSet("url") {
				url = healthURL(os.Getenv("ECHOHUB_METRICS_LISTEN"))
			}
			if err := healthcheck(cCtx.Context, url); err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			return nil
		},
	}
}

// healthURL returns the /healthz URL of a server whose --metrics-listen is
// listen: an unspecified host (all interfaces) is probed on loopback. It
// returns defaultHealthURL if listen is empty or unusable.
func healthURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if listen == "" || err != nil || port == "" {
		return defaultHealthURL
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}

// healthcheck GETs url within healthcheckTimeout and returns nil if the
// answer is 2xx. It keeps no connection open and uses no proxy: it probes
// a server on this host.
func healthcheck(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	hc := &http.Client{
		Timeout:   healthcheckTimeout,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err // *url.Error: `Get "URL": ...`
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
