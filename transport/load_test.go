package transport

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRawTCPBaseline(t *testing.T) {
	for _, mode := range []RawMode{RawRead, RawWrite} {
		r, err := RawTCPBaseline(testCtx(t), mode, 64<<10, 2, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if r.Ops == 0 || r.Bytes != r.Ops*64<<10 || r.MBps <= 0 || r.P50 <= 0 || r.P50 > r.P99 || r.InFlight != 2 {
			t.Fatalf("%v: implausible result %+v", mode, r)
		}
		t.Logf("raw tcp %v: %v", mode, r)
	}
}

func TestRunLoadStopsOnErrorAndCountsOps(t *testing.T) {
	boom := errors.New("boom")
	_, err := RunLoad(context.Background(), LoadSpec{Size: 1, InFlight: 3, Duration: time.Minute},
		func(context.Context, int) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the op's error", err)
	}
	r, err := RunLoad(context.Background(), LoadSpec{Size: 10, InFlight: 4, MaxOps: 100},
		func(context.Context, int) error { return nil })
	if err != nil || r.Ops != 100 || r.Bytes != 1000 {
		t.Fatalf("got %+v, %v; want exactly 100 ops", r, err)
	}
	if _, err := RunLoad(context.Background(), LoadSpec{InFlight: 0, MaxOps: 1}, nil); err == nil {
		t.Fatal("zero in-flight accepted")
	}
}
