package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/entraredis/entraredis/retry"
)

func ExamplePolicy_Do() {
	p := retry.Policy{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	attempts := 0
	err := p.Do(context.Background(), func(ctx context.Context) error {
		attempts++
		if attempts < 3 {
			return fmt.Errorf("read reply: %w", io.EOF) // worth another try
		}
		return nil
	})
	fmt.Println(attempts, err)

	attempts = 0
	err = p.Do(context.Background(), func(ctx context.Context) error {
		attempts++
		return retry.Permanent(errors.New("NOPERM this user has no permissions")) // retrying won't help
	})
	fmt.Println(attempts, err)
	// Output:
	// 3 <nil>
	// 1 NOPERM this user has no permissions
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
