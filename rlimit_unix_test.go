//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBinaryFileLimit runs the built binary under `ulimit -n 64` with
// --max-clients 100: once, the clients past the descriptor limit hung in the
// accept queue with no notice. Now serve warns once at start and lowers
// --max-clients to what fits, so every client past it gets the "server full"
// line. With --metrics-listen, the API's connection cap is kept aside too:
// idle API connections, up to and past the cap, cannot starve the hub.
func TestBinaryFileLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh for ulimit")
	}
	bin := buildBinary(t)
	for _, tc := range []struct {
		name    string
		args    []string
		apiIdle int // idle connections held open to the API first
		want    int // --max-clients in effect
	}{
		{"hub only", nil, 0, 64 - fileReserve},
		{"with the API", []string{"--metrics-listen", "127.0.0.1:0"}, defaultAPILimits().maxConns + 8, 64 - fileReserve - defaultAPILimits().maxConns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-c", `ulimit -n 64 && exec "$0" "$@"`, bin, "serve", "--listen", "127.0.0.1:0",
				"--max-clients", "100", "--log-format", "json"}, tc.args...)
			cmd := exec.Command("sh", args...)
			stderr := newPipeWriter(t)
			cmd.Stderr = stderr.File
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cmd.Process.Kill()
				cmd.Wait()
			})
			addrs, warnings := startupLog(t, stderr, len(tc.args) > 0)
			if len(warnings) != 1 {
				t.Fatalf("%d warnings at start: %v; want one, about the open file limit", len(warnings), warnings)
			}
			w := warnings[0]
			if w["message"] != "max clients lowered to fit the open file limit; raise it (ulimit -n) for more" ||
				w["file_limit"] != 64.0 || w["wanted"] != 100.0 || w["max_clients"] != float64(tc.want) {
				t.Errorf("warning %v; want max clients lowered from 100 to %d for file_limit 64", w, tc.want)
			}

			for range tc.apiIdle {
				dial(t, addrs["metrics listening"], "idle")
			}
			admitted := make([]*testConn, tc.want)
			for i := range admitted {
				admitted[i] = dial(t, addrs["listening"], fmt.Sprintf("c%d", i))
			}
			// The accept loop takes connections in order, so every one
			// from here on finds the server full, and is told so.
			notice := fmt.Sprintf("echohub: server full (max %d clients); closing\n", tc.want)
			for i := range 20 {
				late := dial(t, addrs["listening"], fmt.Sprintf("late%d", i))
				expectLine(t, late, notice)
				expectClosed(t, late)
			}
			// Every admitted client is served: each reads its own line
			// back, after at most everyone else's.
			var wg sync.WaitGroup
			for i, c := range admitted {
				wg.Go(func() {
					own := fmt.Sprintf("from c%d\n", i)
					c.send(t, own)
					for range len(admitted) {
						if c.readLine(t) == own {
							return
						}
					}
					t.Errorf("%s: own line not read back", c.name)
				})
			}
			wg.Wait()
		})
	}
}

// startupLog reads serve's JSON log lines until it is listening (and, with
// api, until the API is too), and returns the addresses and the warnings
// logged before. It then keeps draining, so that logging never blocks.
func startupLog(t *testing.T, p *pipeWriter, api bool) (map[string]string, []map[string]any) {
	t.Helper()
	want := []string{"listening"}
	if api {
		want = append(want, "metrics listening")
	}
	addrs := make(map[string]string)
	var warnings []map[string]any
	deadline := time.AfterFunc(ioTimeout, func() { p.Close() })
	defer deadline.Stop()
	for len(addrs) < len(want) && p.lines.Scan() {
		var e map[string]any
		if json.Unmarshal(p.lines.Bytes(), &e) != nil {
			t.Fatalf("log line %q is not JSON", p.lines.Text())
		}
		if e["level"] == "warn" {
			warnings = append(warnings, e)
		}
		if msg, _ := e["message"].(string); strings.Contains(strings.Join(want, "|"), msg) && e["addr"] != nil {
			addrs[msg] = e["addr"].(string)
		}
	}
	if len(addrs) < len(want) {
		t.Fatalf("log lines with an addr: got %v; want %q", addrs, want)
	}
	go func() {
		for p.lines.Scan() {
		}
	}()
	if _, err := net.ResolveTCPAddr("tcp", addrs["listening"]); err != nil {
		t.Fatalf("listening on %q: %v", addrs["listening"], err)
	}
	return addrs, warnings
}
