package entratest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// The emulator keeps its own RESP reader, so that it checks the library independently; these tests
// tie the two together: on any input they find the same frame, or both wait for more, or both
// refuse it. Run the fuzz targets for a minute:
//	go test ./entratest -run '^$' -fuzz FuzzReplyAgainstCodec -fuzztime 60s -parallel 1

// sameReply compares readReply with resp.FrameLen on in; "" when they agree.
func sameReply(in []byte) string {
	n, ferr := resp.FrameLen(in)
	// A buffer larger than the input: bufio's line limit is the gateway's, not RESP's.
	rp, err := readReply(bufio.NewReaderSize(bytes.NewReader(in), len(in)+16))
	switch {
	case err == nil && (ferr != nil || n != len(rp.raw)):
		return "readReply read " + quote(rp.raw) + ", FrameLen " + result(n, ferr)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if n != 0 || ferr != nil {
			return "readReply wants more, FrameLen " + result(n, ferr)
		}
	case err != nil && !errors.Is(err, errProtocol):
		return "readReply: unexpected error " + err.Error()
	case err != nil && ferr == nil:
		return "readReply refuses it (" + err.Error() + "), FrameLen " + result(n, ferr)
	}
	return ""
}

// sameCommand compares readCommand with resp.SplitArgs on in, a stream of requests (an input the
// emulator would read as an inline command is out of the codec's scope and passes).
func sameCommand(in []byte) string {
	i := 0
	for { // readCommand skips the empty requests Redis ignores
		args, n, err := resp.SplitArgs(in[i:])
		if err != nil || n == 0 || len(args) > 0 {
			break
		}
		i += n
	}
	if len(in) == 0 || in[0] != '*' || i < len(in) && in[i] != '*' {
		return ""
	}
	args, n, serr := resp.SplitArgs(in[i:])
	cmd, err := readCommand(bufio.NewReaderSize(bytes.NewReader(in), len(in)+16))
	switch {
	case err == nil:
		if serr != nil || n != len(cmd.raw) || len(args) != len(cmd.args) {
			return "readCommand read " + quote(cmd.raw) + ", SplitArgs " + result(n, serr)
		}
		for k := range args {
			if !bytes.Equal(args[k], cmd.args[k]) {
				return "argument " + quote(args[k]) + " vs " + quote(cmd.args[k])
			}
		}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if n != 0 || serr != nil {
			return "readCommand wants more, SplitArgs " + result(n, serr)
		}
	case !errors.Is(err, errProtocol):
		return "readCommand: unexpected error " + err.Error()
	case serr == nil:
		return "readCommand refuses it (" + err.Error() + "), SplitArgs " + result(n, serr)
	}
	return ""
}

func quote(b []byte) string { return strings.TrimSpace(strings.ReplaceAll(string(b), "\r\n", `\r\n`)) }

func result(n int, err error) string {
	if err != nil {
		return "refuses it: " + err.Error()
	}
	if n == 0 {
		return "wants more"
	}
	return "finds a frame of " + strconv.Itoa(n) + " bytes"
}

// TestReaderAgreesWithCodec covers where the two readers disagreed before the emulator was fixed
// (and the codec written): attributes, line ends, lengths, RESP3 streamed types.
func TestReaderAgreesWithCodec(t *testing.T) {
	require.Equal(t, []int64{maxBulk, maxAggregate, maxArgs, maxNesting},
		[]int64{resp.MaxBulk, resp.MaxAggregate, resp.MaxArgs, resp.MaxDepth}, "the same limits")
	for _, in := range []string{
		"|1\r\n+a\r\n+b\r\n:1\r\n", "|1\r\n+a\r\n+b\r\n", "*1\r\n|0\r\n+a\r\n",
		"+OK\n", "+O\rK\r\n", "\r\n", "\n", "+OK\r", "$1\r\nab\r\n", "$1\r\na\n\r", "$1\r\na",
		"$01\r\na\r\n", "$+1\r\na\r\n", "*-0\r\n", "%-1\r\n", "!-1\r\n", "*-1\r\n", "$-1\r\n",
		"$?\r\n;2\r\nab\r\n;0\r\n", "$?\r\n;0\r\n", "$?\r\n+a\r\n", "!?\r\n;0\r\n",
		"*?\r\n:1\r\n.\r\n", "%?\r\n+a\r\n:1\r\n.\r\n", "%?\r\n+a\r\n.\r\n", "~?\r\n.x\r\n", ">?\r\n.\r\n",
		".\r\n", ";0\r\n", "*536870913\r\n", "$536870913\r\n",
		strings.Repeat("*1\r\n", maxNesting) + ":1\r\n", strings.Repeat("*1\r\n", maxNesting+1) + ":1\r\n",
		strings.Repeat("|0\r\n", maxNesting+1) + ":1\r\n",
	} {
		require.Empty(t, sameReply([]byte(in)), "%q", in)
	}
	for _, in := range []string{
		"*1\r\n$4\r\nPING\r\n", "*1\n$4\r\nPING\r\n", "*1\r\n$4\nPING\r\n", "*1\r\n$4\r\nPINGxy",
		"*0\r\n*1\r\n$1\r\na\r\n", "*-1\r\n*1\r\n$1\r\na\r\n", "*01\r\n$1\r\na\r\n", "*1\r\n$-1\r\n",
		"*1048577\r\n", "*1\r\n$536870913\r\n", "*2\r\n$1\r\na\r\n",
	} {
		require.Empty(t, sameCommand([]byte(in)), "%q", in)
	}
}

func FuzzReplyAgainstCodec(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "%1\r\n+a\r\n_\r\n", "|1\r\n+a\r\n+b\r\n#f\r\n",
		"$-1\r\n", ">2\r\n+a\r\n*0\r\n", "$?\r\n;1\r\na\r\n;0\r\n", "*?\r\n%?\r\n+k\r\n~?\r\n.\r\n.\r\n.\r\n", "!3\r\nERR\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if d := sameReply(in); d != "" {
			t.Fatalf("%q: %s", in, d)
		}
	})
}

func FuzzCommandAgainstCodec(f *testing.F) {
	for _, s := range []string{"*1\r\n$4\r\nPING\r\n", "*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n", "*0\r\n*1\r\n$0\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if d := sameCommand(in); d != "" {
			t.Fatalf("%q: %s", in, d)
		}
	})
}
