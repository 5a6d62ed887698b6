package entratest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// ErrInjected is matched (errors.Is) by every failure the fault injection produced.
var ErrInjected = errors.New("entratest: injected failure")

// ErrClosed is returned by an Issuer used after Close.
var ErrClosed = errors.New("entratest: issuer is closed")

// FaultError is the error GetToken returns while a fault is injected. Over HTTP the same fault is an
// answer with StatusCode (and a Retry-After header for 429).
type FaultError struct {
	StatusCode int
	RetryAfter time.Duration // set for 429: how long the emulator asks clients to wait
}

func (e *FaultError) Error() string {
	s := fmt.Sprintf("entratest: injected identity provider failure: HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// Is makes errors.Is(err, ErrInjected) true.
func (e *FaultError) Is(target error) bool { return target == ErrInjected }

// faults is the fault-injection state shared by GetToken and the HTTP endpoints, so a test sets it
// once whichever way its code reaches the issuer.
type faults struct {
	mu         sync.Mutex
	next       int
	nextStatus int
	until      time.Time
	forStatus  int
	latency    time.Duration
}

func normStatus(status int) int {
	if status < 400 || status > 599 {
		return http.StatusInternalServerError
	}
	return status
}

func (f *faults) failNext(n, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next, f.nextStatus = max(n, 0), normStatus(status)
}

func (f *faults) failFor(d time.Duration, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.until, f.forStatus = time.Now().Add(d), normStatus(status)
}

func (f *faults) setLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = max(d, 0)
}

// take consumes one request's worth of faults: the latency to add and the failure, if any.
func (f *faults) take() (time.Duration, *FaultError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var fe *FaultError
	switch now := time.Now(); {
	case f.next > 0:
		f.next--
		fe = &FaultError{StatusCode: f.nextStatus}
		if fe.StatusCode == http.StatusTooManyRequests {
			fe.RetryAfter = time.Second
		}
	case now.Before(f.until):
		fe = &FaultError{StatusCode: f.forStatus}
		if fe.StatusCode == http.StatusTooManyRequests {
			// Whole seconds, rounded up, as a Retry-After header carries them.
			fe.RetryAfter = f.until.Sub(now).Truncate(time.Second) + time.Second
		}
	}
	return f.latency, fe
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
