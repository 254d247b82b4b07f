package main

import "testing"

func TestCloseReasons(t *testing.T) {
	rs := closeReasons()
	if len(rs) != int(numCloseReasons)-1 {
		t.Errorf("closeReasons() has %d reasons; want %d, every one but none", len(rs), numCloseReasons-1)
	}
	seen := make(map[string]bool)
	for _, r := range rs {
		if name := r.String(); name == "" || name == "none" || seen[name] {
			t.Errorf("closeReasons(): label %q for reason %d; want a unique name other than none", name, r)
		}
		seen[r.String()] = true
	}
}
