package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWebPage: / is the page, with a Content-Security-Policy that allows its
// own inline script and nothing from elsewhere; /stats has the figures it
// shows.
func TestWebPage(t *testing.T) {
	cfg := testWebConfig()
	cfg.framing = framingLen32
	ts, url := startWeb(t, cfg)
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	dialWS(t, url, "alice", nil)
	dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)

	code, body := httpGet(t, base+"/")
	if code != http.StatusOK || body != string(pageHTML) {
		t.Errorf("GET / = %d, %d bytes; want 200 and the page", code, len(body))
	}
	csp := pageCSP(pageHTML)
	if strings.Count(csp, "'sha256-") != 2 || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP = %q; want one hash each for the script and the style, and nothing unsafe", csp)
	}
	for _, ref := range []string{"http://", "https://", "//cdn", "src=\"", "@import"} {
		if strings.Contains(string(pageHTML), ref) {
			t.Errorf("the page contains %q; it must fetch nothing from elsewhere", ref)
		}
	}
	if code, _ := httpGet(t, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing = %d; want 404", code)
	}

	code, body = httpGet(t, base+"/stats")
	var got webStats
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil {
		t.Fatalf("GET /stats = %d, %q, %v; want 200 and JSON", code, body, err)
	}
	want := webStats{Clients: 2, WebSocketClients: 1, Framing: "len32", MaxMessage: cfg.maxMessage}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /stats (-want +got):\n%s", diff)
	}
}
