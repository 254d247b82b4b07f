package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startNATS runs a nats-server in-process on 127.0.0.1 and a random port,
// and returns its URL. It shuts down in t.Cleanup.
func startNATS(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready within 5s")
	}
	return s.ClientURL()
}

// TestNATS drives NATS core pub/sub with the accounting of a TCP hub: every
// subscriber gets every message of every publisher, in order.
func TestNATS(t *testing.T) {
	for _, framing := range []string{Line, Len32} {
		t.Run(framing, func(t *testing.T) {
			t.Parallel()
			url := startNATS(t)
			checkTargetRun(t, url, framing, kindNATS)
		})
	}
}

// TestNATSNodes spreads the subscribers over two servers of a NATS cluster,
// and probes reach the second server's subscribers through the route. One
// publisher: NATS core keeps each publisher's order, but with publishers on
// both servers each subscriber may see its own interleaving (seen here: 3 of
// 4 subscribers diverged), which the order check reports and this test
// cannot assert either way.
func TestNATSNodes(t *testing.T) {
	t.Parallel()
	cluster := func(port int, routes string) *server.Server {
		o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true}
		o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = "bench", "127.0.0.1", port
		if routes != "" {
			o.Routes = server.RoutesFromStr(routes)
		}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		if !s.ReadyForConnections(5 * time.Second) {
			t.Fatal("nats-server not ready within 5s")
		}
		return s
	}
	a := cluster(server.RANDOM_PORT, "")
	b := cluster(server.RANDOM_PORT, fmt.Sprintf("nats://%s", a.ClusterAddr()))
	waitFor(t, 5*time.Second, func() error {
		if a.NumRoutes() == 0 || b.NumRoutes() == 0 {
			return errors.New("the two nats-servers do not route to each other")
		}
		return nil
	})
	opts := testOptions(a.ClientURL()+","+b.ClientURL(), Line)
	opts.Subs, opts.Pubs, opts.Duration, opts.Warmup = 4, 1, 500*time.Millisecond, 100*time.Millisecond
	res, err := Run(context.Background(), opts, new(bytes.Buffer))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkClean(t, res)
	if res.Nodes != 2 || res.DivergentSubs != 0 || res.OrderChecked != res.Published {
		t.Errorf("Run over a 2-server cluster: %d nodes, %d divergent over %d of %d messages; want 2, 0 over all",
			res.Nodes, res.DivergentSubs, res.OrderChecked, res.Published)
	}
}

func TestNATSRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + ln.Addr().String()
	ln.Close()
	_, err = Run(context.Background(), testOptions(url, Line), new(bytes.Buffer))
	if want := "bench: dial " + url + ": "; err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Run(%s) = %v; want %q... and ECONNREFUSED", url, err, want)
	}
}
