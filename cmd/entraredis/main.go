// Command entraredis shows Microsoft Entra ID authentication for go-redis at work and diagnoses a
// real Azure Cache for Redis or Azure Managed Redis.
//
// Usage:
//
//	entraredis demo  [flags]   token rotation under load, on loopback, with nothing installed
//	entraredis check [flags]   step-by-step diagnosis of a real cache, with a fix for each failure
//	entraredis token [JWT]     the claims of an access token (from stdin without an argument)
//	entraredis version         the version of entraredis and of its main dependencies
//
// Run "entraredis help <command>" for a command's flags, "entraredis version" for the versions.
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
  entraredis demo    [--duration 30s] [--lifetime 5s] [--workers 8] [--progress 1s] [--outage D]
                     [--redis-server PATH] [--plain] [--metrics]
                     token rotation under load against a local Entra emulator (no Azure)
  entraredis check   [--host H] [--port 6380|10000] [--credential default|mi|workload|secret|cert|cli]
                     [--client-id ID] [--tenant-id ID] [--cert FILE] [--username OID]
                     [--watch D] [--every 1s] [--timeout 15s] [--ca-file FILE] [--insecure-skip-verify]
                     diagnose a real Azure cache: token, TLS, AUTH, PING, SET/GET/DEL
  entraredis token   [JWT | -]
                     print an access token's claims (reads stdin without an argument)
  entraredis version the version of entraredis and of its main dependencies
  entraredis help    [command]

Run "entraredis help <command>" for the flags of a command.
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
	case "version", "-version", "--version":
		return runVersion(args[1:], stdout, stderr)
	case "help":
		return runHelp(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "entraredis: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// runHelp prints the usage, or a command's usage and flags, on stdout.
func runHelp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0 || args[0] == "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case len(args) > 1:
		fmt.Fprintln(stderr, "entraredis help: give one command, e.g. \"entraredis help demo\"")
		return exitUsage
	}
	switch args[0] {
	case "demo", "check", "token", "version":
		// The command's own -h, written to stdout: asked for, it is not an error.
		return run(ctx, []string{args[0], "-h"}, nil, stdout, stdout)
	}
	fmt.Fprintf(stderr, "entraredis help: unknown command %q: the commands are demo, check, token, version\n", args[0])
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
