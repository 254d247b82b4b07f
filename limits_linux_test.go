package main

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestLimitsKeepAlive reads the socket options of the server's side of a
// connection: --keepalive sets the idle time and the probe interval, with 3
// probes, and 0 turns keepalive off (Go turns it on by default).
func TestLimitsKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		keepalive time.Duration
		want      int // SO_KEEPALIVE
		idle, cnt int // TCP_KEEPIDLE (and TCP_KEEPINTVL), TCP_KEEPCNT
	}{
		{keepalive: 30 * time.Second, want: 1, idle: 30, cnt: 3},
		{keepalive: 0, want: 0},
	} {
		t.Run(tc.keepalive.String(), func(t *testing.T) {
			cfg := testConfig()
			cfg.keepalive = tc.keepalive
			ts := startTestServer(t, cfg)
			alice := dial(t, ts.addr, "alice")
			sc := ts.serverSide(t, alice)
			raw, err := sc.conn.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			opts := map[string][2]int{ // name: {level, option}
				"SO_KEEPALIVE":  {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
				"TCP_KEEPIDLE":  {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
				"TCP_KEEPINTVL": {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
				"TCP_KEEPCNT":   {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
			}
			got := make(map[string]int)
			var getErr error
			if err := raw.Control(func(fd uintptr) {
				for name, o := range opts {
					v, err := syscall.GetsockoptInt(int(fd), o[0], o[1])
					if err != nil {
						getErr = err
					}
					got[name] = v
				}
			}); err != nil || getErr != nil {
				t.Fatalf("getsockopt: %v, %v", err, getErr)
			}
			if got["SO_KEEPALIVE"] != tc.want {
				t.Errorf("--keepalive %v: SO_KEEPALIVE = %d; want %d", tc.keepalive, got["SO_KEEPALIVE"], tc.want)
			}
			if tc.want == 1 && (got["TCP_KEEPIDLE"] != tc.idle || got["TCP_KEEPINTVL"] != tc.idle || got["TCP_KEEPCNT"] != tc.cnt) {
				t.Errorf("--keepalive %v: TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT = %d, %d, %d; want %d, %d, %d",
					tc.keepalive, got["TCP_KEEPIDLE"], got["TCP_KEEPINTVL"], got["TCP_KEEPCNT"], tc.idle, tc.idle, tc.cnt)
			}
		})
	}
}
