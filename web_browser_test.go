package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// These tests drive the live page in headless Chromium (the Debian package
// chromium). Without it they skip, except under CI=true, where they fail:
// CI installs it, and a skipped browser test does not count.

// browserTimeout bounds each browser test as a whole.
const browserTimeout = time.Minute

// chromiumPath returns the Chromium binary, or "" if there is none.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts headless Chromium with a fresh profile and returns the
// context of its first tab. Cleanup closes the browser.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	bin := chromiumPath()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium not found: CI must install it (apt-get install -y chromium)")
		}
		t.Skip("chromium not found; install the chromium package to run the browser tests")
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(bin),
		// chromedp makes a fresh user data directory, and removes it.
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1100, 720),
		// No connections but to the test server.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, browserTimeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// A testPage is the live page in one browser tab.
type testPage struct {
	ctx     context.Context
	name    string
	dialogs *atomic.Int32 // JavaScript dialogs (alert) the page opened
}

// openPage opens url in a new tab of browser and waits until the page is
// connected.
func openPage(t *testing.T, browser context.Context, url, name string) *testPage {
	t.Helper()
	p := &testPage{name: name, dialogs: new(atomic.Int32)}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithListener(func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			p.dialogs.Add(1)
		}
	}))
	t.Cleanup(cancel)
	p.ctx = ctx
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: open %s: %v", name, url, err)
	}
	p.waitState(t, "open")
	return p
}

// waitState waits until the page shows connection state want.
func (p *testPage) waitState(t *testing.T, want string) {
	t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.WaitVisible(chromedp.CSS(`#state[data-state="`+want+`"]`))); err != nil {
		t.Fatalf("%s: wait for state %s: %v", p.name, want, err)
	}
}

// lines returns the text of every line the page shows, oldest first.
func (p *testPage) lines(t *testing.T) []string {
	t.Helper()
	got, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#log .line"), (e) => e.textContent)`))
	if err != nil {
		t.Fatalf("%s: read lines: %v", p.name, err)
	}
	return got
}

// waitLines waits until the page shows exactly want, and fails with what it
// shows instead.
func (p *testPage) waitLines(t *testing.T, want []string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		if got := p.lines(t); !slices.Equal(got, want) {
			return fmt.Errorf("%s shows %q; want %q", p.name, got, want)
		}
		return nil
	})
}

// send types text into the page's send box and presses Enter.
func (p *testPage) send(t *testing.T, text string) {
	t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.SendKeys(chromedp.CSS("#msg"), text+"\r")); err != nil {
		t.Fatalf("%s: send %q: %v", p.name, text, err)
	}
	// The box is emptied when the line is sent; wait for that, so that
	// sends from one page keep their order.
	waitFor(t, 5*time.Second, func() error {
		if v, err := chromedp.Run(p.ctx, chromedp.Value(chromedp.CSS("#msg"))); err != nil || v != "" {
			return fmt.Errorf("%s: send box holds %q, %v", p.name, v, err)
		}
		return nil
	})
}

// TestBrowserStream: two pages and one TCP client share one hub: a TCP line
// appears on both pages, lines typed into either page reach the TCP client
// and the other page, in one order everywhere, and markup in a message is
// shown as text and never run.
func TestBrowserStream(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws") + "/"
	browser := newBrowser(t)
	alice := dial(t, ts.addr, "alice")
	one := openPage(t, browser, base, "page one")
	two := openPage(t, browser, base, "page two")
	ts.waitClients(t, 3)

	alice.send(t, "hello from tcp\n")
	want := []string{"hello from tcp"}
	one.waitLines(t, want)
	two.waitLines(t, want)
	expectLine(t, alice, "hello from tcp\n")

	// Interleaved senders: everyone sees the hub's one order.
	one.send(t, "typed in page one")
	alice.send(t, "tcp again\n")
	two.send(t, "typed in page two")
	one.send(t, "page one again")
	var order []string
	for range 4 {
		order = append(order, strings.TrimSuffix(alice.readLine(t), "\n"))
	}
	if !slices.Contains(order, "typed in page one") || !slices.Contains(order, "typed in page two") {
		t.Fatalf("alice read %q; want both pages' lines", order)
	}
	want = append(want, order...)
	one.waitLines(t, want)
	two.waitLines(t, want)

	xss := `<img src=x onerror=alert(1)>`
	alice.send(t, xss+"\n")
	want = append(want, xss)
	one.waitLines(t, want)
	two.waitLines(t, want)
	if imgs, err := chromedp.Run(one.ctx, chromedp.Evaluate[int](`document.querySelectorAll("img").length`)); err != nil || imgs != 0 {
		t.Errorf("page one has %d img elements, %v; want 0: a message is text", imgs, err)
	}
	two.send(t, `<b>bold?</b> & "quotes"`)
	expectLine(t, alice, "<img src=x onerror=alert(1)>\n")
	expectLine(t, alice, `<b>bold?</b> & "quotes"`+"\n")
	want = append(want, `<b>bold?</b> & "quotes"`)
	one.waitLines(t, want)
	for _, p := range []*testPage{one, two} {
		if n := p.dialogs.Load(); n != 0 {
			t.Errorf("%s opened %d JavaScript dialogs; want none", p.name, n)
		}
	}
}

// TestBrowserReconnect: the page shows that the server went away, and
// reconnects on its own once it is back on the same address.
func TestBrowserReconnect(t *testing.T) {
	cfg := testWebConfig()
	ts := startTestServer(t, cfg)
	host := startTestWeb(t, ts)
	browser := newBrowser(t)
	p := openPage(t, browser, "http://"+host+"/", "page")
	ts.waitClients(t, 1)

	// Stop the server as serve does, web listener included.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown() = %v; want nil", err)
	}
	for _, f := range ts.afterShutdown {
		f()
	}
	ts.afterShutdown = nil
	p.waitState(t, "closed")
	if state, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS("#state"))); err != nil || !strings.Contains(state, shutdownCloseText) {
		t.Errorf("page state = %q, %v; want it to show %q", state, err, shutdownCloseText)
	}

	cfg.webListen = host
	ts2 := startTestServer(t, cfg)
	startTestWeb(t, ts2)
	p.waitState(t, "open")
	ts2.waitClients(t, 1)
	alice := dial(t, ts2.addr, "alice")
	ts2.waitClients(t, 2)
	alice.send(t, "after the restart\n")
	waitFor(t, 10*time.Second, func() error {
		if got := p.lines(t); len(got) == 0 || got[len(got)-1] != "after the restart" {
			return fmt.Errorf("page shows %q; want it to end with the new line", got)
		}
		return nil
	})
}

// TestBrowserLoad: under a stream of thousands of messages per second the
// page keeps a bounded number of lines, shows the newest, and reports the
// rate. With ECHOHUB_PAGE_PNG set it saves a screenshot there (docs/page.png
// is made so).
func TestBrowserLoad(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws") + "/"
	browser := newBrowser(t)
	p := openPage(t, browser, base, "page")
	pub := dial(t, ts.addr, "pub")
	ts.waitClients(t, 2)
	go func() { // pub reads its own stream, so it is never the slow one
		buf := make([]byte, 64<<10)
		for {
			if _, err := pub.Read(buf); err != nil {
				return
			}
		}
	}()

	// About 5,000 msgs/s for 3 s, in bursts of 50 lines every 10 ms; for
	// the screenshot, for 20 s, so that the chart has some history.
	const burst = 50
	bursts := 300
	if os.Getenv("ECHOHUB_PAGE_PNG") != "" {
		bursts = 2000
	}
	sent := 0
	var rate string
	var shot []byte
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for b := range bursts {
		var sb strings.Builder
		for i := range burst {
			n := b*burst + i
			fmt.Fprintf(&sb, "%s sensor=%02d seq=%06d temp=%.1f ok\n", time.Now().UTC().Format("15:04:05.000"), n%17, n, 20+float64(n%50)/10)
		}
		pub.send(t, sb.String())
		sent += burst
		if b == bursts-30 { // under load, with a full second of it behind
			var err error
			if rate, err = chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS("#rate"))); err != nil {
				t.Fatal(err)
			}
			if shot, err = chromedp.Run(p.ctx, chromedp.CaptureScreenshot()); err != nil {
				t.Fatalf("screenshot: %v", err)
			}
		}
		<-tick.C
	}
	// The chart's busiest second: the rate shown just now may be of a
	// second in which a busy machine starved the page.
	peak, err := chromedp.Run(p.ctx, chromedp.Evaluate[int](`Math.max(...perSecond)`))
	if err != nil || peak < 100 {
		t.Errorf("page's busiest second under load: %d msgs/s, %v; want at least 100", peak, err)
	}
	if _, err := png.Decode(bytes.NewReader(shot)); err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if name := os.Getenv("ECHOHUB_PAGE_PNG"); name != "" {
		if err := os.WriteFile(name, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lastSeq := fmt.Sprintf("seq=%06d", sent-1)
	waitFor(t, 10*time.Second, func() error {
		got := p.lines(t)
		if len(got) == 0 || !strings.Contains(got[len(got)-1], lastSeq) {
			return fmt.Errorf("page shows %d lines; want the last to have %s", len(got), lastSeq)
		}
		if len(got) > 1000 {
			return fmt.Errorf("page shows %d lines; want at most 1000", len(got))
		}
		return nil
	})
	t.Logf("page rate shows %s msgs/s near the end, %d at the busiest second", rate, peak)
}
