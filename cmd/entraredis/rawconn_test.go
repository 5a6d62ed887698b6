package main

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// respConn against a peer that answers with fixed bytes, one byte per write: replies are read
// whole whatever the pieces, and anything that is not RESP is errProtocol (the "not Redis" hint).
func TestRespConn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply string
		want  any
		err   error
	}{
		{"simple", "+PONG\r\n", "PONG", nil},
		{"bulk", "$5\r\nhe\r\no\r\n", "he\r\no", nil},
		{"integer", ":1\r\n", int64(1), nil},
		{"null", "$-1\r\n", nil, nil},
		{"error", "-NOAUTH Authentication required.\r\n", nil, &replyError{msg: "NOAUTH Authentication required."}},
		{"HTTP", "HTTP/1.1 400 Bad Request\r\n\r\n", nil, errProtocol},
		{"bad integer", ":x\r\n", nil, errProtocol},
		{"aggregate", "*1\r\n+a\r\n", nil, errProtocol},
		{"closed mid-reply", "$5\r\nhe", nil, io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			go func() {
				defer server.Close()
				buf := make([]byte, 64)
				if _, err := server.Read(buf); err != nil {
					return
				}
				for i := range len(tc.reply) {
					if _, err := server.Write([]byte{tc.reply[i]}); err != nil {
						return
					}
				}
			}()
			got, err := newRespConn(client, 5*time.Second).do("PING")
			switch want := tc.err.(type) {
			case nil:
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
			case *replyError:
				var re *replyError
				require.True(t, errors.As(err, &re), "%v", err)
				assert.Equal(t, want.msg, re.msg)
			default:
				require.ErrorIs(t, err, want)
			}
		})
	}
}
