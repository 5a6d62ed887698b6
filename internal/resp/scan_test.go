package resp

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wholeReplies parses a stream whole with FrameLen: the frames it holds, replies and pushes apart,
// whether it ends inside a frame, and the error that stops it.
func wholeReplies(b []byte) (replies, pushes int, mid bool, err error) {
	for len(b) > 0 {
		n, err := FrameLen(b)
		if err != nil {
			return replies, pushes, false, err
		}
		if n == 0 {
			return replies, pushes, true, nil
		}
		if TypeOf(b[:n]) == '>' {
			pushes++
		} else {
			replies++
		}
		b = b[n:]
	}
	return replies, pushes, false, nil
}

// feedReplies feeds b to a new ReplyScanner in pieces cut at cuts (increasing offsets).
func feedReplies(b []byte, cuts []int) (replies, pushes int, mid bool, err error) {
	var s ReplyScanner
	prev := 0
	for _, c := range append(cuts, len(b)) {
		r, p, err := s.Feed(b[prev:c])
		replies, pushes = replies+r, pushes+p
		if err != nil {
			return replies, pushes, false, err
		}
		prev = c
	}
	return replies, pushes, s.Mid(), nil
}

// checkReplies compares the scanner, fed in pieces of every size from 1 to 8, and cut once at
// every offset, with FrameLen on the whole stream.
func checkReplies(t *testing.T, stream string) {
	t.Helper()
	b := []byte(stream)
	wr, wp, wmid, werr := wholeReplies(b)
	check := func(cuts []int) {
		t.Helper()
		r, p, mid, err := feedReplies(b, cuts)
		if werr != nil {
			require.ErrorIs(t, err, werr, "%q cut at %v", stream, cuts)
		} else {
			require.NoError(t, err, "%q cut at %v", stream, cuts)
			require.Equal(t, wmid, mid, "Mid, %q cut at %v", stream, cuts)
		}
		require.Equal(t, wr, r, "replies, %q cut at %v", stream, cuts)
		require.Equal(t, wp, p, "pushes, %q cut at %v", stream, cuts)
	}
	eachSplit(len(b), check)
}

// eachSplit calls check with the cuts of a stream of n bytes into pieces of every size from 1 to
// 8, and into two pieces at every offset.
func eachSplit(n int, check func(cuts []int)) {
	for size := 1; size <= 8; size++ {
		var cuts []int
		for c := size; c < n; c += size {
			cuts = append(cuts, c)
		}
		check(cuts)
	}
	for c := range n {
		check([]int{c})
	}
}

func TestReplyScanner(t *testing.T) {
	var all strings.Builder
	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			checkReplies(t, tc.in)
			checkReplies(t, tc.in+tc.in)
			checkReplies(t, "+OK\r\n"+tc.in+">1\r\n+x\r\n")
		})
		if tc.err == nil && tc.want == whole {
			all.WriteString(tc.in)
		}
	}
	checkReplies(t, all.String())

	var s ReplyScanner
	r, p, err := s.Feed([]byte(">2\r\n+a\r\n+b\r\n|1\r\n+k\r\n+v\r\n>1\r\n+c\r\n|0\r\n*1\r\n>0\r\n+OK\r\n+O"))
	require.NoError(t, err)
	assert.Equal(t, 2, r, "the array holding a push and +OK")
	assert.Equal(t, 2, p, "the pushes, one with an attribute")
	assert.True(t, s.Mid())
	r, p, err = s.Feed([]byte("K\r\n"))
	require.NoError(t, err)
	assert.Equal(t, []int{1, 0}, []int{r, p})
	assert.False(t, s.Mid())

	_, _, err = s.Feed([]byte("x\r\n"))
	require.ErrorIs(t, err, ErrMalformed)
	_, _, err = s.Feed([]byte("+OK\r\n"))
	require.ErrorIs(t, err, ErrMalformed, "the stream lost its place for good")
}

func TestReplyScannerSkipsPayloads(t *testing.T) {
	// A bulk string's bytes are counted, not read: "\r\n" and type bytes inside don't confuse it.
	payload := strings.Repeat("+OK\r\n", 1000)
	stream := "$" + strconv.Itoa(len(payload)) + "\r\n" + payload + "\r\n"
	checkReplies(t, stream[:40]+stream[len(stream)-40:])
	var s ReplyScanner
	r, _, err := s.Feed([]byte(stream[:10]))
	require.NoError(t, err)
	require.Zero(t, r)
	r, _, err = s.Feed([]byte(stream[10:]))
	require.NoError(t, err)
	require.Equal(t, 1, r)
}

// wholeNames parses a stream of requests whole with SplitArgs: the names of its commands.
func wholeNames(b []byte) (names []string, err error) {
	for len(b) > 0 {
		args, n, err := SplitArgs(b)
		if err != nil || n == 0 {
			return names, err
		}
		if len(args) > 0 {
			name := args[0]
			names = append(names, string(name[:min(len(name), 32)]))
		}
		b = b[n:]
	}
	return names, nil
}

func feedNames(b []byte, cuts []int) (names []string, mid bool, err error) {
	var s RequestScanner
	prev := 0
	visit := func(name []byte) { names = append(names, string(name)) }
	for _, c := range append(cuts, len(b)) {
		if err := s.Feed(b[prev:c], visit); err != nil {
			return names, false, err
		}
		prev = c
	}
	return names, s.Mid(), nil
}

// checkNames compares the scanner, fed in pieces, with SplitArgs on the whole stream. The scanner
// may name one command more: the last, whose name is read but not the rest.
func checkNames(t *testing.T, stream string) {
	t.Helper()
	b := []byte(stream)
	want, werr := wholeNames(b)
	check := func(cuts []int) {
		t.Helper()
		names, _, err := feedNames(b, cuts)
		if werr != nil {
			require.ErrorIs(t, err, werr, "%q cut at %v", stream, cuts)
		} else {
			require.NoError(t, err, "%q cut at %v", stream, cuts)
		}
		require.GreaterOrEqual(t, len(names), len(want), "%q cut at %v", stream, cuts)
		require.LessOrEqual(t, len(names), len(want)+1, "%q cut at %v", stream, cuts)
		require.Equal(t, want, append([]string(nil), names[:len(want)]...), "%q cut at %v", stream, cuts)
	}
	eachSplit(len(b), check)
}

func TestRequestScanner(t *testing.T) {
	long := strings.Repeat("n", 40)
	pipeline := string(AppendRequest(AppendRequest(AppendRequest(nil, "MULTI"), "incr", "counter"), "exec"))
	for _, tc := range []struct {
		name   string
		stream string
		names  []string
		err    error
	}{
		{"pipeline", pipeline, []string{"MULTI", "incr", "exec"}, nil},
		{"empty requests", "*0\r\n*-1\r\n" + pipeline, []string{"MULTI", "incr", "exec"}, nil},
		{"long name cut", string(AppendRequest(nil, long, "x")), []string{long[:32]}, nil},
		{"empty name", "*1\r\n$0\r\n\r\n", []string{""}, nil},
		{"name known, rest not yet", "*2\r\n$3\r\nget\r\n$5\r\nab", []string{"get"}, nil},
		{"inline", "PING\r\n", nil, ErrMalformed},
		{"bare LF", "*1\r\n$4\n", nil, ErrMalformed},
		{"CR in a length line", "*1\r\n$\r4\r\nping\r\n", nil, ErrMalformed},
		{"CR without LF", "*1\r\n$4\rping\r\n", nil, ErrMalformed},
		{"length line of 24 digits", "*1\r\n$" + strings.Repeat("0", 20) + "1234\r\n", nil, ErrMalformed},
		{"bad trail", "*1\r\n$4\r\nPINGxy", nil, ErrMalformed},
		{"reply in the request stream", "*1\r\n+OK\r\n", nil, ErrMalformed},
		{"too many arguments", "*1048577\r\n", nil, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names, _, err := feedNames([]byte(tc.stream), nil)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.names, names)
			checkNames(t, tc.stream)
			checkNames(t, tc.stream+tc.stream)
		})
	}
	var s RequestScanner
	require.NoError(t, s.Feed([]byte("*1\r\n$4\r\nping\r\n*1"), func([]byte) {}))
	assert.True(t, s.Mid())
	require.NoError(t, s.Feed([]byte("\r\n$4\r\nping\r\n"), func([]byte) {}))
	assert.False(t, s.Mid())
}

func TestScannersAllocs(t *testing.T) {
	replies := []byte("+OK\r\n$5\r\nhello\r\n*2\r\n:1\r\n%1\r\n+k\r\n|0\r\n>1\r\n+v\r\n")
	var rs ReplyScanner
	a := testing.AllocsPerRun(100, func() {
		if _, _, err := rs.Feed(replies); err != nil {
			t.Fatal(err)
		}
	})
	var qs RequestScanner
	req := AppendRequest(nil, "set", "key", "hello")
	n := 0
	visit := func(name []byte) { n += len(name) }
	b := testing.AllocsPerRun(100, func() {
		if err := qs.Feed(req, visit); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations per Feed: ReplyScanner %.0f, RequestScanner %.0f", a, b)
	assert.Zero(t, a)
	assert.Zero(t, b)
}
