package resp

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Next stops at each frame's end and agrees with Feed on the frames, whatever the cuts.
func TestReplyScannerNext(t *testing.T) {
	stream := "+OK\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n:1\r\n$5\r\nhello\r\n|1\r\n+a\r\n+b\r\n*2\r\n:1\r\n$-1\r\n%1\r\n+k\r\n$3\r\nabc\r\n"
	var want []int // each frame's end, by FrameLen
	for at := 0; at < len(stream); {
		l, err := FrameLen([]byte(stream[at:]))
		require.NoError(t, err)
		require.NotZero(t, l)
		at += l
		want = append(want, at)
	}
	for cut := 1; cut <= len(stream); cut++ {
		var s ReplyScanner
		replies, pushes := 0, 0
		var ends []int
		at := 0
		for i := 0; i < len(stream); i += cut {
			p := []byte(stream[i:min(i+cut, len(stream))])
			for len(p) > 0 {
				used, done, push, err := s.Next(p)
				require.NoError(t, err)
				p = p[used:]
				at += used
				if done {
					ends = append(ends, at)
					if push {
						pushes++
					} else {
						replies++
					}
				}
			}
		}
		r, ps, mid, err := wholeReplies([]byte(stream))
		require.NoError(t, err)
		assert.False(t, mid)
		assert.Equal(t, r, replies, "cut %d", cut)
		assert.Equal(t, ps, pushes, "cut %d", cut)
		assert.Equal(t, want, ends, "cut %d: each frame's end", cut)
		assert.False(t, s.Mid())
	}
}
