package hook

import (
	"bufio"
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
)

// testKey is one RSA key for every issuer of the package's tests: generating one takes a while.
func testKey(t testing.TB) *rsa.PrivateKey {
	keyOnce.Do(func() {
		var err error
		key, err = rsa.GenerateKey(cryptorand.Reader, 2048)
		if err != nil {
			panic(err)
		}
	})
	return key
}

// fakeHook is a hook for fake connections, which never answer the guard's own background
// requests: it does none.
func fakeHook(src source, o *Options) *Hook {
	h := newHook(src, o)
	h.g.manual = true
	return h
}

// authed returns a quiet hook (fakeHook) on src, closed by t.Cleanup, and a fake connection that
// authenticated with src's token as oid.
func authed(t *testing.T, src *fakeSource, o *Options, oid string) (*Hook, *fakeConn, *conn) {
	t.Helper()
	h := fakeHook(src, o)
	t.Cleanup(func() { h.Close() })
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	writeAuth(t, c, oid, src.token())
	reply(t, c, "+OK\r\n")
	return h, fc, c
}

// fakeConn records what is written and reads what a test queued. A Read with nothing queued
// fails after its deadline, or 5 s, so that a broken guard fails a test instead of hanging it.
// Its deadlines are real: a Read or Write whose deadline has lapsed fails with
// os.ErrDeadlineExceeded, as a socket's does; writeErr (set by a test) fails every Write.
type fakeConn struct {
	mu       sync.Mutex
	out      bytes.Buffer
	writes   int
	in       chan []byte
	closed   bool
	rd, wd   time.Time
	moved    chan struct{} // closed when the read deadline moves: a Read waiting sees it
	writeErr error
}

func newFakeConn() *fakeConn { return &fakeConn{in: make(chan []byte, 16)} }

func (f *fakeConn) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	if !f.wd.IsZero() && !time.Now().Before(f.wd) {
		return 0, os.ErrDeadlineExceeded
	}
	f.writes++
	return f.out.Write(b)
}

func (f *fakeConn) Read(b []byte) (int, error) {
	if f.in == nil {
		return 0, io.EOF
	}
	for {
		f.mu.Lock()
		wait := 5 * time.Second
		if !f.rd.IsZero() {
			wait = time.Until(f.rd)
		}
		if f.moved == nil {
			f.moved = make(chan struct{})
		}
		moved := f.moved
		f.mu.Unlock()
		if wait <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(wait)
		select {
		case p, ok := <-f.in:
			t.Stop()
			if !ok {
				return 0, io.EOF
			}
			return copy(b, p), nil
		case <-moved: // a new read deadline: wait for it instead
			t.Stop()
		case <-t.C:
			f.mu.Lock()
			none := f.rd.IsZero()
			f.mu.Unlock()
			if none {
				return 0, errFakeTimeout
			}
		}
	}
}

var errFakeTimeout = errors.New("fakeConn: read timed out: nothing was queued for the guard to read")

func (f *fakeConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeConn) written() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.out.String()
}

func (f *fakeConn) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (*fakeConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (*fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6379} }
func (f *fakeConn) SetDeadline(t time.Time) error {
	_ = f.SetWriteDeadline(t)
	return f.SetReadDeadline(t)
}
func (f *fakeConn) SetReadDeadline(t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rd = t
	if f.moved != nil {
		close(f.moved)
		f.moved = nil
	}
	return nil
}
func (f *fakeConn) SetWriteDeadline(t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wd = t
	return nil
}

var getReq = []byte("*2\r\n$3\r\nget\r\n$1\r\nk\r\n")

// Short but whole HELLO replies, as a map (RESP3) or an array (RESP2).
const (
	hello3Reply = "%1\r\n+proto\r\n:3\r\n"
	hello2Reply = "*2\r\n+proto\r\n:2\r\n"
)

func req(args ...string) []byte {
	b := []byte("*" + itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

func itoa(n int) string { return strconv.Itoa(n) }

func writeAuth(t *testing.T, c net.Conn, user, pass string) {
	t.Helper()
	_, err := c.Write(req("auth", user, pass))
	require.NoError(t, err)
}

// reply makes c read s, as if the server answered.
func reply(t *testing.T, c net.Conn, s string) {
	t.Helper()
	fc := innerFake(t, c)
	fc.in <- []byte(s)
	buf := make([]byte, 64)
	_, err := c.Read(buf)
	require.NoError(t, err)
}

func innerFake(t *testing.T, c net.Conn) *fakeConn {
	t.Helper()
	switch c := c.(type) {
	case *conn:
		return c.Conn.(*fakeConn)
	case *sysConn:
		return c.Conn.(*fakeConn)
	}
	t.Fatalf("not a guarded connection: %T", c)
	return nil
}

func TestGuardLearnsTheTokenOfEachAuth(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	defer h.Close()
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	tok1, exp1 := src.token(), src.exp

	_, err := c.Write(req("hello", "3", "auth", "u", tok1))
	require.NoError(t, err)
	reply(t, c, hello3Reply)
	assert.Equal(t, exp1.UnixNano(), c.exp.Load())
	assert.True(t, c.resp3.Load())

	// A re-AUTH the server refuses leaves the connection on its token.
	require.NoError(t, src.Refresh(context.Background()))
	writeAuth(t, c, "u", "not-a-token")
	reply(t, c, "-WRONGPASS invalid username-password pair\r\n")
	assert.Equal(t, exp1.UnixNano(), c.exp.Load())

	// One it accepts moves it to the new token.
	src.life = 2 * time.Hour
	require.NoError(t, src.mint())
	writeAuth(t, c, "u", src.token())
	reply(t, c, "+OK\r\n")
	assert.Equal(t, src.exp.UnixNano(), c.exp.Load())

	// A password that is not a JWT: the guard leaves the connection alone.
	writeAuth(t, c, "u", "opaque")
	reply(t, c, "+OK\r\n")
	assert.Zero(t, c.exp.Load())
}

func TestGuardRetiresOnlyAtTheStartOfARequest(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h, fc, c := authed(t, src, nil, "u")

	_, err := c.Write(getReq[:5]) // a request in progress (its second chunk follows) ...
	require.NoError(t, err)
	h.g.raise(&h.g.dead, src.exp.UnixNano()+1) // ... when its token expires
	_, err = c.Write(getReq[5:])
	require.NoError(t, err, "a request already started is never cut")
	reply(t, c, "$-1\r\n")

	before := fc.written()
	n, err := c.Write(getReq)
	require.ErrorIs(t, err, ErrConnRetired)
	assert.Zero(t, n)
	assert.Equal(t, before, fc.written(), "nothing sent")
	_, err = c.Write(getReq)
	require.ErrorIs(t, err, ErrConnRetired)
	assert.Equal(t, uint64(1), h.Stats().ConnsRetired, "one retirement per connection")

	// On a connection not retired yet, AUTH passes even under `dead`: it is what renews one.
	c2 := h.g.wrap(newFakeConn(), nil).(*conn)
	writeAuth(t, c2, "u", src.token())
	reply(t, c2, "+OK\r\n")
	writeAuth(t, c2, "u", src.token())
}

func TestGuardRetiresNearExpiryOnlyWithoutANewerToken(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h, _, c := authed(t, src, nil, "u")
	h.g.raise(&h.g.below, src.exp.UnixNano()+1)
	_, err := c.Write(getReq)
	require.ErrorIs(t, err, ErrConnRetired, "no newer token to renew with: retired")
}

// renewed sets up a connection on the source's token, then gives the source a newer one.
func renewed(t *testing.T) (*Hook, *fakeSource, *fakeConn, *conn) {
	t.Helper()
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	t.Cleanup(func() { h.Close() })
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	_, err := c.Write(req("hello", "2", "auth", testOID, src.token()))
	require.NoError(t, err)
	reply(t, c, hello2Reply)
	src.life = 2 * time.Hour // a later expiry, whatever the rounding to seconds
	src.waitSubscribed(t)
	require.NoError(t, src.Refresh(context.Background()))
	return h, src, fc, c
}

func TestGuardRenewsInPlace(t *testing.T) {
	tests := []struct {
		name    string
		replies []string // what the server sends, in chunks
		want    string   // what go-redis reads
		renewed bool
	}{
		{"OK then the reply", []string{"+OK\r\n$-1\r\n"}, "$-1\r\n", true},
		{"in pieces", []string{"+O", "K\r", "\n$-", "1\r\n"}, "$-1\r\n", true},
		{"a push first", []string{">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n+OK\r\n:1\r\n"}, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n:1\r\n", true},
		{"refused", []string{"-WRONGPASS invalid username-password pair\r\n$-1\r\n"}, "$-1\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, src, fc, c := renewed(t)
			old := c.exp.Load()
			before := len(fc.written())
			n, err := c.Write(getReq)
			require.NoError(t, err)
			assert.Equal(t, len(getReq), n)
			sent := fc.written()[before:]
			assert.True(t, sent == string(req("auth", testOID, src.token()))+string(getReq), "AUTH with the new token, then the request, in one write")
			for _, r := range tt.replies {
				fc.in <- []byte(r)
			}
			var got []byte
			buf := make([]byte, 4)
			for len(got) < len(tt.want) {
				n, err := c.Read(buf)
				require.NoError(t, err)
				got = append(got, buf[:n]...)
			}
			assert.Equal(t, tt.want, string(got))
			if tt.renewed {
				assert.Equal(t, src.exp.UnixNano(), c.exp.Load())
				assert.Equal(t, uint64(1), h.Stats().Reauths)
			} else {
				assert.Equal(t, old, c.exp.Load())
				assert.Equal(t, uint64(1), h.Stats().ReauthFailures)
				// Not sent again with the same token; retired when the margin comes.
				before := len(fc.written())
				_, err := c.Write(getReq)
				require.NoError(t, err)
				assert.Equal(t, string(getReq), fc.written()[before:])
				fc.in <- []byte("$-1\r\n")
				_, err = c.Read(make([]byte, 64)) // the whole reply: the request is over
				require.NoError(t, err)
				h.g.raise(&h.g.below, old+1)
				_, err = c.Write(getReq)
				require.ErrorIs(t, err, ErrConnRetired)
			}
		})
	}
}

func TestGuardDoesNotRenewInsideMulti(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	_, fc, c := authed(t, src, nil, testOID)
	_, err := c.Write(req("multi")) // a transaction over several requests
	require.NoError(t, err)
	reply(t, c, "+OK\r\n")

	src.life = 2 * time.Hour
	src.waitSubscribed(t)
	require.NoError(t, src.Refresh(context.Background()))
	for _, r := range [][]byte{req("incr", "k"), req("exec")} {
		before := len(fc.written())
		_, err = c.Write(r)
		require.NoError(t, err)
		assert.Equal(t, string(r), fc.written()[before:], "an AUTH now would be queued, not run")
		reply(t, c, "+QUEUED\r\n")
	}
	before := len(fc.written())
	_, err = c.Write(getReq)
	require.NoError(t, err)
	assert.True(t, fc.written()[before:] == string(req("auth", testOID, src.token()))+string(getReq), "renewed after EXEC")
}

func TestGuardRenewsMultiExecInOneWrite(t *testing.T) {
	_, src, fc, c := renewed(t)
	tx := append(append(req("multi"), req("incr", "k")...), req("exec")...)
	before := len(fc.written())
	_, err := c.Write(tx)
	require.NoError(t, err)
	assert.True(t, fc.written()[before:] == string(req("auth", testOID, src.token()))+string(tx))
	assert.False(t, c.inTx.Load())
}

func TestGuardTimers(t *testing.T) {
	testutil.Slow(t)
	src := newFakeSource(t, 2*time.Second) // exp is rounded up to a whole second: 2-3 s
	h, _, c := authed(t, src, &Options{GuardMargin: time.Hour}, "u")
	exp := c.exp.Load()
	require.NotZero(t, exp)

	// The margin is an eighth of the life (a quarter second here): the timer fires then, finds no
	// newer token and looks again; once one exists, `below` rises, and just before the expiry `dead` does.
	time.Sleep(time.Until(time.Unix(0, exp)) / 2)
	assert.LessOrEqual(t, h.g.below.Load(), exp, "nothing retired before a newer token exists")
	src.waitSubscribed(t)
	require.NoError(t, src.Refresh(context.Background()))
	require.Eventually(t, func() bool { return h.g.below.Load() > exp }, 5*time.Second, 10*time.Millisecond)
	assert.Less(t, time.Now().UnixNano(), exp, "before the token expired")
	require.Eventually(t, func() bool { return h.g.dead.Load() > exp }, 5*time.Second, 10*time.Millisecond)
	// Just before the expiry (half the margin, under 200 ms here), not earlier.
	assert.GreaterOrEqual(t, time.Now().UnixNano(), exp-int64(200*time.Millisecond))
	_, err := c.Write(getReq)
	require.ErrorIs(t, err, ErrConnRetired)

	h.g.mu.Lock()
	assert.Empty(t, h.g.timers, "a fired timer is forgotten")
	h.g.mu.Unlock()
}

// A connection retired as its token expires, with no new token to reconnect with (an identity
// provider outage): the error names the cause, not "send the command again".
func TestRetiredWithoutTokenNamesTheCause(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	defer h.Close()
	for _, valid := range []bool{true, false} {
		c := h.g.wrap(newFakeConn(), nil).(*conn)
		writeAuth(t, c, "u", src.token())
		reply(t, c, "+OK\r\n")
		h.g.raise(&h.g.dead, c.exp.Load()+1) // as the timer does just before the expiry
		if !valid {
			src.mu.Lock()
			src.exp = time.Now().Add(-time.Second) // the provider has no valid token
			src.mu.Unlock()
		}
		_, err := c.Write(getReq)
		require.ErrorIs(t, err, ErrConnRetired)
		assert.Equal(t, !valid, errors.Is(err, provider.ErrTokenUnavailable), "valid token: %v", valid)
	}
}

func TestGuardPubSub(t *testing.T) {
	for _, resp3 := range []bool{true, false} {
		t.Run(map[bool]string{true: "RESP3 re-authenticates in place", false: "RESP2 reconnects"}[resp3], func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			h := fakeHook(src, nil)
			defer h.Close()
			fc := newFakeConn()
			c := h.g.wrap(fc, nil).(*conn)
			_, err := c.Write(req("hello", map[bool]string{true: "3", false: "2"}[resp3], "auth", testOID, src.token()))
			require.NoError(t, err)
			reply(t, c, map[bool]string{true: hello3Reply, false: hello2Reply}[resp3])
			_, err = c.Write(req("subscribe", "news"))
			require.NoError(t, err)
			old := c.exp.Load()

			src.life = 2 * time.Hour // a later expiry, whatever the rounding to seconds
			src.waitSubscribed(t)
			require.NoError(t, src.Refresh(context.Background()))
			h.g.raise(&h.g.below, old+1)
			before := len(fc.written())
			_, err = c.Write(req("ping"))
			require.NoError(t, err, "a subscriber is never failed by the guard")
			assert.Contains(t, fc.written()[before:], string(req("ping")))

			if resp3 {
				// Renewed as soon as the provider has the new token.
				want := string(req("auth", testOID, src.token()))
				require.Eventually(t, func() bool { return strings.Contains(fc.written(), want) }, 5*time.Second, 5*time.Millisecond, "AUTH with the new token written")
				// The replies: the subscription's, the PING's and the AUTH's in the order they were
				// written (the guard's AUTH goes out from its own goroutine), a message. go-redis
				// reads all but the AUTH's, in order.
				msg := ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
				sub := ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
				w := fc.written()
				if strings.Index(w, want) < strings.LastIndex(w, string(req("ping"))) {
					fc.in <- []byte(sub + "+O")
					fc.in <- []byte("K\r\n+PONG\r\n" + msg)
				} else {
					fc.in <- []byte(sub + "+PONG\r\n+O")
					fc.in <- []byte("K\r\n" + msg)
				}
				var got []byte
				buf := make([]byte, 7)
				for len(got) < len(sub+"+PONG\r\n"+msg) {
					n, err := c.Read(buf)
					require.NoError(t, err)
					got = append(got, buf[:n]...)
				}
				assert.Equal(t, sub+"+PONG\r\n"+msg, string(got), "the AUTH's +OK is not go-redis's to read")
				assert.Greater(t, c.exp.Load(), old)
				assert.False(t, fc.isClosed())
				assert.Equal(t, uint64(1), h.Stats().PubSubReauths)
			} else {
				assert.False(t, fc.isClosed(), "RESP2: kept until the margin")
				// At the margin: closed. The offer's own move attempt (no redial here) may hold the
				// subscriber for a moment, as a move in flight does; the guard's timer then tries
				// again (fire polls past the margin), and so does this loop.
				require.Eventually(t, func() bool {
					h.g.retireOlder(context.Background())
					return fc.isClosed()
				}, 5*time.Second, 5*time.Millisecond)
				assert.Equal(t, uint64(1), h.Stats().PubSubClosed)
			}
			require.NoError(t, c.Close())
			h.g.mu.Lock()
			assert.Empty(t, h.g.pubsubs)
			h.g.mu.Unlock()
			assert.Zero(t, h.g.live())
		})
	}
}

func TestGuardKeepsSyscallConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer raw.Close()

	h := fakeHook(newFakeSource(t, time.Hour), nil)
	_, ok := h.g.wrap(raw, nil).(syscall.Conn)
	assert.True(t, ok, "a TCP connection keeps syscall.Conn, for go-redis's health check")
	_, ok = h.g.wrap(newFakeConn(), nil).(syscall.Conn)
	assert.False(t, ok, "a connection without it does not pretend")
	// What NetConn returns (go-redis unwraps it to peek under TLS) reaches the socket only through
	// the guarded connection's read side.
	nc := h.g.wrap(raw, nil).(interface{ NetConn() net.Conn }).NetConn()
	_, ok = nc.(syscall.Conn)
	assert.True(t, ok, "the raw socket underneath is still reachable for a peek")
	_, ok = nc.(interface{ NetConn() net.Conn })
	assert.False(t, ok, "go-redis's unwrapping ends at the view")
	_, ok = h.g.wrap(newFakeConn(), nil).(interface{ NetConn() net.Conn }).NetConn().(syscall.Conn)
	assert.False(t, ok)
}

func TestDialHook(t *testing.T) {
	h := fakeHook(newFakeSource(t, time.Hour), nil)
	fc := newFakeConn()
	dial := h.DialHook(func(context.Context, string, string) (net.Conn, error) { return fc, nil })
	c, err := dial(context.Background(), "tcp", "x:1")
	require.NoError(t, err)
	assert.IsType(t, &conn{}, c)
	assert.Equal(t, uint64(1), h.Stats().Dials)

	failing := h.DialHook(func(context.Context, string, string) (net.Conn, error) { return nil, errDial })
	_, err = failing(context.Background(), "tcp", "x:1")
	require.ErrorIs(t, err, errDial)

	off := fakeHook(newFakeSource(t, time.Hour), &Options{GuardMargin: -1})
	c, err = off.DialHook(func(context.Context, string, string) (net.Conn, error) { return fc, nil })(context.Background(), "tcp", "x:1")
	require.NoError(t, err)
	assert.Same(t, fc, c, "GuardMargin < 0 turns the guard off")
}

// discard answers every request with a null bulk string, without a network.
type discard struct{ fakeConn }

func (*discard) Write(b []byte) (int, error) { return len(b), nil }
func (*discard) Read(b []byte) (int, error)  { return copy(b, "$-1\r\n"), nil }

func TestGuardDoesNotAllocatePerCommand(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	c := h.g.wrap(&discard{}, nil).(*conn)
	_, _ = c.Write(req("auth", "u", src.token()))
	buf := make([]byte, 64)
	_, _ = c.Read(buf)
	allocs := testing.AllocsPerRun(1000, func() {
		_, _ = c.Write(getReq)
		_, _ = c.Read(buf)
	})
	assert.Zero(t, allocs)
}

// Write's one-pass common case counts what the general path counts: a reply per command, none
// for an empty write.
func TestGuardCountsTheCommandsOfEachWrite(t *testing.T) {
	two := append(append([]byte(nil), getReq...), getReq...)
	for _, tc := range []struct {
		name   string
		writes [][]byte
		want   uint64
	}{
		{"empty", [][]byte{{}}, 0},
		{"one", [][]byte{getReq}, 1},
		{"one then empty", [][]byte{getReq, nil}, 1},
		{"pipeline", [][]byte{two}, 2},
		{"in pieces", [][]byte{getReq[:5], getReq[5:]}, 1},
		{"a long name", [][]byte{req("unsubscribex", "k")}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, c := authed(t, newFakeSource(t, time.Hour), nil, testOID)
			before := c.sentA.Load()
			for _, w := range tc.writes {
				_, err := c.Write(w)
				require.NoError(t, err)
			}
			assert.Equal(t, tc.want, c.sentA.Load()-before)
		})
	}
}

// BenchmarkGuard is the guard's cost per command: a request written and its reply read through a
// guarded connection, against the same on the bare connection.
func BenchmarkGuard(b *testing.B) {
	iss := newFakeSource(b, time.Hour)
	buf := make([]byte, 64)
	b.Run("bare", func(b *testing.B) {
		var c net.Conn = &discard{}
		b.ReportAllocs()
		for b.Loop() {
			_, _ = c.Write(getReq)
			_, _ = c.Read(buf)
		}
	})
	b.Run("guarded", func(b *testing.B) {
		h := fakeHook(iss, nil)
		c := h.g.wrap(&discard{}, nil)
		_, _ = c.Write(req("auth", "u", iss.token()))
		_, _ = c.Read(buf)
		b.ReportAllocs()
		for b.Loop() {
			_, _ = c.Write(getReq)
			_, _ = c.Read(buf)
		}
	})
}

// BenchmarkGuardPipeline: a pipeline of 10 SETs of 16 KiB values (as BENCHMARKS.md's PIPELINE)
// written through a 4 KiB bufio.Writer in pieces, as go-redis writes one, and its 10 replies read.
// The guard follows the request stream across the writes, most of them inside a value.
func BenchmarkGuardPipeline(b *testing.B) {
	iss := newFakeSource(b, time.Hour)
	val := strings.Repeat("x", 16<<10)
	var cmd []byte
	for i := 0; i < 10; i++ {
		cmd = append(cmd, req("set", "bench:pipe:key", val)...)
	}
	replies := []byte(strings.Repeat("+OK\r\n", 10))
	buf := make([]byte, 4096)
	run := func(b *testing.B, c net.Conn) {
		w := bufio.NewWriterSize(c, 4096)
		b.ReportAllocs()
		b.SetBytes(int64(len(cmd)))
		for b.Loop() {
			for i := 0; i < len(cmd); i += 1000 {
				_, _ = w.Write(cmd[i:min(i+1000, len(cmd))])
			}
			_ = w.Flush()
			_, _ = c.Read(buf)
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, &answer{r: replies}) })
	b.Run("guarded", func(b *testing.B) {
		h := fakeHook(iss, nil)
		c := h.g.wrap(&answer{r: replies}, nil)
		_, _ = c.Write(req("auth", "u", iss.token()))
		_, _ = c.Read(buf)
		run(b, c)
	})
}

// answer is a connection that swallows writes and answers every read with r.
type answer struct {
	discard
	r []byte
}

func (a *answer) Read(b []byte) (int, error) { return copy(b, a.r), nil }

// go-redis's health check peeks at an idle plain-TCP connection's socket before handing it out,
// and drops it if a byte is there. While the guard's own AUTH is in flight, its reply would be:
// the peek waits until the guard has read it.
func TestHealthCheckWaitsForBackgroundWork(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	server := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			server <- c
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	srv := <-server
	defer srv.Close()

	h := fakeHook(newFakeSource(t, time.Hour), nil)
	c := h.g.wrap(raw, nil)
	sc, ok := c.(syscall.Conn)
	require.True(t, ok)
	done := make(chan byte)
	go func() {
		var first byte
		c.(*sysConn).background(pingReq, nil, func(b byte) { first = b })
		done <- first
	}()
	buf := make([]byte, 64)
	n, err := srv.Read(buf) // the guard's PING arrived ...
	require.NoError(t, err)
	require.Equal(t, string(pingReq), string(buf[:n]))
	peeked := make(chan int)
	go func() {
		rc, err := sc.SyscallConn()
		if !assert.NoError(t, err) {
			peeked <- -1
			return
		}
		var got int
		_ = rc.Read(func(fd uintptr) bool {
			var b [1]byte
			got, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		})
		peeked <- got
	}()
	select {
	case <-peeked:
		t.Fatal("the health check ran while the guard's PING was in flight")
	case <-time.After(200 * time.Millisecond):
	}
	_, err = srv.Write([]byte("+PONG\r\n")) // ... and its reply
	require.NoError(t, err)
	assert.Equal(t, byte('+'), <-done)
	assert.LessOrEqual(t, <-peeked, 0, "the peek found nothing: the reply was the guard's to read")
}

// A reply the guard cannot follow to its end (here a map whose elements never come) leaves a reply
// due as far as the guard can tell. At its token's retirement line the connection is then not
// retired (a reply due may be a request in flight: TestNotRetiredWithRepliesDue), but it is still
// renewed in place once a newer token exists: it is never left on its token for good.
func TestGuardRenewsWithAReplyCountOff(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h, fc, c := authed(t, src, nil, "u")
	_, err := c.Write(getReq)
	require.NoError(t, err)
	reply(t, c, "%7\r\n") // the scanner waits for 14 more elements
	h.g.raise(&h.g.dead, c.exp.Load()+1)
	_, err = c.Write(getReq)
	require.NoError(t, err, "not retired with a reply due")
	assert.Zero(t, h.Stats().ConnsRetired)

	src.life = 2 * time.Hour
	src.waitSubscribed(t)
	require.NoError(t, src.Refresh(context.Background()))
	before := len(fc.written())
	_, err = c.Write(getReq)
	require.NoError(t, err)
	assert.Contains(t, fc.written()[before:], src.token(), "renewed in place ahead of the request")
}

// Inside a MULTI that go-redis left open on a sticky connection, the guard sends nothing of its
// own: an AUTH would run only at EXEC, and a keep-alive PING would be queued and answered in
// EXEC's reply to the caller.
func TestGuardSendsNothingInsideMulti(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h, fc, c := authed(t, src, nil, testOID)
	_, err := c.Write(req("multi"))
	require.NoError(t, err)
	reply(t, c, "+OK\r\n")
	before := fc.written()
	h.g.keepAlive()
	h.g.keepAlive() // no request since the last look: idle long enough for a PING, were it not in MULTI
	assert.Zero(t, h.Stats().KeepAlives)
	src.life = 2 * time.Hour
	src.waitSubscribed(t)
	require.NoError(t, src.Refresh(context.Background()))
	h.g.renewIdle()
	assert.Equal(t, before, fc.written(), "nothing written")
}
