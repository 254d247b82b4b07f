package loadgen

// The order check of a run on several nodes. Each publisher's own order is
// checked by every subscriber as it reads (sequence, in sub.go); across
// publishers there is no order to expect but one: every subscriber should
// see the messages in the same interleaving, as they do on one echohub
// node. With several nodes each subscriber records the (publisher, seq) of
// every message in arrival order, up to orderBudget deliveries in all, and
// the run compares those records at the end.

// orderKey packs a message's publisher and sequence number into one word.
// Sequence numbers past 2^48 would wrap, far beyond any run.
func orderKey(pub uint16, seq uint64) uint64 { return uint64(pub)<<48 | seq&(1<<48-1) }

// splitKey unpacks an orderKey.
func splitKey(k uint64) (pub int, seq uint64) { return int(k >> 48), k & (1<<48 - 1) }

// orderCheck compares the order in which the connected subscribers received
// the messages that every one of them received (and recorded). It returns
// how many of them saw those messages in another order than the first
// connected subscriber, and how many messages the comparison covered. Loss
// is not divergence: a message one subscriber missed is left out for all.
// It runs after close.
func (r *run) orderCheck() (divergent int, checked int64) {
	var subs []*subscriber
	for _, s := range r.subs {
		if s.orderMax > 0 && !s.disconnected {
			subs = append(subs, s)
		}
	}
	if len(subs) < 2 {
		return 0, 0
	}
	// How many subscribers recorded each message, by publisher and seq.
	seen := make([][]int32, len(r.pubs))
	for i, p := range r.pubs {
		seen[i] = make([]int32, p.sent)
	}
	for _, s := range subs {
		for _, k := range s.order {
			if p, q := splitKey(k); p < len(seen) && q < uint64(len(seen[p])) {
				seen[p][q]++
			}
		}
	}
	common := func(k uint64) bool {
		p, q := splitKey(k)
		return p < len(seen) && q < uint64(len(seen[p])) && seen[p][q] == int32(len(subs))
	}
	var first []uint64
	for _, k := range subs[0].order {
		if common(k) {
			first = append(first, k)
		}
	}
	for _, s := range subs[1:] {
		i := 0
		for _, k := range s.order {
			if !common(k) {
				continue
			}
			if i >= len(first) || k != first[i] {
				divergent++
				break
			}
			i++
		}
	}
	return divergent, int64(len(first))
}
