package service

import (
	"context"
	"testing"
	"time"
)

// TestInflightDrainWaitsForOlderVersionsOnly: a sync under chain version 6
// waits for an update admitted under 5 and not for one under 6 or 7.
func TestInflightDrainWaitsForOlderVersionsOnly(t *testing.T) {
	var f inflight
	doneOld := f.enter(5)
	doneSame := f.enter(6)
	defer doneSame()
	defer f.enter(7)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.drainOlder(ctx, 5); err != nil {
		t.Fatalf("drain below 5 with nothing older running: %v", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- f.drainOlder(ctx, 6) }()
	select {
	case err := <-drained:
		t.Fatalf("drain below 6 returned (%v) while an update admitted under 5 runs", err)
	case <-time.After(50 * time.Millisecond):
	}
	doneOld()
	if err := <-drained; err != nil {
		t.Fatalf("drain below 6 after the old update finished: %v", err)
	}
	if n := f.olderThan(100); n != 2 {
		t.Fatalf("olderThan(100) = %d, want the 2 updates still running", n)
	}
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if err := f.drainOlder(short, 100); err == nil {
		t.Fatal("drain with running older updates and a cancelled context returned nil")
	}
}
