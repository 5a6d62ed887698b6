package resp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendRequest(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ping"}, "*1\r\n$4\r\nping\r\n"},
		{[]string{"set", "key", "hello"}, "*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nhello\r\n"},
		{[]string{"auth", "", "a\r\nb"}, "*3\r\n$4\r\nauth\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"},
		{nil, "*0\r\n"},
	} {
		got := AppendRequest([]byte("x"), tc.args...)
		assert.Equal(t, "x"+tc.want, string(got))
		args, n, err := SplitArgs(got[1:])
		require.NoError(t, err)
		assert.Equal(t, len(tc.want), n)
		require.Len(t, args, len(tc.args))
		for i := range args {
			assert.Equal(t, tc.args[i], string(args[i]))
		}
	}
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendRequest(buf[:0], "auth", "user", "token") })
	assert.Zero(t, allocs, "AppendRequest into a buffer large enough")
}

func TestSplitArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		args []string // nil with n > 0: an empty request
		n    int      // 0: incomplete
		err  error
	}{
		{"one", "*1\r\n$4\r\nPING\r\n", []string{"PING"}, 14, nil},
		{"then more", "*1\r\n$4\r\nPING\r\n*1", []string{"PING"}, 14, nil},
		{"binary", "*2\r\n$3\r\nget\r\n$3\r\n\x00\r\n\r\n", []string{"get", "\x00\r\n"}, 22, nil},
		{"empty request", "*0\r\n", nil, 4, nil},
		{"null request", "*-1\r\n", nil, 5, nil},
		{"incomplete header", "*2\r", nil, 0, nil},
		{"incomplete arg", "*2\r\n$3\r\nget\r\n$3\r\nke", nil, 0, nil},
		{"incomplete trail", "*1\r\n$3\r\nget\r", nil, 0, nil},
		{"inline", "PING\r\n", nil, 0, ErrMalformed},
		{"not a bulk", "*1\r\n+PING\r\n", nil, 0, ErrMalformed},
		{"null bulk", "*1\r\n$-1\r\n", nil, 0, ErrMalformed},
		{"bare LF", "*1\n$4\r\nPING\r\n", nil, 0, ErrMalformed},
		{"bad trail", "*1\r\n$4\r\nPINGxx", nil, 0, ErrMalformed},
		{"too many", "*1048577\r\n", nil, 0, ErrTooLarge},
		{"too long", "*1\r\n$536870913\r\n", nil, 0, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, n, err := SplitArgs([]byte(tc.in))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.n, n)
			require.Len(t, args, len(tc.args))
			for i := range args {
				assert.Equal(t, tc.args[i], string(args[i]))
			}
		})
	}
}

func TestKindOfName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Kind
	}{
		{"*2\r\n$4\r\nauth\r\n$1\r\nx\r\n", Auth},
		{"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\nx\r\n", Auth},
		{"*2\r\n$5\r\nHello\r\n$1\r\n3\r\n", Hello},
		{"*1\r\n$5\r\nmulti\r\n", Multi},
		{"*1\r\n$4\r\nexec\r\n", Exec},
		{"*1\r\n$7\r\ndiscard\r\n", Discard},
		{"*1\r\n$5\r\nreset\r\n", Reset},
		{"*2\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n", Subscribe},
		{"*2\r\n$10\r\npsubscribe\r\n$1\r\nc\r\n", PSubscribe},
		{"*2\r\n$10\r\nSSUBSCRIBE\r\n$1\r\nc\r\n", SSubscribe},
		{"*1\r\n$7\r\nmonitor\r\n", Monitor},
		{"*1\r\n$4\r\nping\r\n", Other},
		{"*1\r\n$11\r\nunsubscribe\r\n", Other},
		{"*1\r\n$4\r\nau", Other},  // the name is not whole
		{"*1\r\n$4\r\nauth", Auth}, // the name is: enough
		{"*0\r\n", Other},          // no command
		{"AUTH x\r\n", Other},      // inline: go-redis never writes one
		{"*1\r\n$04\r\nauth\r\n", Other},
		{"", Other},
	} {
		assert.Equal(t, tc.want, KindOf(Name([]byte(tc.in))), "%q", tc.in)
	}
	req := []byte("*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nhello\r\n")
	allocs := testing.AllocsPerRun(100, func() { _ = KindOf(Name(req)) })
	assert.Zero(t, allocs)
	assert.Equal(t, "set", string(Name(req)))
}

func TestAuthArgs(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		user, pass string
		ok         bool
	}{
		{[]string{"auth", "pass"}, "", "pass", true},
		{[]string{"AUTH", "user", "pass"}, "user", "pass", true},
		{[]string{"auth"}, "", "", false},
		{[]string{"auth", "a", "b", "c"}, "", "", false},
		{[]string{"hello", "3", "auth", "user", "pass"}, "user", "pass", true},
		{[]string{"hello", "3", "AUTH", "user", "pass", "setname", "n"}, "user", "pass", true},
		{[]string{"hello", "3", "setname", "n", "auth", "user", "pass"}, "user", "pass", true},
		{[]string{"hello", "3"}, "", "", false},
		{[]string{"hello", "3", "auth", "user"}, "", "", false},
		{[]string{"set", "auth", "x"}, "", "", false},
	} {
		user, pass, ok := AuthArgs(AppendRequest(nil, tc.args...))
		assert.Equal(t, tc.ok, ok, "%q", tc.args)
		assert.Equal(t, tc.user, string(user), "%q", tc.args)
		assert.Equal(t, tc.pass, string(pass), "%q", tc.args)
	}
	_, _, ok := AuthArgs([]byte(strings.TrimSuffix(string(AppendRequest(nil, "auth", "p")), "\n")))
	assert.False(t, ok, "incomplete")
}

// RequestLen agrees with SplitArgs on every prefix of a pipeline, without allocating.
func TestRequestLen(t *testing.T) {
	stream := append(AppendRequest(nil, "SET", "k", "value"), AppendRequest(nil, "get", "k")...)
	stream = append(stream, "*0\r\n"...)
	for i := range len(stream) + 1 {
		b := stream[:i]
		name, n, err := RequestLen(b)
		args, wn, werr := SplitArgs(b)
		require.Equal(t, werr, err, "%q", b)
		require.Equal(t, wn, n, "%q", b)
		if len(args) > 0 && n > 0 {
			assert.Equal(t, args[0], name)
		}
	}
	_, _, err := RequestLen([]byte("+OK\r\n"))
	assert.ErrorIs(t, err, ErrMalformed)
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _, _ = RequestLen(stream) }))
}

func FuzzRequestLen(f *testing.F) {
	f.Add(AppendRequest(nil, "auth", "u", "p"))
	f.Add([]byte("*2\r\n$3\r\nget\r\n$1\r\nk"))
	// RequestLen's one-load start, and what it must leave to the general parser.
	f.Add([]byte("*0\r\n$3\r\nget\r\n"))
	f.Add([]byte("*1\r\n$0\r\n\r\n"))
	f.Add([]byte("*1\r\n$-\r\nab\r\n"))
	f.Add(AppendRequest(nil, "a", "b", "c", "d", "e", "f", "g", "h", "i"))
	f.Add(AppendRequest(nil, "set", "key:000001", "0123456789"))
	f.Add(AppendRequest(nil, "a", "b", "c", "d", "e", "f", "g", "h", "i", "j"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, n, err := RequestLen(b)
		args, wn, werr := SplitArgs(b)
		if (err == nil) != (werr == nil) || n != wn || (n > 0 && len(args) > 0 && !bytes.Equal(name, args[0])) {
			t.Fatalf("RequestLen(%q) = %q, %d, %v; SplitArgs: %d, %v", b, name, n, err, wn, werr)
		}
	})
}
