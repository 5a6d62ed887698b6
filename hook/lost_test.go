package hook

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// failingPing is an answering fake whose socket fails the guard's keep-alive PING.
type failingPing struct{ *answering }

func (f failingPing) Write(b []byte) (int, error) {
	if name, l, _ := resp.RequestLen(b); l == len(b) && strings.EqualFold(string(name), "ping") {
		return 0, errors.New("broken pipe")
	}
	return f.answering.Write(b)
}

// TestConnLostInBackgroundCounted: an idle connection whose keep-alive PING fails is retired and
// closed by the guard: it counts in Stats.ConnsRetired (it used to vanish from every counter).
func TestConnLostInBackgroundCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource(t, 24*time.Hour)
		h := newHook(src, &Options{KeepAlive: 2 * time.Minute})
		defer h.Close()
		a := &answering{fakeConn: newFakeConn()}
		f := failingPing{a}
		c := h.g.wrap(f, nil)
		defer c.Close()
		writeAuth(t, c, testOID, src.token())
		readExactly(t, c, "+OK\r\n")
		require.Zero(t, h.Stats().ConnsRetired)
		time.Sleep(3 * time.Minute) // past KeepAlive: the guard PINGs, and the write fails
		synctest.Wait()
		assert.Equal(t, uint64(1), h.Stats().ConnsRetired)
	})
}
