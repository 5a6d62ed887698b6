package hook

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// scriptedServer is the server end of a net.Pipe (real deadlines) whose replies the test writes
// itself, in order, at the moments it chooses; the requests it reads come out on reqs.
type scriptedServer struct {
	nc   net.Conn
	reqs chan [][]byte
	wmu  sync.Mutex // one reply written at a time, in order
}

func newScriptedServer(t *testing.T, nc net.Conn) *scriptedServer {
	s := &scriptedServer{nc: nc, reqs: make(chan [][]byte, 64)}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = nc.Close(); wg.Wait() })
	wg.Go(func() {
		var in []byte
		buf := make([]byte, 4096)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			in = append(in, buf[:n]...)
			for {
				args, k, err := resp.SplitArgs(in)
				if err != nil || k == 0 {
					break
				}
				in = in[k:]
				s.reqs <- args
			}
		}
	})
	return s
}

// next is the next request the server read.
func (s *scriptedServer) next(t *testing.T) [][]byte {
	t.Helper()
	select {
	case a := <-s.reqs:
		return a
	case <-time.After(5 * time.Second):
		require.FailNow(t, "no request reached the server")
		return nil
	}
}

// send writes b in the background (a pipe's write waits for the reader); done is closed once
// the client end has taken all of it.
func (s *scriptedServer) send(b string) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		s.wmu.Lock()
		defer s.wmu.Unlock()
		_, _ = s.nc.Write([]byte(b))
	}()
	return done
}

// frameReader reads whole frames as go-redis does, under a read deadline of its own.
type frameReader struct {
	c   net.Conn
	acc []byte
}

// frame is the next whole frame, or "" once until has passed.
func (r *frameReader) frame(t *testing.T, until time.Time) string {
	t.Helper()
	buf := make([]byte, 512)
	for {
		l, err := resp.FrameLen(r.acc)
		require.NoError(t, err)
		if l > 0 {
			f := string(r.acc[:l])
			r.acc = r.acc[l:]
			return f
		}
		if time.Now().After(until) {
			return ""
		}
		require.NoError(t, r.c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
		n, err := r.c.Read(buf)
		r.acc = append(r.acc, buf[:n]...)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			require.NoError(t, err, "go-redis's read")
		}
	}
}

// A RESP2 move's reads switch to the new connection only when go-redis's reader reaches the
// reply to the move's "PING s2" on the old one; the move itself ended (and cleared moving) once
// it had written the sentinels. A token arriving in between started a second move, which replaced
// the first's record (ps.mv): the reader, still on the first move's old connection, then no
// longer knew the first move's sentinels and handed their replies (["pong", s1], the guard's
// unsubscribe confirmations, s2's bulk) to go-redis, and never switched to the first move's
// connection (where go-redis's replies were waiting). TestGuardModel/subscriber/resp3=false
// found it in 60 s runs (s2's "$40 entraredis-move-..." as the reply to go-redis's PING). A move
// now lasts until its reads switch: a token arriving before then leaves the subscriber alone,
// and the next token (or the margin) moves it.
func TestRESP2SecondMoveBeforeReadsSwitched(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drained bool // go-redis's reader had read s1's reply (and the confirmations) before
	}{
		{"reader before s1", false},
		{"reader between s1 and s2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			h := quietHook(t, src, nil)
			b := &psBroker{rnd: rand.New(rand.NewPCG(1, 2)), conns: map[*psServer]bool{}}
			var d brokerDials
			redial := func(context.Context) (net.Conn, error) { return d.dial(b), nil }
			cli, srv := net.Pipe()
			old := newScriptedServer(t, srv)
			c := h.g.wrap(cli, redial).(*conn)
			d.cleanup(t, c)
			r := &frameReader{c: c}
			soon := func() time.Time { return time.Now().Add(5 * time.Second) }

			// go-redis's handshake and SUBSCRIBE news, over RESP2.
			_, err := c.Write(append(req("hello", "2", "auth", testOID, src.token()), req("client", "setname", "app")...))
			require.NoError(t, err)
			old.next(t)
			old.next(t)
			old.send(hello2Reply + "+OK\r\n")
			require.Equal(t, hello2Reply, r.frame(t, soon()))
			require.Equal(t, "+OK\r\n", r.frame(t, soon()))
			_, err = c.Write(req("subscribe", "news"))
			require.NoError(t, err)
			old.next(t)
			old.send("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
			require.Contains(t, r.frame(t, soon()), "subscribe\r\n$4\r\nnews")

			// A token: the first move. The old connection gets PING s1, UNSUBSCRIBE, PING s2.
			cr := newerCreds(t, h, src)
			h.g.cur.Store(cr)
			h.g.rotatePubSub(cr.exp, true)
			require.Equal(t, uint64(1), h.Stats().PubSubMoved)
			ping1, unsub, ping2 := old.next(t), old.next(t), old.next(t)
			require.Equal(t, "ping", string(ping1[0]))
			require.Equal(t, "unsubscribe", string(unsub[0]))
			require.Equal(t, "ping", string(ping2[0]))
			s1, s2 := string(ping1[1]), string(ping2[1])
			s1Reply := "*2\r\n$4\r\npong\r\n" + bulk(s1) + "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"
			rest := bulk(s2) // no longer subscribed: a bulk string
			if tc.drained {
				// The reader takes s1's reply and the confirmation (cut out), and waits for s2's.
				done := old.send(s1Reply)
				for wait := true; wait; {
					select {
					case <-done:
						wait = false
					default:
					}
					require.Empty(t, r.frame(t, time.Now().Add(20*time.Millisecond)), "the guard's frames are cut out")
				}
				require.Empty(t, r.frame(t, time.Now().Add(20*time.Millisecond)))
			} else {
				rest = s1Reply + rest
			}

			// Another token before the reads switched; then go-redis PINGs.
			cr2 := newerCreds(t, h, src)
			h.g.cur.Store(cr2)
			h.g.rotatePubSub(cr2.exp, true)
			_, err = c.Write(req("ping"))
			require.NoError(t, err)
			old.send(rest)
			require.Equal(t, "*2\r\n$4\r\npong\r\n$0\r\n\r\n", r.frame(t, soon()),
				"go-redis's PING gets its own reply, not the guard's")
			require.Equal(t, uint64(1), h.Stats().PubSubMoved, "the second token waited for the first move's reads")

			// Reads switched: the next token moves the subscriber again.
			cr3 := newerCreds(t, h, src)
			h.g.cur.Store(cr3)
			h.g.rotatePubSub(cr3.exp, true)
			require.Equal(t, uint64(2), h.Stats().PubSubMoved)
			_, err = c.Write(req("ping"))
			require.NoError(t, err)
			require.Equal(t, "*2\r\n$4\r\npong\r\n$0\r\n\r\n", r.frame(t, soon()))
			require.Zero(t, h.Stats().PubSubClosed)
		})
	}
}

// hookedConn calls onWriteDeadline on each SetWriteDeadline with a deadline already past.
type hookedConn struct {
	net.Conn
	onWriteDeadline func()
}

func (h *hookedConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) && h.onWriteDeadline != nil {
		h.onWriteDeadline()
	}
	return h.Conn.SetWriteDeadline(t)
}

// A RESP2 move gave the new connection go-redis's write deadline (conn.wd) before making it the
// one go-redis's writes go to, outside ps.rw: go-redis setting a deadline in between (it sets
// one before each write, without the write side's lock) applied it to the old connection, and
// the new one kept the lapsed deadline of go-redis's previous write: go-redis's next write failed
// at once ("write pipe: i/o timeout", TestGuardModel/subscriber/resp3=false in 60 s runs). The
// new connection now gets go-redis's deadline under ps.rw, as it becomes the writer.
func TestRESP2MoveKeepsGoRedisWriteDeadline(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := quietHook(t, src, nil)
	b := &psBroker{rnd: rand.New(rand.NewPCG(1, 2)), conns: map[*psServer]bool{}}
	var d brokerDials
	var c *conn
	set := make(chan struct{}) // go-redis's SetWriteDeadline, landed mid-move, has returned
	var once sync.Once
	dial := func(hook bool) net.Conn {
		hc := &hookedConn{Conn: d.dial(b)}
		if hook {
			// go-redis, in its own goroutine, sets the deadline for its next write while the move
			// hands the new connection over; given 100 ms to land before the move goes on.
			hc.onWriteDeadline = func() {
				once.Do(func() {
					go func() {
						defer close(set)
						_ = c.SetWriteDeadline(time.Now().Add(time.Second))
					}()
					select {
					case <-set:
					case <-time.After(100 * time.Millisecond):
					}
				})
			}
		}
		return hc
	}
	c = h.g.wrap(dial(false), func(context.Context) (net.Conn, error) { return dial(true), nil }).(*conn)
	d.cleanup(t, c)
	r := &frameReader{c: c}
	soon := func() time.Time { return time.Now().Add(5 * time.Second) }
	goRedisWrite(t, c, req("hello", "2", "auth", testOID, src.token()))
	require.Equal(t, hello2Reply, r.frame(t, soon()))
	goRedisWrite(t, c, req("subscribe", "news"))
	require.Contains(t, r.frame(t, soon()), "subscribe\r\n$4\r\nnews")
	time.Sleep(2 * modelWriteTimeout) // go-redis's last write deadline lapses: a subscriber reads

	cr := newerCreds(t, h, src)
	h.g.cur.Store(cr)
	h.g.rotatePubSub(cr.exp, true)
	require.Equal(t, uint64(1), h.Stats().PubSubMoved)
	select {
	case <-set:
	case <-time.After(5 * time.Second):
		require.FailNow(t, "go-redis's SetWriteDeadline did not return")
	}
	_, err := c.Write(req("ping"))
	require.NoError(t, err, "go-redis's write on the new connection, under the deadline it set")
	require.Equal(t, "*2\r\n$4\r\npong\r\n$0\r\n\r\n", r.frame(t, soon()))
}

// brokerDials makes connections to a psBroker (the client's end of a net.Pipe, the broker serving
// the other) and closes the broker's ends when the test ends, whatever the guard did with them.
type brokerDials struct {
	mu   sync.Mutex
	ends []net.Conn
	wg   sync.WaitGroup
}

func (d *brokerDials) dial(b *psBroker) net.Conn {
	cli, srv := net.Pipe()
	d.mu.Lock()
	d.ends = append(d.ends, srv)
	d.mu.Unlock()
	d.wg.Go(func() { b.serve(srv, rand.New(rand.NewPCG(3, 4))) })
	return cli
}

// cleanup closes c, then the broker's ends, and waits for the broker, when t ends.
func (d *brokerDials) cleanup(t *testing.T, c *conn) {
	t.Cleanup(func() {
		_ = c.Close()
		d.mu.Lock()
		for _, nc := range d.ends {
			_ = nc.Close()
		}
		d.mu.Unlock()
		d.wg.Wait()
	})
}
