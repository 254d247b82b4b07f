package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// A natsServer is a real nats-server running in-process on 127.0.0.1, with
// JetStream on and its store in a t.TempDir(); Cleanup shuts it down.
type natsServer struct {
	srv  *natsserver.Server
	opts *natsserver.Options
}

// natsOptions returns the options of a JetStream server on a random
// 127.0.0.1 port, storing in a new temporary directory.
func natsOptions(t *testing.T, jetStream bool) *natsserver.Options {
	return &natsserver.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: jetStream,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
}

// startNATS starts a nats-server with opts and waits until it accepts
// connections.
func startNATS(t *testing.T, opts *natsserver.Options) *natsServer {
	t.Helper()
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats-server: not ready within 10s")
	}
	ns := &natsServer{srv: srv, opts: opts}
	t.Cleanup(ns.stop)
	return ns
}

// url returns the server's client URL.
func (ns *natsServer) url() string { return ns.srv.ClientURL() }

// stop shuts the server down and waits until it has; it may run twice.
func (ns *natsServer) stop() {
	ns.srv.Shutdown()
	ns.srv.WaitForShutdown()
}

// restart stops the server and starts it again on the same port with the
// same store, as an operator restarting nats-server does.
func (ns *natsServer) restart(t *testing.T) {
	t.Helper()
	ns.stop()
	ns.opts.Port = ns.srv.Addr().(*net.TCPAddr).Port
	srv, err := natsserver.NewServer(ns.opts)
	if err != nil {
		t.Fatalf("nats-server restart: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server restart: not ready within 10s")
	}
	ns.srv = srv
}

// startNATSCluster starts a cluster of n JetStream servers and waits until
// it has elected a JetStream meta leader.
func startNATSCluster(t *testing.T, n int) []*natsServer {
	t.Helper()
	var servers []*natsServer
	var routes []string
	for i := range n {
		opts := natsOptions(t, true)
		opts.ServerName = fmt.Sprintf("n%d", i)
		opts.Cluster.Name = "echohub-test"
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = -1
		opts.Routes = natsserver.RoutesFromStr(strings.Join(routes, ","))
		ns := startNATS(t, opts)
		routes = append(routes, fmt.Sprintf("nats://%s", ns.srv.ClusterAddr()))
		servers = append(servers, ns)
	}
	waitFor(t, 30*time.Second, func() error {
		for _, ns := range servers {
			if ns.srv.JetStreamIsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader among %d servers", n)
	})
	return servers
}

// backplaneConfig returns testConfig for a node on the stream named stream
// at urls, with its HTTP API on 127.0.0.1:0.
func backplaneConfig(stream string, urls ...string) config {
	cfg := testConfig()
	cfg.backplane = urls
	cfg.bpStream = stream
	cfg.metricsListen = "127.0.0.1:0"
	return cfg
}

// A node is an echohub node on a backplane, with its HTTP API.
type node struct {
	*testServer
	api string // base URL of its HTTP API
}

// startNode starts an echohub node for cfg (see backplaneConfig).
func startNode(t *testing.T, cfg config) *node {
	t.Helper()
	ts := startTestServer(t, cfg)
	return &node{testServer: ts, api: startTestAPI(t, ts)}
}

// metric scrapes the node's metric name.
func (n *node) metric(t *testing.T, name string) float64 {
	t.Helper()
	got, err := scrape(t, n.api)
	if err != nil {
		t.Fatal(err)
	}
	return got[name]
}

// readyz returns the status of the node's /readyz.
func (n *node) readyz(t *testing.T) int {
	code, _ := httpGet(t, n.api+"/readyz")
	return code
}

// encodeFrame frames payload for f (raw: as is).
func encodeFrame(f framing, payload string) string {
	switch f {
	case framingLine:
		return payload + "\n"
	case framingLen32:
		return string(binary.BigEndian.AppendUint32(nil, uint32(len(payload)))) + payload
	}
	return payload
}

// readFrame reads one line or len32 frame and returns its payload.
func (c *testConn) readFrame(t *testing.T, f framing) (string, error) {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	if f == framingLine {
		s, err := c.r.ReadString('\n')
		return strings.TrimSuffix(s, "\n"), err
	}
	var hdr [len32Header]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return "", err
	}
	p := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(c.r, p)
	return string(p), err
}

// TestBackplaneThreeNodes: three nodes, a publisher and a reader on each,
// all publishing at once. Every client sees the one order of the stream:
// the readers identical full sequences, each publisher the same less its own
// messages (--exclude-sender, across nodes). In raw mode, where messages are
// whatever reads return, every client gets the identical byte stream.
func TestBackplaneThreeNodes(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	const perPub = 150
	for _, f := range []framing{framingLine, framingLen32, framingRaw} {
		t.Run(f.String(), func(t *testing.T) {
			var nodes []*node
			for range 3 {
				cfg := backplaneConfig("THREE_"+f.String(), ns.url())
				cfg.framing, cfg.excludeSender = f, f != framingRaw
				nodes = append(nodes, startNode(t, cfg))
			}
			var pubs, readers []*testConn
			for i, n := range nodes {
				pubs = append(pubs, dial(t, n.addr, fmt.Sprintf("pub%d", i)))
				readers = append(readers, dial(t, n.addr, fmt.Sprintf("reader%d", i)))
				n.waitClients(t, 2)
			}
			payload := func(p, i int) string { return fmt.Sprintf("pub%d %04d %s", p, i, strings.Repeat("x", i%40)) }
			total := 0
			for i := range perPub {
				total += len(encodeFrame(f, payload(0, i)))
			}
			total *= len(pubs)

			var wg sync.WaitGroup
			got := make([][]string, 0, len(pubs)+len(readers))
			var raw [][]byte
			clients := append(append([]*testConn(nil), readers...), pubs...)
			got = got[:len(clients)]
			raw = make([][]byte, len(clients))
			for i, c := range clients {
				wg.Go(func() {
					if f == framingRaw {
						c.SetReadDeadline(time.Now().Add(ioTimeout))
						raw[i] = make([]byte, total)
						if _, err := io.ReadFull(c.r, raw[i]); err != nil {
							t.Errorf("%s: read: %v", c.name, err)
						}
						return
					}
					want := perPub * len(pubs)
					if i >= len(readers) {
						want -= perPub // --exclude-sender
					}
					for range want {
						p, err := c.readFrame(t, f)
						if err != nil {
							t.Errorf("%s: after %d messages: %v", c.name, len(got[i]), err)
							return
						}
						got[i] = append(got[i], p)
					}
				})
			}
			for p, c := range pubs {
				wg.Go(func() {
					for i := range perPub {
						c.SetWriteDeadline(time.Now().Add(ioTimeout))
						if _, err := io.WriteString(c, encodeFrame(f, payload(p, i))); err != nil {
							t.Errorf("%s: write: %v", c.name, err)
							return
						}
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			if f == framingRaw {
				for i := 1; i < len(raw); i++ {
					if !bytes.Equal(raw[0], raw[i]) {
						t.Errorf("%s and %s got different byte streams", clients[0].name, clients[i].name)
					}
				}
				return
			}
			full := got[0]
			for i, c := range clients {
				want := full
				if i >= len(readers) {
					own := c.name + " "
					want = nil
					for _, p := range full {
						if !strings.HasPrefix(p, own) {
							want = append(want, p)
						}
					}
				}
				if diff := cmp.Diff(want, got[i]); diff != "" {
					t.Errorf("%s: sequence differs from %s's (-want +got):\n%s", c.name, clients[0].name, diff)
				}
			}
			// Each publisher's own order holds within the one order.
			next := make(map[string]int)
			for _, p := range full {
				var name string
				var i int
				fmt.Sscanf(p, "%s %d", &name, &i)
				if i != next[name] {
					t.Fatalf("%s: message %d of %s follows %d", clients[0].name, i, name, next[name]-1)
				}
				next[name]++
			}
		})
	}
}
