package resp

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// whole marks a case whose input is one frame.
const whole = -1

// frameCases are whole frames (want > 0: the frame is the first want bytes), incomplete ones
// (want 0) and refused ones (err). Every scanner test reuses them.
var frameCases = []struct {
	name string
	in   string
	want int
	err  error
}{
	{"simple", "+OK\r\n", 5, nil},
	{"simple then more", "+OK\r\n+PONG\r\n", 5, nil},
	{"error", "-ERR WRONGPASS invalid username-password pair\r\n", whole, nil},
	{"integer", ":-12\r\n", 6, nil},
	{"null", "_\r\n", 3, nil},
	{"double", ",3.14\r\n", 7, nil},
	{"boolean", "#t\r\n", 4, nil},
	{"big number", "(3492890328409238509324850943850943825024385\r\n", whole, nil},
	{"empty simple", "+\r\n", 3, nil},
	{"bulk", "$5\r\nhello\r\n", 11, nil},
	{"bulk with CRLF inside", "$4\r\n\r\n\r\n\r\n", 10, nil},
	{"empty bulk", "$0\r\n\r\n", 6, nil},
	{"null bulk", "$-1\r\n", 5, nil},
	{"blob error", "!21\r\nSYNTAX invalid syntax\r\n", 28, nil},
	{"verbatim", "=15\r\ntxt:Some string\r\n", 22, nil},
	{"array", "*2\r\n$3\r\nfoo\r\n:1\r\n", 17, nil},
	{"empty array", "*0\r\n", 4, nil},
	{"null array", "*-1\r\n", 5, nil},
	{"nested", "*2\r\n*1\r\n+a\r\n*0\r\n", 16, nil},
	{"map", "%1\r\n+key\r\n:1\r\n", 14, nil},
	{"set", "~2\r\n+a\r\n+b\r\n", 12, nil},
	{"push", ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", 33, nil},
	{"attribute belongs to the next value", "|1\r\n+a\r\n+b\r\n:1\r\n", 16, nil},
	{"attribute before a push", "|1\r\n+a\r\n+b\r\n>1\r\n+x\r\n", 20, nil},
	{"empty attribute", "|0\r\n+OK\r\n", 9, nil},
	{"attribute inside an array", "*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n", whole, nil},
	{"attribute alone is incomplete", "|1\r\n+a\r\n+b\r\n", 0, nil},
	{"streamed string", "$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n", whole, nil},
	{"streamed string, no chunks", "$?\r\n;0\r\n", 8, nil},
	{"streamed array", "*?\r\n:1\r\n$1\r\nx\r\n.\r\n", 18, nil},
	{"streamed set, empty", "~?\r\n.\r\n", 7, nil},
	{"streamed map", "%?\r\n+a\r\n:1\r\n.\r\n", 15, nil},
	{"streamed inside counted", "*1\r\n*?\r\n.\r\n", 11, nil},

	{"empty input", "", 0, nil},
	{"half line", "+O", 0, nil},
	{"CR without LF yet", "+OK\r", 0, nil},
	{"bulk missing bytes", "$5\r\nhel", 0, nil},
	{"bulk missing CRLF", "$5\r\nhello", 0, nil},
	{"bulk missing LF", "$5\r\nhello\r", 0, nil},
	{"array missing element", "*2\r\n:1\r\n", 0, nil},
	{"streamed string missing end", "$?\r\n;1\r\na\r\n", 0, nil},
	{"streamed array missing end", "*?\r\n:1\r\n", 0, nil},
	{"unknown type, line incomplete", "x", 0, nil},

	{"bare LF", "+OK\n", 0, ErrMalformed},
	{"CR inside a line", "+O\rK\r\n", 0, ErrMalformed},
	{"LF alone", "\n", 0, ErrMalformed},
	{"empty line", "\r\n", 0, ErrMalformed},
	{"unknown type", "x\r\n", 0, ErrMalformed},
	{"end marker outside a stream", ".\r\n", 0, ErrMalformed},
	{"chunk outside a stream", ";0\r\n", 0, ErrMalformed},
	{"bulk not ended by CRLF", "$2\r\nabc\r\n", 0, ErrMalformed},
	{"bulk ended by LF CR", "$1\r\na\n\r", 0, ErrMalformed},
	{"length with plus", "$+1\r\na\r\n", 0, ErrMalformed},
	{"length with leading zero", "$01\r\na\r\n", 0, ErrMalformed},
	{"minus zero", "*-0\r\n", 0, ErrMalformed},
	{"minus two", "$-2\r\n", 0, ErrMalformed},
	{"null map", "%-1\r\n", 0, ErrMalformed},
	{"null blob error", "!-1\r\n", 0, ErrMalformed},
	{"empty length", "*\r\n", 0, ErrMalformed},
	{"streamed push", ">?\r\n.\r\n", 0, ErrMalformed},
	{"streamed blob error", "!?\r\n;0\r\n", 0, ErrMalformed},
	{"end marker with content", "*?\r\n.x\r\n", 0, ErrMalformed},
	{"end marker between key and value", "%?\r\n+a\r\n.\r\n", 0, ErrMalformed},
	{"chunk not a chunk", "$?\r\n+a\r\n", 0, ErrMalformed},
	{"bulk too large", "$536870913\r\n", 0, ErrTooLarge},
	{"chunk too large", "$?\r\n;536870913\r\n", 0, ErrTooLarge},
	{"aggregate too large", "*268435457\r\n", 0, ErrTooLarge},
	{"huge number", "*" + strings.Repeat("9", 40) + "\r\n", 0, ErrTooLarge},
	{"unknown type, long line", "0100000000000000000000000\r\n", 0, ErrMalformed},
	{"huge number with junk", "*" + strings.Repeat("9", 40) + "x\r\n", 0, ErrMalformed},
	{"too deep", strings.Repeat("*1\r\n", MaxDepth+1) + ":1\r\n", 0, ErrTooLarge},
	{"too deep with attributes", strings.Repeat("|0\r\n", MaxDepth+1) + ":1\r\n", 0, ErrTooLarge},
	{"error after incomplete nothing: malformed element", "*2\r\n:1\r\nx\r\n", 0, ErrMalformed},
}

func TestFrameLen(t *testing.T) {
	deepest := strings.Repeat("*1\r\n", MaxDepth) + ":1\r\n"
	n, err := FrameLen([]byte(deepest))
	require.NoError(t, err, "nesting at the limit is fine")
	require.Equal(t, len(deepest), n)

	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := FrameLen([]byte(tc.in))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			want := tc.want
			if want == whole {
				want = len(tc.in)
			}
			require.Equal(t, want, n)
			// No prefix of a frame is a frame or an error.
			for k := range want {
				n, err := FrameLen([]byte(tc.in[:k]))
				require.NoError(t, err, "prefix %q", tc.in[:k])
				require.Zero(t, n, "prefix %q", tc.in[:k])
			}
		})
	}
}

func TestPayload(t *testing.T) {
	for _, tc := range []struct {
		in   string
		typ  byte
		want string
	}{
		{"+OK\r\n", '+', "OK"},
		{"-ERR no\r\n", '-', "ERR no"},
		{":42\r\n", ':', "42"},
		{"$5\r\nhello\r\n", '$', "hello"},
		{"$0\r\n\r\n", '$', ""},
		{"$-1\r\n", '_', ""},
		{"*-1\r\n", '_', ""},
		{"_\r\n", '_', ""},
		{"*1\r\n+a\r\n", '*', ""},
		{">1\r\n+a\r\n", '>', ""},
		{"|1\r\n+a\r\n+b\r\n+OK\r\n", '+', "OK"},
		{"|1\r\n+a\r\n+b\r\n|0\r\n>1\r\n+x\r\n", '>', ""},
		{"$?\r\n;1\r\na\r\n;0\r\n", '$', ""},
		{"", 0, ""},
		{"$5\r\nhel", 0, ""},
		{"|1\r\n+a\r\n", 0, ""},
	} {
		typ, p := Payload([]byte(tc.in))
		assert.Equal(t, string(tc.typ), string(typ), "%q", tc.in)
		assert.Equal(t, tc.want, string(p), "%q", tc.in)
		assert.Equal(t, typ, TypeOf([]byte(tc.in)))
	}
}

func TestFrameLenAllocs(t *testing.T) {
	frame := []byte("|1\r\n+a\r\n+b\r\n*3\r\n$5\r\nhello\r\n%1\r\n+k\r\n:1\r\n$?\r\n;1\r\na\r\n;0\r\n")
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := FrameLen(frame); n != len(frame) || err != nil {
			t.Fatal(n, err)
		}
	})
	t.Logf("FrameLen: %.0f allocations", allocs)
	assert.Zero(t, allocs)
}

// repliesByFrameLen is Replies one frame at a time, as the guard counted before Replies.
func repliesByFrameLen(b []byte) (replies, n int) {
	for n < len(b) {
		l, err := FrameLen(b[n:])
		if l == 0 || err != nil {
			break
		}
		if typ := b[n]; typ != '>' && (typ != '|' || TypeOf(b[n:n+l]) != '>') {
			replies++
		}
		n += l
	}
	return replies, n
}

func TestReplies(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		replies, n int
	}{
		{"empty", "", 0, 0},
		{"one", "$-1\r\n", 1, 5},
		{"pipeline", "+OK\r\n$5\r\nhello\r\n:1\r\n-ERR x\r\n", 4, 28},
		{"push apart", ">2\r\n+a\r\n+b\r\n+OK\r\n", 1, 17},
		{"attribute on a push", "|1\r\n+k\r\n+v\r\n>1\r\n+a\r\n+OK\r\n", 1, 25},
		{"attribute on a reply", "|1\r\n+k\r\n+v\r\n:1\r\n", 1, 16},
		{"stops at a part", "+OK\r\n$5\r\nhel", 1, 5},
		{"stops at a malformed frame", "+OK\r\n@x\r\n+OK\r\n", 1, 5},
		{"aggregate", "*2\r\n$3\r\nfoo\r\n:1\r\n+OK\r\n", 2, 22},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, n := Replies([]byte(tc.in))
			assert.Equal(t, tc.replies, r)
			assert.Equal(t, tc.n, n)
		})
	}
}

// FuzzReplies: Replies counts as FrameLen does frame by frame.
func FuzzReplies(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, _ uint64) {
		r, n := Replies(b)
		wr, wn := repliesByFrameLen(b)
		if r != wr || n != wn {
			t.Fatalf("%q: Replies %d, %d; frame by frame %d, %d", b, r, n, wr, wn)
		}
	})
}

func TestOne(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"+OK\r\n", true}, {"$-1\r\n", true},
		{"$5\r\nhello\r\n", false}, // not among the 5-byte ones: Replies measures it
		{"+OK\r\n+OK\r\n", false}, {"+OK\r", false}, {"+OK\n\n", false}, {"$-1\r\r", false}, {"-OK\r\n", false},
		{"$-2\r\n", false}, {"+Ok\r\n", false}, {":1\r\n", false}, {"", false},
	} {
		assert.Equal(t, tc.want, One([]byte(tc.in)), "%q", tc.in)
	}
}

// FuzzOne: what One accepts is one whole reply to Replies.
func FuzzOne(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, _ uint64) {
		if !One(b) {
			return
		}
		if r, n := Replies(b); r != 1 || n != len(b) {
			t.Fatalf("One(%q), but Replies %d, %d", b, r, n)
		}
	})
}
