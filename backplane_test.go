package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	opts.Port = srv.Addr().(*net.TCPAddr).Port // for restart
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
	// A stream with n replicas can be placed once the meta leader knows n
	// peers that run JetStream and have sent it their stats: a leader alone
	// is not enough (on a busy machine, creating the stream then failed
	// with "no suitable peers for placement").
	waitFor(t, 30*time.Second, func() error {
		for _, ns := range servers {
			if ns.srv.JetStreamIsLeader() {
				if peers := ns.srv.JetStreamClusterPeers(); len(peers) < n {
					return fmt.Errorf("JetStream meta leader knows %d of %d peers: %v", len(peers), n, peers)
				}
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

// sendLines sends lines from..to-1 of name, one write each.
func sendLines(t *testing.T, c *testConn, name string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		c.send(t, line(name, i, 32))
	}
}

// expectLines reads lines from..to-1 of name, in order.
func expectLines(t *testing.T, c *testConn, name string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		expectLine(t, c, line(name, i, 32))
	}
}

// closesTotal returns how many clients ts has closed, for any reason.
func (ts *testServer) closesTotal() uint64 {
	var n uint64
	for r := range numCloseReasons {
		n += ts.closes(r)
	}
	return n
}

// TestBackplaneNATSRestart: NATS stops mid-stream and comes back. No client
// is disconnected, /readyz says 503 meanwhile and 200 after, and every line
// read meanwhile reaches everyone once, in order.
func TestBackplaneNATSRestart(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	cfg := backplaneConfig("RESTART", ns.url())
	cfg.bpStorage = "file" // the stream survives the restart
	a, b := startNode(t, cfg), startNode(t, cfg)
	alice, amy := dial(t, a.addr, "alice"), dial(t, a.addr, "amy")
	bob := dial(t, b.addr, "bob")
	a.waitClients(t, 2)
	b.waitClients(t, 1)

	sendLines(t, alice, "alice", 0, 50)
	expectLines(t, bob, "alice", 0, 50)
	expectLines(t, amy, "alice", 0, 50)

	ns.stop()
	for _, n := range []*node{a, b} {
		waitFor(t, 5*time.Second, func() error {
			if code := n.readyz(t); code != http.StatusServiceUnavailable {
				return fmt.Errorf("/readyz = %d; want 503 while NATS is down", code)
			}
			return nil
		})
	}
	if up := a.metric(t, "echohub_backplane_up"); up != 0 {
		t.Errorf("echohub_backplane_up = %v while NATS is down; want 0", up)
	}
	sendLines(t, alice, "alice", 50, 100) // read, and held: nothing to publish to
	expectNothing(t, bob, 100*time.Millisecond)

	ns.restart(t)
	for _, n := range []*node{a, b} {
		waitFor(t, 10*time.Second, func() error {
			if code := n.readyz(t); code != http.StatusOK {
				return fmt.Errorf("/readyz = %d; want 200 once NATS is back", code)
			}
			return nil
		})
	}
	expectLines(t, bob, "alice", 50, 100)
	expectLines(t, amy, "alice", 50, 100)
	sendLines(t, alice, "alice", 100, 110)
	expectLines(t, bob, "alice", 100, 110)
	expectLines(t, amy, "alice", 100, 110)
	expectNothing(t, bob, 200*time.Millisecond) // no duplicate
	expectNothing(t, amy, 100*time.Millisecond)
	for _, n := range []*node{a, b} {
		if got := n.closesTotal(); got != 0 {
			t.Errorf("clients closed: %d; want 0", got)
		}
		if got := n.metric(t, "echohub_backplane_reconnects_total"); got < 1 {
			t.Errorf("echohub_backplane_reconnects_total = %v; want at least 1", got)
		}
	}
	if got := a.metric(t, "echohub_backplane_published_total"); got < 1 || got > 110 {
		t.Errorf("echohub_backplane_published_total = %v; want 1 to 110 (reads of 110 lines)", got)
	}
	if got := a.metric(t, "echohub_backplane_lost_total"); got != 0 {
		t.Errorf("echohub_backplane_lost_total = %v; want 0", got)
	}
}

// TestBackplaneNATSCluster: the stream has three replicas on a cluster of
// three NATS servers, and the server leading it is killed mid-stream. The
// stream goes on under a new leader; nothing is lost or repeated.
func TestBackplaneNATSCluster(t *testing.T) {
	servers := startNATSCluster(t, 3)
	var urls []string
	for _, ns := range servers {
		urls = append(urls, ns.url())
	}
	cfg := backplaneConfig("CLUSTER", urls...)
	cfg.bpReplicas = 3
	a, b := startNode(t, cfg), startNode(t, cfg)
	alice, amy := dial(t, a.addr, "alice"), dial(t, a.addr, "amy")
	bob := dial(t, b.addr, "bob")
	a.waitClients(t, 2)
	b.waitClients(t, 1)

	sendLines(t, alice, "alice", 0, 50)
	expectLines(t, bob, "alice", 0, 50)
	expectLines(t, amy, "alice", 0, 50)

	var leader *natsServer
	for _, ns := range servers {
		if ns.srv.JetStreamIsStreamLeader(natsserver.DEFAULT_GLOBAL_ACCOUNT, "CLUSTER") {
			leader = ns
		}
	}
	if leader == nil {
		t.Fatal("no server leads the stream")
	}
	leader.stop()
	sendLines(t, alice, "alice", 50, 100)
	bob.SetReadDeadline(time.Now().Add(30 * time.Second)) // a new leader is elected within seconds
	for i := 50; i < 100; i++ {
		bob.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := bob.r.ReadString('\n')
		if want := line("alice", i, 32); got != want || err != nil {
			t.Fatalf("bob: read %q, %v; want %q", got, err, want)
		}
	}
	expectLines(t, amy, "alice", 50, 100)
	expectNothing(t, bob, 200*time.Millisecond) // no duplicate
	expectNothing(t, amy, 100*time.Millisecond)
	if got := b.closesTotal(); got != 0 {
		t.Errorf("clients closed: %d; want 0", got)
	}
}

// TestBackplaneNodeKilled: one of three nodes dies (everything it has is
// closed at once). Its clients lose their connection; the other nodes'
// clients keep receiving, in order.
func TestBackplaneNodeKilled(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	cfg := backplaneConfig("KILLED", ns.url())
	a, b, c := startNode(t, cfg), startNode(t, cfg), startNode(t, cfg)
	alice, bob, carol := dial(t, a.addr, "alice"), dial(t, b.addr, "bob"), dial(t, c.addr, "carol")
	a.waitClients(t, 1)
	b.waitClients(t, 1)
	c.waitClients(t, 1)
	sendLines(t, alice, "alice", 0, 20)
	expectLines(t, bob, "alice", 0, 20)
	expectLines(t, carol, "alice", 0, 20)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Shutdown(ctx) // no grace: every connection closed at once, NATS's too
	expectClosed(t, carol)

	sendLines(t, alice, "alice", 20, 60)
	expectLines(t, bob, "alice", 20, 60)
	expectLines(t, alice, "alice", 0, 60) // without --exclude-sender, alice too
}

// TestBackplaneFrozenNode: the one client of node B stops reading. B falls
// behind in the stream while node A goes on at full speed; once B is further
// behind than the stream retains, B delivers on from the oldest message still
// there, and counts and logs exactly what it missed.
func TestBackplaneFrozenNode(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	cfg := backplaneConfig("FROZEN", ns.url())
	cfg.maxMessage = 1 << 10
	cfg.bpMaxBytes = 16 << 10 // some 70 messages
	a := startNode(t, cfg)
	cfg.queue, cfg.maxPending, cfg.sendBuffer = 8, 4<<10, 4<<10
	cfg.bpBuffer = 8
	cfg.writeTimeout = time.Minute // frozen is not dead
	b := startNode(t, cfg)
	alice, amy := dial(t, a.addr, "alice"), dial(t, a.addr, "amy")
	frozen := dial(t, b.addr, "frozen")
	frozen.Conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	a.waitClients(t, 2)
	b.waitClients(t, 1)

	// One line per stream message: alice sends the next only once amy has
	// the last, so each read holds one line.
	const n = 800
	start := time.Now()
	for i := range n {
		alice.send(t, line("alice", i, 100))
		expectLine(t, amy, line("alice", i, 100))
	}
	t.Logf("node A: %d lines through the stream in %v while node B is frozen", n, time.Since(start))
	if lag := a.metric(t, "echohub_backplane_lag_messages"); lag > 1 {
		t.Errorf("node A: echohub_backplane_lag_messages = %v; want 0 or 1", lag)
	}
	waitFor(t, 5*time.Second, func() error {
		if lag := b.metric(t, "echohub_backplane_lag_messages"); lag < n/2 {
			return fmt.Errorf("node B: echohub_backplane_lag_messages = %v; want over %d", lag, n/2)
		}
		return nil
	})

	// frozen thaws: it gets alice's lines in order, from the first, with
	// gaps (one per time B resumed past what the stream had dropped). Line i
	// is stream sequence i+1, so every missing line must be in a range B
	// logged, and lost_total must count them all.
	var got []int
	for len(got) == 0 || got[len(got)-1] != n-1 {
		frozen.SetReadDeadline(time.Now().Add(ioTimeout))
		s, err := frozen.r.ReadString('\n')
		if err != nil {
			t.Fatalf("frozen: after %d lines: %v", len(got), err)
		}
		var i int
		fmt.Sscanf(s, "alice %d", &i)
		got = append(got, i)
	}
	var missing [][2]uint64 // sequence ranges
	for k := range got {
		prev := -1
		if k > 0 {
			prev = got[k-1]
		}
		switch {
		case got[k] <= prev:
			t.Fatalf("frozen: line %d after line %d", got[k], prev)
		case got[k] > prev+1:
			missing = append(missing, [2]uint64{uint64(prev + 2), uint64(got[k])})
		}
	}
	if len(missing) == 0 {
		t.Fatal("frozen missed nothing; want a gap (the stream retains less than was sent)")
	}
	if lost := b.metric(t, "echohub_backplane_lost_total"); int(lost) != n-len(got) {
		t.Errorf("node B: echohub_backplane_lost_total = %v; want %d (the lines frozen missed)", lost, n-len(got))
	}
	if diff := cmp.Diff(missing, b.logs.lostRanges(t)); diff != "" {
		t.Errorf("node B: ranges logged as lost (-missed +logged):\n%s", diff)
	}
	if got := b.closesTotal(); got != 0 {
		t.Errorf("node B: clients closed: %d; want 0 (frozen is alone: nobody to fall behind)", got)
	}
}

// TestBackplaneBadStart: serve with a backplane it cannot use stops with one
// clear line and exit code 1, having served nothing.
func TestBackplaneBadStart(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "nats://" + refused.Addr().String()
	refused.Close()
	plain := startNATS(t, natsOptions(t, false))
	js := startNATS(t, natsOptions(t, true))
	// A stream made by nodes with --framing len32.
	nc, err := nats.Connect(js.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	jsc, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	lenCfg := backplaneConfig("LEN32", js.url())
	lenCfg.framing = framingLen32
	if _, err := jsc.CreateStream(context.Background(), (&backplane{cfg: lenCfg}).streamConfig()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // the one stderr line must contain this
	}{
		{"unreachable", []string{"--backplane", deadURL}, "--backplane " + deadURL + ": nats: no servers available for connection"},
		{"password redacted", []string{"--backplane", strings.Replace(deadURL, "//", "//echohub:secret@", 1)},
			"--backplane " + strings.Replace(deadURL, "//", "//echohub:xxxxx@", 1) + ": nats: no servers available"},
		{"no jetstream", []string{"--backplane", plain.url()}, "--backplane " + plain.url() + ": JetStream is not enabled on the NATS server"},
		{"framing mismatch", []string{"--backplane", js.url(), "--backplane-stream", "LEN32"},
			"--backplane-stream LEN32: the stream's framing is len32; this node has --framing line"},
		{"bad url", []string{"--backplane", "localhost:4222"}, `--backplane: invalid URL "localhost:4222"`},
		{"bad stream", []string{"--backplane", js.url(), "--backplane-stream", "a.b"}, `--backplane-stream: invalid name "a.b"`},
		{"bad storage", []string{"--backplane", js.url(), "--backplane-storage", "disk"}, `--backplane-storage: unknown value "disk"`},
		{"bad replicas", []string{"--backplane", js.url(), "--backplane-replicas", "7"}, "--backplane-replicas: 7 is out of range (1 to 5)"},
		{"short max age", []string{"--backplane", js.url(), "--backplane-max-age", "1ms"}, "--backplane-max-age: 1ms is out of range"},
		{"small max bytes", []string{"--backplane", js.url(), "--backplane-max-bytes", "1KiB"}, "--backplane-max-bytes: 1024 is less than two largest messages"},
		{"zero buffer", []string{"--backplane", js.url(), "--backplane-buffer", "0"}, "--backplane-buffer: 0 is out of range"},
		{"zero window", []string{"--backplane", js.url(), "--backplane-window", "0"}, "--backplane-window: 0 is out of range"},
		{"stream without backplane", []string{"--backplane-stream", "X"}, "--backplane-stream: needs --backplane"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(context.Background(), "", append([]string{"serve", "--listen", "127.0.0.1:0"}, tc.args...)...)
			if code != 1 || stdout != "" {
				t.Errorf("exit code %d, stdout %q; want 1 and nothing", code, stdout)
			}
			if !strings.HasPrefix(stderr, "echohub: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr = %q; want one line \"echohub: ...%s...\"", stderr, tc.want)
			}
		})
	}
}

// TestBackplaneNATSRestartUnderLoad: NATS stops and comes back while alice
// floods, so publishes are in flight when it goes: they are sent again with
// their message ids, and bob still gets every line once, in order.
func TestBackplaneNATSRestartUnderLoad(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	cfg := backplaneConfig("LOAD", ns.url())
	cfg.bpStorage = "file"
	a, b := startNode(t, cfg), startNode(t, cfg)
	alice, bob := dial(t, a.addr, "alice"), dial(t, b.addr, "bob")
	a.waitClients(t, 1)
	b.waitClients(t, 1)

	const n = 3000
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			alice.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := io.WriteString(alice, line("alice", i, 32)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	expectLines(t, bob, "alice", 0, 100) // the flood is under way
	ns.restart(t)
	expectLines(t, bob, "alice", 100, n)
	if err := <-sent; err != nil {
		t.Fatalf("alice: write: %v", err)
	}
	expectNothing(t, bob, 200*time.Millisecond)
	if got := a.metric(t, "echohub_backplane_reconnects_total"); got < 1 {
		t.Errorf("node A: echohub_backplane_reconnects_total = %v; want at least 1", got)
	}
	if got := a.closesTotal() + b.closesTotal(); got != 0 {
		t.Errorf("clients closed: %d; want 0", got)
	}
}

// TestBackplaneShutdownDelivers: a node shutting down publishes what its
// readers read and delivers it back to its own clients before it closes them.
func TestBackplaneShutdownDelivers(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	a := startNode(t, backplaneConfig("DRAIN", ns.url()))
	alice, bob := dial(t, a.addr, "alice"), dial(t, a.addr, "bob")
	a.waitClients(t, 2)
	sendLines(t, alice, "alice", 0, 200)
	waitFor(t, 5*time.Second, func() error {
		if got := a.m.messagesReceived.Load(); got != 200 {
			return fmt.Errorf("messages read = %d; want 200", got)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- a.Shutdown(ctx) }()
	expectLines(t, bob, "alice", 0, 200)
	expectClosed(t, bob)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
}

// TestBackplaneFlags: the --backplane flags reach the config, from the
// command line or the environment, with the documented defaults.
func TestBackplaneFlags(t *testing.T) {
	parse := parseServeFlags
	type bp struct {
		URLs            []string
		Stream, Storage string
		Replicas        int
		MaxAge          time.Duration
		MaxBytes        int
		Buffer, Window  int
	}
	get := func(cfg config) bp {
		return bp{cfg.backplane, cfg.bpStream, cfg.bpStorage, cfg.bpReplicas, cfg.bpMaxAge, cfg.bpMaxBytes, cfg.bpBuffer, cfg.bpWindow}
	}
	if diff := cmp.Diff(bp{nil, "ECHOHUB", "memory", 1, time.Hour, 64 << 20, 256, 256}, get(parse(t))); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	got := get(parse(t, "--backplane", "nats://a:4222, tls://b:4222", "--backplane-stream", "CHAT", "--backplane-storage", "file",
		"--backplane-replicas", "3", "--backplane-max-age", "10m", "--backplane-max-bytes", "1GiB",
		"--backplane-buffer", "64", "--backplane-window", "32"))
	if diff := cmp.Diff(bp{[]string{"nats://a:4222", "tls://b:4222"}, "CHAT", "file", 3, 10 * time.Minute, 1 << 30, 64, 32}, got); diff != "" {
		t.Errorf("flags (-want +got):\n%s", diff)
	}
	t.Setenv("ECHOHUB_BACKPLANE", "nats://c:4222")
	t.Setenv("ECHOHUB_BACKPLANE_STREAM", "ENV")
	t.Setenv("ECHOHUB_BACKPLANE_WINDOW", "8")
	if got := get(parse(t)); got.Stream != "ENV" || got.Window != 8 || len(got.URLs) != 1 || got.URLs[0] != "nats://c:4222" {
		t.Errorf("env: %+v; want nats://c:4222, stream ENV, window 8", got)
	}
}

// lostRanges returns the sequence ranges of every "backplane messages lost"
// log line, checking that each line's count fits its range.
func (l *logBuffer) lostRanges(t *testing.T) [][2]uint64 {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var ranges [][2]uint64
	for line := range strings.Lines(l.buf.String()) {
		var raw struct {
			Message string `json:"message"`
			Lost    uint64 `json:"lost"`
			From    uint64 `json:"from_seq"`
			To      uint64 `json:"to_seq"`
		}
		if json.Unmarshal([]byte(line), &raw) != nil || raw.Message != "backplane messages lost: this node fell further behind than the stream retains" {
			continue
		}
		if raw.To-raw.From+1 != raw.Lost {
			t.Errorf("log: lost %d for sequences %d to %d", raw.Lost, raw.From, raw.To)
		}
		ranges = append(ranges, [2]uint64{raw.From, raw.To})
	}
	return ranges
}

// TestBackplaneShutdownNATSDown: a node shutting down while NATS is down
// cannot store what its readers hold; it gives up at --shutdown-timeout's
// deadline, logs how much it could not store, and leaves no goroutine behind.
func TestBackplaneShutdownNATSDown(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	a := startNode(t, backplaneConfig("DOWN", ns.url()))
	alice := dial(t, a.addr, "alice")
	a.waitClients(t, 1)
	ns.stop()
	waitFor(t, 5*time.Second, func() error {
		if code := a.readyz(t); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz = %d; want 503", code)
		}
		return nil
	})
	// One write: a few reads, so that all 20 fit the readers' hand-over
	// queue (publishQueue reads) while nothing takes from it.
	publishLines(t, alice, 20, 32)
	waitFor(t, 5*time.Second, func() error {
		if got := a.m.messagesReceived.Load(); got != 20 {
			return fmt.Errorf("messages read = %d; want 20", got)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := a.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown() = %v; want context.DeadlineExceeded", err)
	}
	expectClosed(t, alice)
	if !a.logs.has("backplane stopped before these read messages were stored") {
		t.Error("no log of the messages the backplane could not store")
	}
}

// TestBackplaneHalfClose: a client that half-closes still gets everything
// sent before it left, its own messages included (README), although these
// come back to its node through the stream only after it has closed its side.
func TestBackplaneHalfClose(t *testing.T) {
	ns := startNATS(t, natsOptions(t, true))
	cfg := backplaneConfig("HALF", ns.url())
	a, b := startNode(t, cfg), startNode(t, cfg)
	alice, carol := dial(t, a.addr, "alice"), dial(t, b.addr, "carol")
	a.waitClients(t, 1)
	b.waitClients(t, 1)
	sendLines(t, alice, "alice", 0, 3)
	if err := alice.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectLines(t, alice, "alice", 0, 3)
	expectClosed(t, alice)
	expectLines(t, carol, "alice", 0, 3)
}
