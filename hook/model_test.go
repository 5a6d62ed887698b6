package hook

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// modelTime is how long each case of TestGuardModel runs: short in the normal run, long in
// `make fuzz` (-guard.model 60s).
var modelTime = flag.Duration("guard.model", 300*time.Millisecond, "how long each case of TestGuardModel runs")

// TestGuardModel runs the guard on a scripted server with random request and reply streams cut
// at random points, random token arrivals, the guard's background work, and go-redis's deadline
// changes at random moments; with one goroutine writing and reading (half duplex) or a writer
// and a reader at once (full duplex), over RESP2 and RESP3 (with push frames between replies).
// go-redis's writes run under a WriteTimeout far shorter than a token's life, on connections whose
// deadlines are real (net.Pipe). The invariant: go-redis reads exactly the server's replies to its
// own commands, in order; every reply to the guard's AUTH or PING is removed. The subscriber
// cases (model_pubsub_test.go) do the same for RESP2 and RESP3 subscribers.
func TestGuardModel(t *testing.T) {
	for _, fd := range []bool{false, true} {
		for _, resp3 := range []bool{false, true} {
			name := fmt.Sprintf("duplex=%v/resp3=%v", fd, resp3)
			t.Run(name, func(t *testing.T) {
				seed := uint64(time.Now().UnixNano())
				t.Logf("seed %d", seed)
				runModel(t, rand.New(rand.NewPCG(seed, 1)), fd, resp3, *modelTime)
			})
		}
	}
	for _, resp3 := range []bool{false, true} {
		t.Run(fmt.Sprintf("subscriber/resp3=%v", resp3), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			runPubSubModel(t, rand.New(rand.NewPCG(seed, 1)), resp3, *modelTime) // model_pubsub_test.go
		})
	}
}

// modelServer answers requests: INCR (a counter), ECHO, PING, AUTH (+OK), HELLO; over RESP3 it
// puts pushes between replies. It writes its replies cut at random points.
type modelServer struct {
	nc     net.Conn
	rnd    *rand.Rand
	resp3  bool
	n      int64
	auths  atomic.Int64 // AUTHs after the handshake
	pings  atomic.Int64
	hellos int
}

func (s *modelServer) serve() {
	// Replies are written by a goroutine of their own, as a socket buffers them: the server reads
	// on while go-redis has not read its replies yet.
	outq := make(chan []byte, 1<<16)
	defer close(outq)
	wr := rand.New(rand.NewPCG(s.rnd.Uint64(), 8))
	go func() {
		for out := range outq {
			for len(out) > 0 { // cut at random points
				k := 1 + wr.IntN(len(out))
				if _, err := s.nc.Write(out[:k]); err != nil {
					return
				}
				out = out[k:]
			}
		}
	}()
	var in []byte
	buf := make([]byte, 4096)
	for {
		k, err := s.nc.Read(buf)
		if err != nil {
			return
		}
		in = append(in, buf[:k]...)
		var out []byte
		for {
			args, n, err := resp.SplitArgs(in)
			if err != nil || n == 0 {
				break
			}
			in = in[n:]
			if s.resp3 && s.rnd.IntN(4) == 0 {
				out = append(out, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"...)
			}
			switch string(bytes.ToLower(args[0])) {
			case "incr":
				s.n++
				out = append(out, ":"+strconv.FormatInt(s.n, 10)+"\r\n"...)
			case "echo":
				out = append(out, "$"+strconv.Itoa(len(args[1]))+"\r\n"+string(args[1])+"\r\n"...)
			case "ping":
				s.pings.Add(1)
				out = append(out, "+PONG\r\n"...)
			case "auth":
				s.auths.Add(1)
				if s.rnd.IntN(8) == 0 {
					out = append(out, "-WRONGPASS invalid username-password pair\r\n"...)
				} else {
					out = append(out, "+OK\r\n"...)
				}
			case "hello":
				s.hellos++
				if s.resp3 {
					out = append(out, hello3Reply...)
				} else {
					out = append(out, hello2Reply...)
				}
			default:
				out = append(out, "-ERR unknown\r\n"...)
			}
		}
		if len(out) > 0 {
			outq <- out
		}
	}
}

func runModel(t *testing.T, rnd *rand.Rand, fd, resp3 bool, d time.Duration) {
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	defer h.Close()
	cli, srv := net.Pipe()
	var srvRnd = rand.New(rand.NewPCG(rnd.Uint64(), 2))
	s := &modelServer{nc: srv, rnd: srvRnd, resp3: resp3}
	go s.serve()
	c := h.g.wrap(cli, nil).(*conn)
	defer c.Close()

	proto := map[bool]string{false: "2", true: "3"}[resp3]
	_, err := c.Write(req("hello", proto, "auth", testOID, src.token()))
	require.NoError(t, err)
	var acc0 []byte
	first := readFrame(t, c, make([]byte, 64), nil, &acc0)
	require.Empty(t, acc0)
	require.Equal(t, map[bool]string{false: hello2Reply, true: hello3Reply}[resp3], first)
	require.Equal(t, resp3, c.resp3.Load())
	require.NotZero(t, c.exp.Load())

	// What go-redis expects, in order: a reply to each command it wrote.
	type want struct {
		incr bool
		echo string
	}
	var seeds [8]uint64
	for i := range seeds {
		seeds[i] = rnd.Uint64()
	}
	expect := make(chan want, 1<<16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var delivered, lastIncr atomic.Int64
	// Tokens arrive at random moments; the guard's background work runs at random moments; go-redis
	// changes deadlines at random moments (its health check clears them).
	wg.Go(func() {
		r := rand.New(rand.NewPCG(seeds[3], 3))
		for life := 2 * time.Hour; ; life += time.Hour {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(r.IntN(20)) * time.Millisecond):
			}
			src.mu.Lock()
			src.life = life
			src.mu.Unlock()
			require.NoError(t, src.mint())
			h.g.offer(testOID, src.token())
		}
	})
	wg.Go(func() {
		r := rand.New(rand.NewPCG(seeds[4], 4))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(r.IntN(3)) * time.Millisecond):
			}
			switch r.IntN(4) {
			case 0:
				h.g.renewIdle()
			case 1:
				if ran, _ := c.background(pingReq, nil, nil); ran { // a keep-alive PING
					h.keepAlives.Add(1)
				}
			case 2:
				_ = c.SetDeadline(time.Time{})
			case 3:
				_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			}
		}
	})

	read := func(r *rand.Rand, w want, buf []byte, acc *[]byte) {
		got := readFrame(t, c, buf, r, acc)
		delivered.Add(1)
		if w.incr {
			n, err := strconv.ParseInt(got[1:len(got)-2], 10, 64)
			require.NoError(t, err, "an INCR's reply: %q", got)
			require.Equal(t, byte(':'), got[0], "an INCR's reply: %q", got)
			require.Equal(t, lastIncr.Load()+1, n, "each INCR's reply the previous plus one")
			lastIncr.Store(n)
			return
		}
		require.Equal(t, "$"+strconv.Itoa(len(w.echo))+"\r\n"+w.echo+"\r\n", got, "ECHO's reply")
	}
	write := func(r *rand.Rand, pending func(want)) {
		var b []byte
		for range 1 + r.IntN(4) {
			if r.IntN(2) == 0 {
				b = append(b, req("incr", "k")...)
				pending(want{incr: true})
			} else {
				size := r.IntN(300)
				if r.IntN(50) == 0 {
					size = r.IntN(70000) // read and written in many pieces
				}
				e := string(bytes.Repeat([]byte{'a' + byte(r.IntN(26))}, size))
				b = append(b, req("echo", e)...)
				pending(want{echo: e})
			}
		}
		for len(b) > 0 { // bufio flushes in pieces
			k := 1 + r.IntN(len(b))
			// go-redis's WithWriter: a write deadline far shorter than a token's life.
			goRedisWrite(t, c, b[:k])
			b = b[k:]
		}
	}
	deadline := time.Now().Add(d)
	var written atomic.Int64
	if fd {
		done := make(chan struct{})
		go func() {
			defer close(done)
			r := rand.New(rand.NewPCG(seeds[5], 5))
			buf := make([]byte, 512)
			var acc []byte
			for w := range expect {
				read(r, w, buf, &acc)
			}
		}()
		r := rand.New(rand.NewPCG(seeds[6], 6))
		for time.Now().Before(deadline) {
			write(r, func(w want) { written.Add(1); expect <- w })
		}
		close(expect)
		<-done
	} else {
		r := rand.New(rand.NewPCG(seeds[7], 7))
		buf := make([]byte, 512)
		var acc []byte
		for time.Now().Before(deadline) {
			var ws []want
			write(r, func(w want) { written.Add(1); ws = append(ws, w) })
			for _, w := range ws {
				read(r, w, buf, &acc)
			}
			if r.IntN(8) == 0 {
				time.Sleep(time.Millisecond) // idle for a while: the test's subject, not synchronisation
			}
		}
	}
	close(stop)
	wg.Wait()
	st := h.Stats()
	t.Logf("commands %d; AUTHs renewed in place %d (idle %d), refused %d; keep-alive PINGs %d; server AUTHs %d, PINGs %d",
		written.Load(), st.Reauths, st.IdleReauths, st.ReauthFailures, st.KeepAlives, s.auths.Load(), s.pings.Load())
	assert.Equal(t, written.Load(), delivered.Load(), "a reply for every command")
	assert.Equal(t, s.auths.Load(), int64(st.Reauths+st.ReauthFailures), "every guard AUTH's reply removed and counted")
	assert.Equal(t, s.pings.Load(), int64(st.KeepAlives), "every guard PING's reply removed")
	assert.Equal(t, stateManaged, c.state.Load())
	assert.NotZero(t, st.Reauths, "renewed in place")
}

// readFrame reads one whole non-push reply through c in reads of random sizes (pushes are
// skipped, as go-redis hands them to its push processor); acc holds what was read past it.
func readFrame(t *testing.T, c net.Conn, buf []byte, r *rand.Rand, acc *[]byte) string {
	t.Helper()
	for {
		for {
			l, err := resp.FrameLen(*acc)
			require.NoError(t, err)
			if l == 0 {
				break
			}
			frame := string((*acc)[:l])
			*acc = (*acc)[l:]
			if frame[0] == '>' {
				continue
			}
			return frame
		}
		k := len(buf)
		if r != nil {
			k = 1 + r.IntN(len(buf))
		}
		n, err := c.Read(buf[:k])
		require.NoError(t, err)
		*acc = append(*acc, buf[:n]...)
	}
}
