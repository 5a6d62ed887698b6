package entratest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		kind  byte
		str   string
		elems []string
	}{
		{name: "simple", in: "+OK\r\n", kind: '+', str: "OK"},
		{name: "error", in: "-ERR x\r\n", kind: '-', str: "ERR x"},
		{name: "integer", in: ":42\r\n", kind: ':', str: "42"},
		{name: "bulk", in: "$5\r\nhe\r\no\r\n", kind: '$', str: "he\r\no"},
		{name: "null bulk", in: "$-1\r\n", kind: '$'},
		{name: "null", in: "_\r\n", kind: '_'},
		{name: "double", in: ",3.14\r\n", kind: ','},
		{name: "boolean", in: "#t\r\n", kind: '#'},
		{name: "big number", in: "(123456789012345678901234567890\r\n", kind: '('},
		{name: "verbatim", in: "=15\r\ntxt:Some string\r\n", kind: '='},
		{name: "blob error", in: "!21\r\nSYNTAX invalid syntax\r\n", kind: '!'},
		{name: "array", in: "*2\r\n$4\r\npong\r\n$1\r\nx\r\n", kind: '*', elems: []string{"pong", "x"}},
		{name: "nested array", in: "*2\r\n*1\r\n:1\r\n$1\r\nx\r\n", kind: '*', elems: []string{"", "x"}},
		{name: "null array", in: "*-1\r\n", kind: '*'},
		{name: "map", in: "%2\r\n+a\r\n:1\r\n+b\r\n*0\r\n", kind: '%'},
		{name: "set", in: "~2\r\n+a\r\n+b\r\n", kind: '~'},
		{name: "push", in: ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\np\r\n", kind: '>', elems: []string{"message", "ch", "p"}},
		{name: "attribute then value", in: "|1\r\n+key\r\n+val\r\n:7\r\n", kind: ':', str: "7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A second reply follows, to prove the frame ends where it should.
			r := bufio.NewReader(strings.NewReader(tt.in + "+NEXT\r\n"))
			rp, err := readReply(r)
			require.NoError(t, err)
			assert.Equal(t, tt.in, string(rp.raw))
			assert.Equal(t, string(tt.kind), string(rp.kind))
			if tt.str != "" {
				assert.Equal(t, tt.str, string(rp.str))
			}
			if tt.elems != nil {
				var got []string
				for _, e := range rp.elems {
					got = append(got, string(e))
				}
				assert.Equal(t, tt.elems, got)
			}
			next, err := readReply(r)
			require.NoError(t, err)
			assert.Equal(t, "+NEXT\r\n", string(next.raw))
			_, err = readReply(r)
			assert.ErrorIs(t, err, io.EOF, "a clean end between replies")
		})
	}
}

func TestReadReplyErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{name: "truncated bulk", in: "$5\r\nab", want: io.ErrUnexpectedEOF},
		{name: "truncated array", in: "*2\r\n:1\r\n", want: io.ErrUnexpectedEOF},
		{name: "unknown type", in: "?x\r\n", want: errProtocol},
		{name: "bad length", in: "$x\r\n", want: errProtocol},
		{name: "negative length", in: "*-2\r\n", want: errProtocol},
		{name: "empty line", in: "\r\n", want: errProtocol},
		{name: "too deep", in: strings.Repeat("*1\r\n", maxNesting+2) + ":1\r\n", want: errProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readReply(bufio.NewReader(strings.NewReader(tt.in)))
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestReadCommand(t *testing.T) {
	in := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nv\r\nv\r\n\r\nping  hello\r\n*0\r\n*1\r\n$4\r\nQUIT\r\n"
	r := bufio.NewReader(strings.NewReader(in))
	var got [][]string
	for {
		c, err := readCommand(r)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		var args []string
		for _, a := range c.args {
			args = append(args, string(a))
		}
		got = append(got, args)
		// raw is the command as an array, whatever form it came in.
		again, err := readCommand(bufio.NewReader(bytes.NewReader(c.raw)))
		require.NoError(t, err)
		assert.Equal(t, c.args, again.args)
	}
	assert.Equal(t, [][]string{{"SET", "k", "v\r\nv"}, {"ping", "hello"}, {"QUIT"}}, got)
}

// The readers face whatever a client or server sends: never a panic, and a reply read whole is
// exactly a prefix of the input.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "%1\r\n+a\r\n_\r\n", "|1\r\n+a\r\n+b\r\n#f\r\n", "$-1\r\n", ">2\r\n+a\r\n*0\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rp, err := readReply(bufio.NewReader(bytes.NewReader(in)))
		if err == nil && !bytes.HasPrefix(in, rp.raw) {
			t.Fatalf("raw %q is not a prefix of the input", rp.raw)
		}
	})
}

func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{"*1\r\n$4\r\nPING\r\n", "AUTH a b\r\n", "*2\r\n$4\r\nAUTH\r\n$0\r\n\r\n", "*-1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := readCommand(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return
		}
		again, err := readCommand(bufio.NewReader(bytes.NewReader(c.raw)))
		if err != nil || len(again.args) != len(c.args) {
			t.Fatalf("raw does not read back: %v", err)
		}
	})
}
