package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/entraredis/entraredis/retry"
)

// The waits of a retry loop: doubling from InitialBackoff up to MaxBackoff. Jitter -1 turns the
// randomness off to make the output stable; keep the default (half of each wait random) in a fleet.
func ExamplePolicy_Backoff() {
	p := retry.Policy{InitialBackoff: 250 * time.Millisecond, MaxBackoff: 2 * time.Second, Jitter: -1}
	for n := 1; n <= 5; n++ {
		fmt.Println(n, p.Backoff(n))
	}
	// Output:
	// 1 250ms
	// 2 500ms
	// 3 1s
	// 4 2s
	// 5 2s
}

func ExampleClassify() {
	for _, err := range []error{
		errors.New("ERR WRONGPASS invalid username-password pair"), // Azure, with an expired token
		fmt.Errorf("hook: %w", io.EOF),
		context.Canceled,
	} {
		fmt.Println(retry.Classify(err))
	}
	// Output:
	// auth
	// connection
	// other
}
