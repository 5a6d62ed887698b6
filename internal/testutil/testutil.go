// Package testutil holds the few helpers every package's tests share.
package testutil

import (
	"bytes"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Slow skips the calling test under -short. go test -short ./... is the edit loop and stays under a
// minute; make test runs everything. Call it first in tests that take seconds (token rotations,
// outages, end-to-end runs).
func Slow(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("slow: skipped under -short; make test runs it")
	}
}

// GoRedisNewest skips the calling test unless it is built with -tags goredis_newest (make test's
// pass against the newest go-redis). For tests of go-redis's own streaming re-authentication (the
// provider alone, a hook with its guard off): before v9.23 it races with commands on the
// connection and can stall the pool, so it is tested against the newest go-redis only. why says
// what the test needs.
func GoRedisNewest(tb testing.TB, why string) {
	tb.Helper()
	if !goRedisNewest {
		tb.Skip("needs the newest go-redis (make test-newest, -tags goredis_newest): " + why)
	}
}

// WaitGoroutines waits, with a deadline, until no more goroutines run than base, and fails the test
// with a dump of them if some never end. (Not require.Eventually: its condition runs on a goroutine
// of its own.)
func WaitGoroutines(tb testing.TB, base int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			tb.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckGoroutines makes the test fail if goroutines started during it outlive its cleanups.
func CheckGoroutines(tb testing.TB) {
	base := runtime.NumGoroutine()
	tb.Cleanup(func() { WaitGoroutines(tb, base) })
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers, such as a log handler.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
