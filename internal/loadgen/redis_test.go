package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startRedis runs a redis-server on a free loopback port, without
// persistence, and returns its URL. It skips t when redis-server is not
// installed (CI installs it: apt-get install -y redis-server), and stops the
// server in t.Cleanup.
func startRedis(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // a port another process could take before redis-server does: rare, and the test then fails
	cmd := exec.Command(path, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, 5*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("redis-server exited: %v\n%s", err, log.String())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("redis-server not listening: %w", err)
		}
		return c.Close()
	})
	return "redis://" + addr
}

// TestRedis drives Redis pub/sub with the accounting of a TCP hub: every
// subscriber gets every message of every publisher, in order.
func TestRedis(t *testing.T) {
	url := startRedis(t)
	for _, framing := range []string{Line, Len32} {
		t.Run(framing, func(t *testing.T) {
			checkTargetRun(t, url, framing, kindRedis)
		})
	}
	t.Run("unthrottled", func(t *testing.T) {
		opts := testOptions(url, Line)
		opts.Rate, opts.Duration, opts.Warmup = 0, 300*time.Millisecond, 0
		res, err := Run(context.Background(), opts, new(bytes.Buffer))
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkClean(t, res)
	})
}

func TestRedisRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "redis://" + ln.Addr().String()
	ln.Close()
	_, err = Run(context.Background(), testOptions(url, Line), new(bytes.Buffer))
	if err == nil || !strings.HasPrefix(err.Error(), "bench: ") || !strings.Contains(err.Error(), url+": ") || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Run(%s) = %v; want bench: ... %s: ... and ECONNREFUSED", url, err, url)
	}
}
