package mgmtdclient

import "testing"

func TestAdvertisedMetricsAddress(t *testing.T) {
	for _, c := range []struct{ bound, control, want string }{
		{"127.0.0.1:7390", "10.0.0.5:7300", "127.0.0.1:7390"},        // a concrete host stays
		{"[::]:7390", "10.0.0.5:7300", "10.0.0.5:7390"},              // wildcard: the control host
		{"0.0.0.0:7390", "node1.example:7300", "node1.example:7390"}, // names work too
		{":7390", "10.0.0.5:7300", "10.0.0.5:7390"},
		{"[::]:7390", "0.0.0.0:7300", "[::]:7390"}, // nothing better known
		{"", "10.0.0.5:7300", ""},                  // no metrics
	} {
		if got := AdvertisedMetricsAddress(c.bound, c.control); got != c.want {
			t.Errorf("AdvertisedMetricsAddress(%q, %q) = %q, want %q", c.bound, c.control, got, c.want)
		}
	}
}
