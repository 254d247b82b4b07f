package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

const (
	// clientsDefaultLimit and clientsMaxLimit bound the rows of each list
	// in one /clients answer (?limit=N); the closed list never holds more
	// than closedRingSize anyway.
	clientsDefaultLimit = 100
	clientsMaxLimit     = closedRingSize
	// clientsChunk is how many closed rows /clients copies out of the ring
	// at a time: all it holds while a slow peer takes the answer.
	clientsChunk = 64
)

// A clientsQuery is what one /clients request asks for (docs/metrics.md).
type clientsQuery struct {
	limit        int    // most rows in each list
	after        uint64 // connected clients with a greater id
	closedBefore uint64 // closed rows older than this cursor; 0 = from the newest
}

// parseClientsQuery reads the ?limit, ?after and ?closed_before of a
// /clients request. Its errors name the parameter.
func parseClientsQuery(v url.Values) (clientsQuery, error) {
	q := clientsQuery{limit: clientsDefaultLimit}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > clientsMaxLimit {
			return q, fmt.Errorf("limit: %q is out of range (1 to %d)", s, clientsMaxLimit)
		}
		q.limit = n
	}
	for _, p := range []struct {
		name string
		dst  *uint64
	}{{"after", &q.after}, {"closed_before", &q.closedBefore}} {
		if s := v.Get(p.name); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return q, fmt.Errorf("%s: %q is not a cursor (want a number from an earlier answer)", p.name, s)
			}
			*p.dst = n
		}
	}
	return q, nil
}

// clients answers /clients: a page of the connected clients, by id, and a
// page of the last ones closed, newest first, each of at most ?limit rows,
// with the cursors of the next pages. No request builds an unbounded answer:
// rows are encoded one at a time straight to the connection, and a peer that
// does not read holds its handler for at most the API's write timeout, with
// at most limit client pointers and one chunk of closed rows.
func (a *httpAPI) clients(w http.ResponseWriter, r *http.Request) {
	q, err := parseClientsQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	conns, moreConns := a.s.clientsAfter(q.after, q.limit)
	w.Header().Set("Content-Type", "application/json")
	e := &rowEncoder{w: w, showAddr: a.s.cfg.clientsShowAddr}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetIndent("    ", "  ")

	var lastID uint64
	if len(conns) > 0 {
		lastID = conns[len(conns)-1].id
	}
	e.open(`{` + "\n" + `  "clients": [`)
	for i, c := range conns {
		e.row(c.info())
		conns[i] = nil // the client may close and be freed meanwhile
	}
	e.close()
	e.open(",\n" + `  "closed": [`)
	cursor, listed := q.closedBefore, 0
	rows := make([]clientInfo, 0, clientsChunk)
	for listed < q.limit && e.err == nil {
		rows, cursor = a.s.closed.page(rows[:0], cursor, min(clientsChunk, q.limit-listed))
		if len(rows) == 0 {
			break
		}
		for _, ci := range rows {
			e.row(ci)
		}
		listed += len(rows)
	}
	e.close()
	if moreConns {
		e.write(fmt.Sprintf(",\n  \"next_after\": %d", lastID))
	}
	if listed == q.limit && a.s.closed.holds(cursor) {
		e.write(fmt.Sprintf(",\n  \"next_closed_before\": %d", cursor))
	}
	e.write("\n}\n") // an error is the peer's: it went away or did not read in time
}

// clientsAfter returns at most n of s's connected clients with an id above
// after, by id, and whether more follow. It makes one pass over the registry
// under s.mu and keeps at most 2n+2 clients at any time, however many are
// connected.
func (s *server) clientsAfter(after uint64, n int) ([]*client, bool) {
	byID := func(x, y *client) int { return cmp.Compare(x.id, y.id) }
	keep := make([]*client, 0, 2*n+2)
	bound := uint64(math.MaxUint64) // once keep is pruned, a client above it cannot make the page
	s.mu.Lock()
	for c := range s.conns {
		if c.id <= after || c.id > bound {
			continue
		}
		if len(keep) == cap(keep) {
			slices.SortFunc(keep, byID)
			clear(keep[n+1:])
			keep = keep[:n+1] // the n+1 smallest: n to list, one to tell that more follow
			bound = keep[n].id
		}
		keep = append(keep, c)
	}
	s.mu.Unlock()
	slices.SortFunc(keep, byID)
	if len(keep) > n {
		clear(keep[n:])
		return keep[:n], true
	}
	return keep, false
}

// A rowEncoder writes the JSON of /clients to a response as it goes, one
// row at a time, indented as json.Encoder.SetIndent("", "  ") would. It
// stops writing at the first error.
type rowEncoder struct {
	w        io.Writer
	showAddr bool // --clients-show-addr
	buf      bytes.Buffer
	enc      *json.Encoder // encodes into buf
	rows     int           // rows in the array being written
	err      error
}

// write writes s unless an earlier write failed.
func (e *rowEncoder) write(s string) {
	if e.err == nil {
		_, e.err = io.WriteString(e.w, s)
	}
}

// open writes s, which opens an array.
func (e *rowEncoder) open(s string) {
	e.write(s)
	e.rows = 0
}

// row writes ci as the next element of the open array.
func (e *rowEncoder) row(ci clientInfo) {
	if e.err != nil {
		return
	}
	if !e.showAddr {
		ci.Remote = ""
	}
	e.buf.Reset()
	if e.rows == 0 {
		e.buf.WriteString("\n    ")
	} else {
		e.buf.WriteString(",\n    ")
	}
	e.enc.Encode(ci) // a clientInfo always encodes
	e.buf.Truncate(e.buf.Len() - 1)
	_, e.err = e.w.Write(e.buf.Bytes())
	e.rows++
}

// close writes the end of the open array.
func (e *rowEncoder) close() {
	if e.rows > 0 {
		e.write("\n  ]")
	} else {
		e.write("]")
	}
}
