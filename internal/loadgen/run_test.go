package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRun(t *testing.T) {
	for _, framing := range []string{Line, Len32} {
		t.Run(framing, func(t *testing.T) {
			t.Parallel()
			opts := testOptions(startFakeHub(t, framing, nil, 0), framing)
			opts.JSON = true
			var out bytes.Buffer
			res, err := Run(context.Background(), opts, &out)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkClean(t, res)
			if res.Published < 2000 || res.Published > 2500 {
				t.Errorf("published %d messages in 1.2s at 2000 msgs/s", res.Published)
			}
			var fields map[string]any
			if err := json.Unmarshal(out.Bytes(), &fields); err != nil {
				t.Fatalf("--json output %q: %v", out.String(), err)
			}
			for _, k := range []string{"published_msgs_per_s", "delivered_msgs_per_s", "delivered_mb_per_s",
				"latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_p999_us", "latency_max_us",
				"lost", "duplicates", "reordered", "disconnected_subs", "expected_deliveries", "received_deliveries"} {
				if _, ok := fields[k]; !ok {
					t.Errorf("--json output has no %q: %s", k, out.String())
				}
			}
			var decoded Result
			if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(res, decoded); diff != "" {
				t.Errorf("--json output differs from the result (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunUnthrottled(t *testing.T) {
	t.Parallel()
	opts := testOptions(startFakeHub(t, Line, nil, 0), Line)
	opts.Rate, opts.Duration, opts.Warmup = 0, 300*time.Millisecond, 0
	var out bytes.Buffer
	res, err := Run(context.Background(), opts, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkClean(t, res)
	for _, want := range []string{"unthrottled", "0 lost", "0/3 subs disconnected", "from the written send time"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table has no %q:\n%s", want, out.String())
		}
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	serverConfig, roots := testCert(t)
	opts := testOptions(startFakeHub(t, Len32, serverConfig, 0), Len32)
	opts.Duration, opts.Warmup = 300*time.Millisecond, 0
	opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1", RootCAs: roots}
	res, err := Run(context.Background(), opts, io.Discard)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkClean(t, res)

	// Without the CA the hub's certificate is unknown.
	opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1"}
	if _, err := Run(context.Background(), opts, io.Discard); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Run without the CA = %v; want a certificate error", err)
	}
}

func TestDisconnect(t *testing.T) {
	t.Parallel()
	// The hub closes every subscriber after 100 messages; the publishers go on.
	opts := testOptions(startFakeHub(t, Line, nil, 100), Line)
	opts.Duration, opts.Warmup = 300*time.Millisecond, 0
	res, err := Run(context.Background(), opts, io.Discard)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.DisconnectedSubs != 3 || !strings.HasPrefix(res.Error, "subscriber ") || res.Received >= res.Expected {
		t.Errorf("Run = %+v; want 3 disconnected subscribers and fewer deliveries than expected", res)
	}
	if ok, why := res.sustained(time.Hour); ok || !strings.Contains(why, "disconnected") {
		t.Errorf("sustained() = %v, %q; want false, disconnected", ok, why)
	}
}

func TestDialClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Run(context.Background(), testOptions(addr, Line), io.Discard)
	if want := fmt.Sprintf("bench: dial %s: connection refused", addr); err == nil || err.Error() != want {
		t.Fatalf("Run(%s) = %v; want %q", addr, err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Run(%s) = %v; want errors.Is ECONNREFUSED", addr, err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	opts := testOptions(startFakeHub(t, Line, nil, 0), Line)
	opts.Duration = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, opts, io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v; want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned %v after its context ended", d-300*time.Millisecond)
	}
}
