// Command entraredis shows Microsoft Entra ID authentication for go-redis at work and diagnoses a
// real Azure Cache for Redis or Azure Managed Redis.
//
// Usage:
//
//	entraredis demo  [flags]   token rotation under load, on loopback, with nothing installed
//	entraredis check [flags]   step-by-step diagnosis of a real cache, with a fix for each failure
//	entraredis token [JWT]     the claims of an access token (from stdin without an argument)
//
// Run "entraredis <command> -h" for a command's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // a check step, a demo command or a counter failed
	exitUsage  = 2 // bad flags or malformed input
)

func main() {
	// go-redis logs to stderr by default; the report says what matters, and its lines would
	// break the progress line.
	redis.SetLogger(quietLogger{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `entraredis: Microsoft Entra ID authentication for go-redis, shown and checked.

Usage:
  entraredis demo  [flags]   token rotation under load against a local Entra emulator (no Azure)
  entraredis check [flags]   diagnose a real Azure cache: token, TLS, AUTH, PING, SET/GET/DEL
  entraredis token [JWT]     print an access token's claims (reads stdin without an argument)

Run "entraredis <command> -h" for the flags of a command.
`

// run is the whole program; ctx ends on Ctrl-C. It returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], stdin, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "entraredis: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// newFlagSet returns a flag set that reports errors to stderr and never exits the process.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: entraredis %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; ok is false when the command must end with code.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	case err != nil:
		return exitUsage, false
	}
	return exitOK, true
}

// quietLogger discards go-redis's internal log.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
