package main

import (
	"fmt"

	"github.com/rs/zerolog"
)

// fileReserve is how many file descriptors serve keeps for itself besides
// one per client and the HTTP API's connections: stdin, stdout and stderr,
// the two listeners, the poller's own descriptors, the connection the accept
// loop is refusing with a notice, and certificate files re-read on SIGHUP,
// with room to spare.
const fileReserve = 16

// filesBesidesClients returns how many file descriptors a server for cfg
// may need besides one per client: the reserve, and the API's connection cap
// with --metrics-listen.
func (cfg config) filesBesidesClients() int {
	n := fileReserve
	if cfg.metricsListen != "" {
		n += cfg.api.maxConns
	}
	return n
}

// clientsForFiles returns the --max-clients (0 = unlimited) that fits an
// open-file limit of limit descriptors when besides of them are needed for
// other things, and whether that is lower than maxClients. It returns 0,
// true when no client fits. A limit too large to matter (RLIM_INFINITY)
// leaves maxClients as it is.
func clientsForFiles(maxClients, besides int, limit uint64) (n int, lowered bool) {
	if limit >= uint64(maxCount)+uint64(besides) {
		return maxClients, false
	}
	if limit <= uint64(besides) {
		return 0, true
	}
	fit := int(limit - uint64(besides))
	if maxClients > 0 && maxClients <= fit {
		return maxClients, false
	}
	return fit, true
}

// fitFileLimit makes --max-clients honest (README, Limits). Past the
// open-file limit (RLIMIT_NOFILE) the accept loop cannot accept, so a client
// past it would wait in the kernel's accept queue and never get the "server
// full" line. It first raises the soft limit to the hard one where the
// platform allows (Go does so at start-up on most Unix systems; this makes
// it explicit), then, if the limit is still too low for --max-clients plus
// filesBesidesClients, lowers the returned config's maxClients to what fits
// and logs one warning, so that past it clients get the notice. It returns
// an error, naming the flag, when no client fits at all. Where there is no
// such limit (Windows) it returns cfg as it is.
func fitFileLimit(cfg config, log zerolog.Logger) (config, error) {
	limit, ok, err := raiseFileLimit()
	if err != nil {
		log.Warn().Err(err).Msg("open file limit unknown; --max-clients not checked against it")
		return cfg, nil
	}
	if !ok {
		return cfg, nil
	}
	besides := cfg.filesBesidesClients()
	n, lowered := clientsForFiles(cfg.maxClients, besides, limit)
	switch {
	case lowered && n == 0:
		return cfg, fmt.Errorf("--max-clients: the open file limit, %d, leaves no room for clients (%d are kept for the server); raise it (ulimit -n)",
			limit, besides)
	case !lowered:
		log.Debug().Uint64("file_limit", limit).Int("max_clients", cfg.maxClients).Msg("open file limit")
	case cfg.maxClients == 0:
		log.Info().Uint64("file_limit", limit).Int("reserved", besides).Int("max_clients", n).
			Msg("max clients bounded by the open file limit")
	default:
		log.Warn().Uint64("file_limit", limit).Int("reserved", besides).Int("wanted", cfg.maxClients).
			Int("max_clients", n).Msg("max clients lowered to fit the open file limit; raise it (ulimit -n) for more")
	}
	cfg.maxClients = n
	return cfg, nil
}
