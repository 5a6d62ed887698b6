package main

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// The token command reads a token from stdin (here a malformed one) and never echoes it, not even
// in an error.
func Example_token() {
	code := run(context.Background(), []string{"token"}, strings.NewReader("header.payload"), os.Stdout, os.Stdout)
	fmt.Println("exit status", code)
	// Output:
	// entraredis token: not a JWT access token (jwtutil: malformed token: has 2 segments, want 3): pass the access token itself, three base64url segments separated by dots
	// exit status 2
}
