package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// errNoCertificates is the error for a PEM file without a certificate.
var errNoCertificates = errors.New("no certificates found")

// A certStore holds what the server presents and checks in TLS handshakes:
// its certificate, from --tls-cert and --tls-key, and with --tls-client-ca
// the pool of CAs a client certificate must be signed by. reload re-reads
// the files (docs/tls.md: SIGHUP); handshakes already done are unaffected.
type certStore struct {
	// Immutable after loadCertStore.
	certFile, keyFile, caFile string
	config                    *tls.Config // for tls.Server: hands each handshake the current config

	// Accessed atomically: reload stores, handshakes load.
	current atomic.Pointer[tls.Config] // from the files as last read without error
}

// loadCertStore reads the certificate files named by cfg. It returns nil
// without --tls-cert. Its errors name the flag and the file, so that bad
// files stop `echohub serve` before the listener opens.
func loadCertStore(cfg config) (*certStore, error) {
	if cfg.tlsCert == "" {
		return nil, nil
	}
	st := &certStore{certFile: cfg.tlsCert, keyFile: cfg.tlsKey, caFile: cfg.tlsClientCA}
	if err := st.reload(); err != nil {
		return nil, err
	}
	st.config = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Each handshake gets the config current when it starts, so a reload
		// needs no lock and never touches a handshake under way.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return st.current.Load(), nil
		},
	}
	return st, nil
}

// reload re-reads the files. On error the current certificates stay.
func (st *certStore) reload() error {
	cert, err := loadKeyPair(st.certFile, st.keyFile)
	if err != nil {
		return err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if st.caFile != "" {
		pool, err := readCertPool("tls-client-ca", st.caFile)
		if err != nil {
			return err
		}
		// Resumed sessions are checked against this pool too (crypto/tls
		// verifies the chain again), so a reloaded CA file also applies to
		// clients that come back with a session ticket.
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	st.current.Store(c)
	return nil
}

// reloadOn re-reads the files on every signal from hup until ctx is done. It
// is serve's SIGHUP goroutine. A failed reload keeps the current
// certificates; new handshakes get the new ones, and connections already up
// are unaffected (docs/tls.md).
func (st *certStore) reloadOn(ctx context.Context, hup <-chan os.Signal, log zerolog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if err := st.reload(); err != nil {
			log.Error().Err(err).Msg("tls reload failed; keeping the current certificates")
			continue
		}
		leaf := st.current.Load().Certificates[0].Leaf
		serial := fmt.Sprintf("%X", leaf.SerialNumber.Bytes()) // as openssl x509 -serial prints it
		log.Info().Str("serial", serial).Time("not_after", leaf.NotAfter).Msg("tls certificates reloaded")
	}
}

// loadKeyPair reads a certificate (chain) and its key from the files named
// by --tls-cert and --tls-key.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readFlagFile("tls-cert", certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	// Check the certificates on their own first, so that an error in them
	// names --tls-cert, and any error of X509KeyPair is about the key.
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("--tls-cert %s: %w", certFile, err)
	}
	keyPEM, err := readFlagFile("tls-key", keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("--tls-key %s: %w", keyFile, err)
	}
	cert.Leaf = chain[0] // X509KeyPair sets it too, unless GODEBUG=x509keypairleaf=0
	return cert, nil
}

// readFlagFile reads the file named by --flag. Its error names the flag and
// the file, once.
func readFlagFile(flag, name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		err = pe.Err // the prefix below has the path
	}
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w", flag, name, err)
	}
	return b, nil
}

// readCertPool reads the CA certificates in the PEM file named by --flag.
func readCertPool(flag, name string) (*x509.CertPool, error) {
	b, err := readFlagFile(flag, name)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w", flag, name, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCertificates returns the certificates in PEM data, skipping other
// blocks such as keys. Unlike x509.CertPool.AppendCertsFromPEM it fails on a
// certificate it cannot parse, and when there is none.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errNoCertificates
	}
	return certs, nil
}

// wrap returns conn as the server side of a TLS connection, or conn itself
// when st is nil (no TLS). It does no I/O, so the accept loop may call it:
// the handshake runs later, in handshake.
func (st *certStore) wrap(conn net.Conn) net.Conn {
	if st == nil {
		return conn
	}
	return &tlsConn{Conn: tls.Server(conn, st.config), raw: conn}
}

// A tlsConn is the server side of a TLS connection.
type tlsConn struct {
	*tls.Conn
	raw net.Conn // the TCP connection under Conn
}

// Close closes the socket at once. tls.Conn.Close would first send a
// close_notify alert with a write that blocks for up to 5s when the peer does
// not read, and the hub and Shutdown close connections that way: they must
// never wait on a peer. A connection ending normally has sent close_notify
// already, from client.finish (CloseWrite), unless the peer closed first.
func (c *tlsConn) Close() error { return c.raw.Close() }

// handshake runs the TLS handshake of c, if c is a TLS connection, and
// reports whether c may join the hub. It runs at the start of server.handle,
// on c's own goroutine and never in the accept loop, within
// --handshake-timeout: a slow or silent peer holds only its own slot (counted
// by --max-clients), and that only until the timeout. A failed handshake
// records reasonTLSHandshake, or reasonShutdown when Shutdown cut it short.
func (s *server) handshake(c *client) bool {
	tc, ok := c.conn.(*tlsConn)
	if !ok {
		return true
	}
	// Shutdown closes quit and then sets the read deadline to now, to stop
	// the handshake; each shuttingDown check below comes after a deadline
	// change that may have undone that, and so sees it.
	tc.SetDeadline(time.Now().Add(s.cfg.handshakeTimeout))
	var err error
	if !s.shuttingDown() {
		err = tc.Handshake()
	}
	tc.SetDeadline(time.Time{})
	if s.shuttingDown() {
		c.setReason(reasonShutdown)
		return false
	}
	if err != nil {
		c.setReason(reasonTLSHandshake)
		c.log.Debug().Err(err).Msg("tls handshake failed")
		return false
	}
	if e := c.log.Debug(); e.Enabled() {
		cs := tc.ConnectionState()
		if len(cs.PeerCertificates) > 0 {
			e = e.Str("peer", cs.PeerCertificates[0].Subject.String())
		}
		e.Str("version", tls.VersionName(cs.Version)).Msg("tls handshake done")
	}
	return true
}

// clientTLSConfig returns the config of `echohub client --tls` for the server
// at addr: it checks the server's certificate for addr's host against the
// system's roots, or only caFile's CAs, unless insecure; with certFile and
// keyFile it presents that client certificate (mutual TLS).
func clientTLSConfig(addr, caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	switch {
	case certFile != "" && keyFile == "":
		return nil, fmt.Errorf("--tls-cert %s: no --tls-key given (want both or neither)", certFile)
	case keyFile != "" && certFile == "":
		return nil, fmt.Errorf("--tls-key %s: no --tls-cert given (want both or neither)", keyFile)
	case insecure && caFile != "":
		return nil, errors.New("--tls-insecure: conflicts with --tls-ca")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr // the dial reports the bad address
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host, InsecureSkipVerify: insecure}
	if caFile != "" {
		if c.RootCAs, err = readCertPool("tls-ca", caFile); err != nil {
			return nil, err
		}
	}
	if certFile != "" {
		cert, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		// Present it whatever CAs the server asks for; crypto/tls would
		// send none, and the server would say "certificate required"
		// rather than why it refuses this one.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return c, nil
}
