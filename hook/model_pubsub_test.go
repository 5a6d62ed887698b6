package hook

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// The pub/sub half of TestGuardModel: a subscriber as go-redis drives one, at production's ratio
// (its write deadline, set for each of its writes, lapses long before a token does), on a
// scripted broker whose connections honour deadlines (net.Pipe). The subscriber subscribes to
// and unsubscribes from channels at random, has subscriptions refused (NOPERM), PINGs; messages
// are published on "news" all along; tokens arrive at random moments (the guard renews it in
// place over RESP3, moves it over RESP2), and the margin comes at random moments. The invariant:
// go-redis reads the replies to its own commands in order, and every message (over RESP2 a
// message published during a move may come twice); nothing of the guard's reaches it; the
// subscriber is never closed.

const modelWriteTimeout = 30 * time.Millisecond // go-redis's WriteTimeout, against tokens of hours

// goRedisWrite writes b as go-redis does, leaving on the connection the write deadline go-redis
// leaves: the write's start plus its WriteTimeout, lapsed soon after and stale until go-redis writes
// again. The write itself gets room (a second): on a busy machine net.Pipe's reader can take longer
// than a WriteTimeout this short to be scheduled, which says nothing about the guard.
func goRedisWrite(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	start := time.Now()
	require.NoError(t, c.SetWriteDeadline(start.Add(time.Second)))
	_, err := c.Write(b)
	require.NoError(t, err)
	require.NoError(t, c.SetWriteDeadline(start.Add(modelWriteTimeout)))
}

// psBroker is the server side: the subscriptions of every connection, and what each is sent.
type psBroker struct {
	mu        sync.Mutex // a command's replies and a message are queued whole, in order
	rnd       *rand.Rand
	conns     map[*psServer]bool
	auths     atomic.Int64 // AUTHs after the handshake
	refused   atomic.Int64 // of which refused
	published int64
}

type psServer struct {
	b      *psBroker
	nc     net.Conn
	resp3  bool
	subs   map[string]bool
	out    chan []byte
	hellos int
}

func (b *psBroker) serve(nc net.Conn, wr *rand.Rand) {
	s := &psServer{b: b, nc: nc, subs: map[string]bool{}, out: make(chan []byte, 1<<14)}
	b.mu.Lock()
	b.conns[s] = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, s)
		close(s.out)
		b.mu.Unlock()
	}()
	go func() {
		for out := range s.out {
			for len(out) > 0 {
				k := 1 + wr.IntN(len(out))
				if _, err := nc.Write(out[:k]); err != nil {
					_ = nc.Close()
					for range s.out {
					}
					return
				}
				out = out[k:]
			}
		}
	}()
	var in []byte
	buf := make([]byte, 4096)
	for {
		k, err := nc.Read(buf)
		if err != nil {
			return
		}
		in = append(in, buf[:k]...)
		for {
			args, n, err := resp.SplitArgs(in)
			if err != nil || n == 0 {
				break
			}
			in = in[n:]
			b.mu.Lock()
			s.out <- s.answer(args)
			b.mu.Unlock()
		}
	}
}

func (s *psServer) agg(n int) string {
	if s.resp3 {
		return ">" + strconv.Itoa(n) + "\r\n"
	}
	return "*" + strconv.Itoa(n) + "\r\n"
}

// answer is the reply to one command (b.mu held).
func (s *psServer) answer(args [][]byte) []byte {
	name := strings.ToLower(string(args[0]))
	switch name {
	case "hello":
		s.hellos++
		s.resp3 = string(args[1]) == "3"
		if s.resp3 {
			return []byte(hello3Reply)
		}
		return []byte(hello2Reply)
	case "auth":
		if s.hellos == 0 {
			return []byte("+OK\r\n")
		}
		s.b.auths.Add(1)
		switch {
		case !s.resp3 && len(s.subs) > 0:
			return []byte("-ERR Can't execute 'auth': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n")
		case s.b.rnd.IntN(8) == 0:
			s.b.refused.Add(1)
			return []byte("-WRONGPASS invalid username-password pair\r\n")
		}
		return []byte("+OK\r\n")
	case "client":
		return []byte("+OK\r\n")
	case "ping":
		p := ""
		if len(args) > 1 {
			p = string(args[1])
		}
		if !s.resp3 && len(s.subs) > 0 {
			return []byte("*2\r\n$4\r\npong\r\n" + bulk(p))
		}
		if p == "" {
			return []byte("+PONG\r\n")
		}
		return []byte(bulk(p))
	case "subscribe":
		for _, a := range args[1:] {
			if string(a) == "secret" {
				return []byte("-NOPERM this user has no permissions to access the 'secret' channel\r\n")
			}
		}
		var out []byte
		for _, a := range args[1:] {
			s.subs[string(a)] = true
			out = append(out, s.agg(3)+"$9\r\nsubscribe\r\n"+bulk(string(a))+":"+strconv.Itoa(len(s.subs))+"\r\n"...)
		}
		return out
	case "unsubscribe":
		chs := args[1:]
		if len(chs) == 0 {
			for ch := range s.subs {
				chs = append(chs, []byte(ch))
			}
		}
		if len(chs) == 0 {
			return []byte(s.agg(3) + "$11\r\nunsubscribe\r\n" + map[bool]string{true: "_\r\n", false: "$-1\r\n"}[s.resp3] + ":0\r\n")
		}
		var out []byte
		for _, a := range chs {
			delete(s.subs, string(a))
			out = append(out, s.agg(3)+"$11\r\nunsubscribe\r\n"+bulk(string(a))+":"+strconv.Itoa(len(s.subs))+"\r\n"...)
		}
		return out
	}
	return []byte("-ERR unknown command\r\n")
}

// publish sends a message on "news" to every connection subscribed to it.
func (b *psBroker) publish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.published++
	p := strconv.FormatInt(b.published, 10)
	for s := range b.conns {
		if s.subs["news"] {
			s.out <- []byte(s.agg(3) + "$7\r\nmessage\r\n$4\r\nnews\r\n" + bulk(p))
		}
	}
}

// psExpect is a reply go-redis waits for: a confirmation of kind for ch, an error, or a PONG.
type psExpect struct{ kind, ch string }

func runPubSubModel(t *testing.T, rnd *rand.Rand, resp3 bool, d time.Duration) {
	src := newFakeSource(t, time.Hour)
	h := quietHook(t, src, nil)
	b := &psBroker{rnd: rand.New(rand.NewPCG(rnd.Uint64(), 11)), conns: map[*psServer]bool{}}
	var dials atomic.Int64
	newPipe := func() net.Conn {
		cli, srv := net.Pipe()
		go b.serve(srv, rand.New(rand.NewPCG(rnd.Uint64(), 12)))
		return cli
	}
	var rmu sync.Mutex // rnd, for the dialler
	redial := func(context.Context) (net.Conn, error) {
		dials.Add(1)
		rmu.Lock()
		defer rmu.Unlock()
		return newPipe(), nil
	}
	rmu.Lock()
	c := h.g.wrap(newPipe(), redial).(*conn)
	rmu.Unlock()
	defer c.Close()

	// go-redis: every write under its WriteTimeout, every read under a short ReadTimeout.
	write := func(b []byte) {
		t.Helper()
		goRedisWrite(t, c, b)
	}
	var acc []byte
	buf := make([]byte, 256)
	readFrame := func(r *rand.Rand, until time.Time) (string, bool) {
		t.Helper()
		for {
			l, err := resp.FrameLen(acc)
			require.NoError(t, err)
			if l > 0 {
				f := string(acc[:l])
				acc = acc[l:]
				return f, true
			}
			if time.Now().After(until) {
				return "", false
			}
			require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Duration(10+r.IntN(40))*time.Millisecond)))
			n, err := c.Read(buf[:1+r.IntN(len(buf))])
			acc = append(acc, buf[:n]...)
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				require.NoError(t, err, "go-redis's read")
			}
		}
	}
	proto := map[bool]string{false: "2", true: "3"}[resp3]
	write(append(req("hello", proto, "auth", testOID, src.token()), req("client", "setname", "model")...))
	r := rand.New(rand.NewPCG(rnd.Uint64(), 13))
	f, ok := readFrame(r, time.Now().Add(5*time.Second))
	require.True(t, ok)
	require.Equal(t, map[bool]string{false: hello2Reply, true: hello3Reply}[resp3], f)
	f, ok = readFrame(r, time.Now().Add(5*time.Second))
	require.True(t, ok)
	require.Equal(t, "+OK\r\n", f)
	write(req("subscribe", "news"))
	f, ok = readFrame(r, time.Now().Add(5*time.Second))
	require.True(t, ok)
	require.Contains(t, f, "subscribe\r\n$4\r\nnews")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Messages on "news" all along; tokens at random moments, and the margin.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			b.publish()
		}
	})
	wg.Go(func() {
		tr := rand.New(rand.NewPCG(rnd.Uint64(), 14))
		for life := 2 * time.Hour; ; life += time.Hour {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(5+tr.IntN(30)) * time.Millisecond):
			}
			src.mu.Lock()
			src.life = life
			src.mu.Unlock()
			require.NoError(t, src.mint())
			h.g.offer(testOID, src.token()) // renews subscribers (in place, or moved) in the background
			if tr.IntN(4) == 0 {
				h.g.rotatePubSub(h.g.cur.Load().exp, false) // the margin
			}
		}
	})

	// go-redis's own commands, written between reads; what it expects back, in order.
	var expect []psExpect
	subs := map[string]bool{}
	lastNews, dups := int64(0), 0
	commands := 0
	deadline := time.Now().Add(d)
	nextWrite := time.Now()
	for time.Now().Before(deadline) {
		// A subscriber mostly reads: its last write deadline has often lapsed when a token comes.
		if time.Now().After(nextWrite) {
			nextWrite = time.Now().Add(time.Duration(5+r.IntN(75)) * time.Millisecond)
			ch := "c" + strconv.Itoa(r.IntN(3))
			switch k := r.IntN(4); {
			case k == 0 && !subs[ch]:
				write(req("subscribe", ch))
				subs[ch] = true
				expect = append(expect, psExpect{"subscribe", ch})
			case k == 1 && subs[ch]:
				write(req("unsubscribe", ch))
				delete(subs, ch)
				expect = append(expect, psExpect{"unsubscribe", ch})
			case k == 2:
				write(req("subscribe", "secret"))
				expect = append(expect, psExpect{"error", ""})
			default:
				write(req("ping"))
				expect = append(expect, psExpect{"pong", ""})
			}
			commands++
		}
		f, ok := readFrame(r, time.Now().Add(20*time.Millisecond))
		if !ok {
			continue
		}
		fb := []byte(f)
		if bytes.Contains(fb, []byte("$7\r\nmessage\r\n$4\r\nnews\r\n")) {
			_, p := resp.Payload([]byte(f[strings.LastIndex(f, "\r\n$")+2:]))
			n, err := strconv.ParseInt(string(p), 10, 64)
			require.NoError(t, err)
			switch {
			case n == lastNews+1:
			case !resp3 && n <= lastNews:
				dups++ // a RESP2 move delivers what both connections received
				continue
			default:
				require.Failf(t, "a message lost or out of order", "news %d after %d", n, lastNews)
			}
			lastNews = n
			continue
		}
		require.NotEmpty(t, expect, "a frame go-redis did not ask for: %q", f)
		e := expect[0]
		expect = expect[1:]
		switch e.kind {
		case "error":
			require.True(t, strings.HasPrefix(f, "-NOPERM"), "the refused subscription's error, got %q", f)
		case "pong":
			require.True(t, f == "+PONG\r\n" || f == "*2\r\n$4\r\npong\r\n$0\r\n\r\n", "PING's reply, got %q", f)
		default:
			require.Contains(t, f, "$"+strconv.Itoa(len(e.kind))+"\r\n"+e.kind+"\r\n"+bulk(e.ch), "%s %s's confirmation", e.kind, e.ch)
		}
	}
	close(stop)
	wg.Wait()
	// What was published reaches go-redis.
	b.mu.Lock()
	last := b.published
	b.mu.Unlock()
	for lastNews < last || len(expect) > 0 {
		f, ok := readFrame(r, time.Now().Add(5*time.Second))
		require.True(t, ok, "news up to %d, got to %d; %d replies due", last, lastNews, len(expect))
		if bytes.Contains([]byte(f), []byte("$7\r\nmessage\r\n")) {
			_, p := resp.Payload([]byte(f[strings.LastIndex(f, "\r\n$")+2:]))
			n, _ := strconv.ParseInt(string(p), 10, 64)
			if n == lastNews+1 {
				lastNews = n
			} else {
				require.True(t, !resp3 && n <= lastNews, "news %d after %d", n, lastNews)
			}
			continue
		}
		require.NotEmpty(t, expect, "a frame go-redis did not ask for: %q", f)
		expect = expect[1:]
	}
	st := h.Stats()
	t.Logf("RESP%s subscriber: commands %d, messages %d (%d twice); renewed in place %d, refused %d, moved %d (dials %d), closed %d, renewal failures %d; server AUTHs %d (refused %d)",
		proto, commands, last, dups, st.PubSubReauths, st.ReauthFailures, st.PubSubMoved, dials.Load(), st.PubSubClosed, st.PubSubMoveFailures, b.auths.Load(), b.refused.Load())
	assert.Zero(t, st.PubSubClosed, "never closed under go-redis")
	assert.Zero(t, st.PubSubMoveFailures)
	if resp3 {
		assert.Positive(t, st.PubSubReauths, "renewed in place")
		assert.Zero(t, dups)
		// Every AUTH the guard wrote was answered, and its answer taken (the last may be unread).
		assert.InDelta(t, b.auths.Load(), int64(st.PubSubReauths+st.ReauthFailures), 1)
	} else {
		assert.Positive(t, st.PubSubMoved, "moved")
	}
}
