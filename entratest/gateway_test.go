package entratest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

// backends are the servers a gateway must work in front of.
var backends = []string{"redis-server", "miniredis"}

func startBackend(t *testing.T, kind string) string {
	t.Helper()
	if kind == "miniredis" {
		return miniredis.RunT(t).Addr()
	}
	requireRedisServer(t)
	return StartRedis(t, nil).Addr()
}

// rawConn speaks RESP by hand, to see exactly what the gateway answers.
type rawConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *rawConn) send(args ...string) {
	c.t.Helper()
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	_, err := c.Write(encodeCommand(b...))
	require.NoError(c.t, err)
}

// read returns the next reply's raw text, or the error (io.EOF when the gateway closed).
func (c *rawConn) read(timeout time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	rp, err := readReply(c.r)
	if err != nil {
		return "", err
	}
	return string(rp.raw), nil
}

func (c *rawConn) roundTrip(args ...string) string {
	c.t.Helper()
	c.send(args...)
	s, err := c.read(5 * time.Second)
	require.NoError(c.t, err)
	return s
}

func TestGatewayAuthenticates(t *testing.T) {
	iss := newTestIssuer(t, nil)
	for _, backend := range backends {
		for _, proto := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s/RESP%d", backend, proto), func(t *testing.T) {
				g := StartGateway(t, iss, startBackend(t, backend), nil)
				tok, _, err := iss.Mint(time.Hour)
				require.NoError(t, err)
				c := redis.NewClient(&redis.Options{Addr: g.Addr(), Protocol: proto, Username: iss.ObjectID(), Password: tok, ClientName: "gw-test"})
				defer c.Close()
				ctx := context.Background()
				require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
				v, err := c.Get(ctx, "k").Result()
				require.NoError(t, err)
				assert.Equal(t, "v", v)
				st := g.Stats()
				assert.Equal(t, int64(1), st.AuthAccepted, "HELLO AUTH accepted at once")
				assert.Zero(t, st.AuthRefused)
				assert.Equal(t, int64(1), st.Connections)
				assert.Equal(t, int64(1), st.Active)
			})
		}
	}
}

func TestGatewayNoAuth(t *testing.T) {
	iss := newTestIssuer(t, nil)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			g := StartGateway(t, iss, startBackend(t, backend), nil)
			c := redis.NewClient(&redis.Options{Addr: g.Addr()})
			defer c.Close()
			err := c.Ping(context.Background()).Err()
			require.Error(t, err)
			assert.Equal(t, "NOAUTH Authentication required.", err.Error())

			raw := dialRaw(t, g.Addr())
			assert.Equal(t, replyNoAuth, raw.roundTrip("GET", "k"))
			assert.True(t, strings.HasPrefix(raw.roundTrip("HELLO", "3"), "-NOAUTH HELLO must be called"))
			assert.Equal(t, replyAuthArity, raw.roundTrip("AUTH", "a", "b", "c"))
			assert.Equal(t, replyOK, raw.roundTrip("QUIT"))
			_, err = raw.read(time.Second)
			assert.ErrorIs(t, err, io.EOF, "QUIT closes")
			assert.GreaterOrEqual(t, g.Stats().NoAuth, int64(2))
		})
	}
}

func TestGatewayRefusesBadTokens(t *testing.T) {
	iss := newTestIssuer(t, nil)
	other, err := NewIssuer(nil) // another key
	require.NoError(t, err)
	mint := func(i *Issuer, o TokenOptions) string {
		tok, _, err := i.MintWith(o)
		require.NoError(t, err)
		return tok
	}
	good := mint(iss, TokenOptions{})
	tests := []struct {
		name  string
		user  string
		token string
	}{
		{name: "expired", token: mint(iss, TokenOptions{Lifetime: -time.Second})},
		{name: "wrong user", user: "someone-else", token: good},
		{name: "token of another user", token: mint(iss, TokenOptions{ObjectID: "someone-else"})},
		{name: "bad signature", token: mint(other, TokenOptions{})},
		{name: "wrong audience", token: mint(iss, TokenOptions{Audience: "https://storage.azure.com"})},
		{name: "not valid yet", token: mint(iss, TokenOptions{NotBefore: time.Now().Add(time.Hour)})},
		{name: "tampered", token: good[:len(good)-4] + "AAAA"},
		{name: "garbage", token: "not-a-token"},
		{name: "empty", token: ""},
	}
	for _, backend := range backends {
		g := StartGateway(t, iss, startBackend(t, backend), nil)
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				user := tt.user
				if user == "" {
					user = iss.ObjectID()
				}
				raw := dialRaw(t, g.Addr())
				assert.Equal(t, replyWrongPass, raw.roundTrip("AUTH", user, tt.token))
				assert.Equal(t, replyWrongPass, raw.roundTrip("HELLO", "3", "AUTH", user, tt.token))
				assert.Equal(t, replyNoAuth, raw.roundTrip("PING"), "still unauthenticated")
				if tt.token == "" {
					return // go-redis sends no AUTH without a password
				}

				before := g.Stats().AuthRefused
				c := redis.NewClient(&redis.Options{Addr: g.Addr(), Username: user, Password: tt.token, MaxRetries: -1})
				defer c.Close()
				err := c.Ping(context.Background()).Err()
				require.Error(t, err)
				assert.Contains(t, err.Error(), "ERR WRONGPASS invalid username-password pair")
				assert.False(t, strings.Contains(err.Error(), tt.token), "the error holds no token")
				assert.Greater(t, g.Stats().AuthRefused, before)
			})
		}
	}
}

func TestGatewayClosesAtExpiry(t *testing.T) {
	iss := newTestIssuer(t, nil)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			g := StartGateway(t, iss, startBackend(t, backend), nil)
			tok, exp, err := iss.Mint(time.Second)
			require.NoError(t, err)
			raw := dialRaw(t, g.Addr())
			assert.Equal(t, replyOK, raw.roundTrip("AUTH", iss.ObjectID(), tok))
			assert.Equal(t, "+PONG\r\n", raw.roundTrip("PING"))
			_, err = raw.read(5 * time.Second)
			closedAt := time.Now()
			require.ErrorIs(t, err, io.EOF, "closed without a reply")
			assert.False(t, closedAt.Before(exp), "not before the token expired")
			assert.Less(t, closedAt.Sub(exp), 500*time.Millisecond, "promptly at expiry")
			require.Eventually(t, func() bool { return g.Stats().Active == 0 }, 2*time.Second, 10*time.Millisecond)
			assert.Equal(t, int64(1), g.Stats().ExpiryCloses)
		})
	}
}

func TestGatewayReAuthExtends(t *testing.T) {
	iss := newTestIssuer(t, nil)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			g := StartGateway(t, iss, startBackend(t, backend), nil)
			short, exp, err := iss.Mint(time.Second)
			require.NoError(t, err)
			long, _, err := iss.Mint(time.Hour)
			require.NoError(t, err)
			expired, _, err := iss.Mint(-time.Minute)
			require.NoError(t, err)

			raw := dialRaw(t, g.Addr())
			assert.True(t, strings.HasPrefix(raw.roundTrip("HELLO", "2", "AUTH", iss.ObjectID(), short), "*"), "HELLO's map as a RESP2 array")
			assert.Equal(t, replyOK, raw.roundTrip("AUTH", iss.ObjectID(), long))
			// A refused AUTH leaves the connection as it was, like Redis.
			assert.Equal(t, replyWrongPass, raw.roundTrip("AUTH", iss.ObjectID(), expired))
			// The connection outlives the first token.
			_, err = raw.read(time.Until(exp) + 500*time.Millisecond)
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "no close, no reply: %v", err)
			assert.Equal(t, "+PONG\r\n", raw.roundTrip("PING"))
			assert.Zero(t, g.Stats().ExpiryCloses)
		})
	}
}

func TestGatewayPipelineOrder(t *testing.T) {
	iss := newTestIssuer(t, nil)
	good, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	oid := iss.ObjectID()
	for _, backend := range backends {
		for _, proto := range []string{"2", "3"} {
			t.Run(backend+"/RESP"+proto, func(t *testing.T) {
				g := StartGateway(t, iss, startBackend(t, backend), nil)
				raw := dialRaw(t, g.Addr())
				cmds := [][]string{
					{"AUTH", oid, "bad"},
					{"PING"},
					{"HELLO", proto, "AUTH", oid, good},
					{"SET", "a", "1"},
					{"AUTH", oid, "bad"},
					{"INCR", "a"},
					{"AUTH", oid, good},
					{"BLPOP", "nolist", "0.05"},
					{"AUTH", oid, good},
					{"GET", "a"},
					{"ECHO", "entratest-gateway-1-1"}, // looks like a marker, is not one
				}
				var all []byte
				for _, c := range cmds {
					b := make([][]byte, len(c))
					for i, a := range c {
						b[i] = []byte(a)
					}
					all = append(all, encodeCommand(b...)...)
				}
				_, err := raw.Write(all) // one write: a real pipeline
				require.NoError(t, err)
				var got []string
				for range cmds {
					s, err := raw.read(5 * time.Second)
					require.NoError(t, err)
					got = append(got, s)
				}
				null := "*-1\r\n"
				if proto == "3" && backend == "redis-server" {
					null = "_\r\n" // miniredis answers RESP2's null array in RESP3 too
				}
				assert.Equal(t, replyWrongPass, got[0])
				assert.Equal(t, replyNoAuth, got[1])
				assert.True(t, strings.HasPrefix(got[2], map[string]string{"2": "*", "3": "%"}[proto]), "HELLO reply: %q", got[2])
				assert.Equal(t, []string{replyOK, replyWrongPass, ":2\r\n", replyOK, null, replyOK, "$1\r\n2\r\n", "$21\r\nentratest-gateway-1-1\r\n"}, got[3:])
			})
		}
	}
}

func TestGatewayGoRedisPipeline(t *testing.T) {
	iss := newTestIssuer(t, nil)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			g := StartGateway(t, iss, startBackend(t, backend), nil)
			tok, _, err := iss.Mint(time.Hour)
			require.NoError(t, err)
			c := redis.NewClient(&redis.Options{Addr: g.Addr(), Username: iss.ObjectID(), Password: tok})
			defer c.Close()
			ctx := context.Background()
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := range 100 {
					p.Incr(ctx, "n")
					if i%10 == 0 {
						p.AuthACL(ctx, iss.ObjectID(), tok)
					}
				}
				return nil
			})
			require.NoError(t, err)
			n := int64(0)
			for _, cmd := range cmds {
				if ic, ok := cmd.(*redis.IntCmd); ok {
					n++
					assert.Equal(t, n, ic.Val())
				} else {
					assert.Equal(t, "OK", cmd.(*redis.StatusCmd).Val())
				}
			}
			assert.Equal(t, int64(100), n)
		})
	}
}

func TestGatewayPubSub(t *testing.T) {
	iss := newTestIssuer(t, nil)
	for _, backend := range backends {
		for _, proto := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s/RESP%d", backend, proto), func(t *testing.T) {
				g := StartGateway(t, iss, startBackend(t, backend), nil)
				tok, _, err := iss.Mint(time.Hour)
				require.NoError(t, err)
				opts := &redis.Options{Addr: g.Addr(), Protocol: proto, Username: iss.ObjectID(), Password: tok}
				sub := redis.NewClient(opts)
				defer sub.Close()
				pub := redis.NewClient(opts)
				defer pub.Close()
				ctx := context.Background()
				ps := sub.Subscribe(ctx, "ch")
				defer ps.Close()
				_, err = ps.Receive(ctx) // the subscription confirmation
				require.NoError(t, err)
				require.NoError(t, ps.Ping(ctx, "hi"))
				ch := ps.Channel()
				for i := range 20 {
					require.NoError(t, pub.Publish(ctx, "ch", fmt.Sprint(i)).Err())
				}
				for i := range 20 {
					select {
					case m := <-ch:
						assert.Equal(t, fmt.Sprint(i), m.Payload)
					case <-time.After(5 * time.Second):
						t.Fatalf("message %d not received", i)
					}
				}
			})
		}
	}
}

func TestGatewaySubscribedAUTH(t *testing.T) {
	iss := newTestIssuer(t, nil)
	good, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	oid := iss.ObjectID()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			g := StartGateway(t, iss, startBackend(t, backend), nil)
			raw := dialRaw(t, g.Addr())
			assert.Equal(t, replyOK, raw.roundTrip("AUTH", oid, good))
			assert.Contains(t, raw.roundTrip("SUBSCRIBE", "ch"), "subscribe")
			// RESP2 subscribed mode: Redis refuses AUTH, so the token cannot be extended.
			assert.True(t, strings.HasPrefix(raw.roundTrip("AUTH", oid, good), "-ERR"))
			assert.Contains(t, raw.roundTrip("PING", "x"), "pong")
			assert.Contains(t, raw.roundTrip("UNSUBSCRIBE", "ch"), "unsubscribe")
			require.Eventually(t, func() bool {
				// Out of subscribed mode, AUTH is the gateway's again.
				return raw.roundTrip("AUTH", oid, good) == replyOK
			}, 2*time.Second, 10*time.Millisecond)
		})
	}
}

func TestGatewayTLS(t *testing.T) {
	iss := newTestIssuer(t, nil)
	ca, err := NewTestCA()
	require.NoError(t, err)
	srvCfg, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	g := StartGateway(t, iss, startBackend(t, "miniredis"), &GatewayOptions{TLS: srvCfg})
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	ctx := context.Background()

	tests := []struct {
		name string
		tls  *tls.Config
		ok   bool
	}{
		{name: "trusted CA", tls: ca.ClientTLSConfig(), ok: true},
		{name: "localhost name", tls: &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"}, ok: true},
		{name: "system roots only", tls: &tls.Config{}},
		{name: "plain TCP", tls: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: g.Addr(), TLSConfig: tt.tls, Username: iss.ObjectID(), Password: tok,
				MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
			defer c.Close()
			err := c.Ping(ctx).Err()
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			if tt.tls != nil {
				var ua x509.UnknownAuthorityError
				assert.True(t, errors.As(err, &ua), "unknown authority, got %v", err)
			}
		})
	}
}

func TestGatewayBackendDown(t *testing.T) {
	iss := newTestIssuer(t, nil)
	port, err := FreePort()
	require.NoError(t, err)
	g := StartGateway(t, iss, fmt.Sprintf("127.0.0.1:%d", port), &GatewayOptions{DialTimeout: time.Second})
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	c := redis.NewClient(&redis.Options{Addr: g.Addr(), Username: iss.ObjectID(), Password: tok, MaxRetries: -1})
	defer c.Close()
	require.Error(t, c.Ping(context.Background()).Err())
	assert.Equal(t, int64(1), g.Stats().BackendDown)

	// A backend that goes away closes its clients' connections.
	m := miniredis.RunT(t)
	g2 := StartGateway(t, iss, m.Addr(), nil)
	raw := dialRaw(t, g2.Addr())
	assert.Equal(t, replyOK, raw.roundTrip("AUTH", iss.ObjectID(), tok))
	m.Close()
	_, err = raw.read(5 * time.Second)
	require.Error(t, err)
	require.Eventually(t, func() bool { return g2.Stats().BackendDown == 1 && g2.Stats().Active == 0 }, 2*time.Second, 10*time.Millisecond)
}

func TestGatewayDropConnections(t *testing.T) {
	iss := newTestIssuer(t, nil)
	g := StartGateway(t, iss, startBackend(t, "miniredis"), nil)
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	c := redis.NewClient(&redis.Options{Addr: g.Addr(), Username: iss.ObjectID(), Password: tok})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Ping(ctx).Err())
	assert.Equal(t, 1, g.DropConnections())
	require.NoError(t, c.Ping(ctx).Err(), "go-redis reconnects")
	assert.Equal(t, int64(2), g.Stats().Connections)
	assert.Zero(t, g.Stats().ExpiryCloses)
}

func TestGatewayProtocolErrors(t *testing.T) {
	iss := newTestIssuer(t, nil)
	g := StartGateway(t, iss, startBackend(t, "miniredis"), nil)
	tests := []struct {
		name, input string
	}{
		{name: "bad count", input: "*x\r\n"},
		{name: "not a bulk", input: "*1\r\n+PING\r\n"},
		{name: "bad bulk length", input: "*1\r\n$-5\r\n"},
		{name: "unterminated bulk", input: "*1\r\n$4\r\nPINGxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := dialRaw(t, g.Addr())
			_, err := raw.Write([]byte(tt.input))
			require.NoError(t, err)
			s, err := raw.read(2 * time.Second)
			require.NoError(t, err)
			assert.True(t, strings.HasPrefix(s, "-ERR Protocol error"), s)
			_, err = raw.read(2 * time.Second)
			assert.ErrorIs(t, err, io.EOF)
		})
	}
	raw := dialRaw(t, g.Addr())
	_, err := raw.Write([]byte("PING\r\n\r\n"))
	require.NoError(t, err)
	s, err := raw.read(2 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, replyNoAuth, s, "inline commands are understood")
}

func TestGatewayLogsNoToken(t *testing.T) {
	iss := newTestIssuer(t, nil)
	var logs testutil.SyncBuffer
	g := StartGateway(t, iss, startBackend(t, "miniredis"), &GatewayOptions{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	good, _, err := iss.Mint(time.Second)
	require.NoError(t, err)
	expired, _, err := iss.Mint(-time.Second)
	require.NoError(t, err)
	raw := dialRaw(t, g.Addr())
	assert.Equal(t, replyWrongPass, raw.roundTrip("AUTH", iss.ObjectID(), expired))
	assert.Equal(t, replyOK, raw.roundTrip("AUTH", iss.ObjectID(), good))
	_, err = raw.read(5 * time.Second)
	require.ErrorIs(t, err, io.EOF)
	require.Eventually(t, func() bool { return g.Stats().ExpiryCloses == 1 }, 2*time.Second, 10*time.Millisecond)
	out := logs.String()
	assert.Contains(t, out, "AUTH refused")
	assert.Contains(t, out, "token expired")
	for _, tok := range []string{good, expired} {
		for _, seg := range strings.Split(tok, ".")[1:] {
			assert.False(t, strings.Contains(out, seg), "a token segment is in the log")
		}
	}
}

func TestGatewayCloseLeavesNoGoroutine(t *testing.T) {
	iss := newTestIssuer(t, nil)
	m := miniredis.RunT(t)
	base := runtime.NumGoroutine()
	g, err := NewGateway(iss, m.Addr(), nil)
	require.NoError(t, err)
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	c := redis.NewClient(&redis.Options{Addr: g.Addr(), Username: iss.ObjectID(), Password: tok, PoolSize: 4})
	ctx := context.Background()
	for range 10 {
		require.NoError(t, c.Incr(ctx, "n").Err())
	}
	raw, err := net.Dial("tcp", g.Addr()) // an idle, unauthenticated client too
	require.NoError(t, err)
	require.NoError(t, g.Close())
	require.NoError(t, g.Close(), "idempotent")
	assert.Zero(t, g.Stats().Active)
	require.NoError(t, c.Close())
	_ = raw.Close()
	testutil.WaitGoroutines(t, base)
}

// Redis runs a client's commands in order, and so does the gateway: an AUTH written behind a
// blocked command takes effect only when that command returns, so it cannot save a connection
// blocked through its token's expiry. Without anything in flight, the same AUTH does.
func TestGatewayAuthBehindBlockedCommand(t *testing.T) {
	requireRedisServer(t)
	iss := newTestIssuer(t, nil)
	cases := []struct {
		name      string
		block     []string // sent before the AUTH; nil: nothing in flight
		wantClose bool
	}{
		{"BLPOP in flight", []string{"BLPOP", "entratest:empty", "3"}, true},
		{"XREAD BLOCK in flight", []string{"XREAD", "BLOCK", "3000", "STREAMS", "entratest:stream", "$"}, true},
		{"nothing in flight", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartGateway(t, iss, StartRedis(t, nil).Addr(), nil)
			short, exp, err := iss.Mint(time.Second)
			require.NoError(t, err)
			long, _, err := iss.Mint(time.Hour)
			require.NoError(t, err)
			raw := dialRaw(t, g.Addr())
			assert.Equal(t, replyOK, raw.roundTrip("AUTH", iss.ObjectID(), short))
			assert.Equal(t, "+PONG\r\n", raw.roundTrip("PING")) // something went to the backend
			if tc.block != nil {
				raw.send(tc.block...)
			}
			raw.send("AUTH", iss.ObjectID(), long)
			if tc.wantClose {
				_, err = raw.read(10 * time.Second)
				closedAt := time.Now()
				require.ErrorIs(t, err, io.EOF, "closed under the blocked command, its AUTH not yet run")
				assert.False(t, closedAt.Before(exp), "not before the token expired")
				assert.Less(t, closedAt.Sub(exp), 500*time.Millisecond, "at expiry, not when the block ended")
				require.Eventually(t, func() bool { return g.Stats().ExpiryCloses == 1 }, 2*time.Second, 10*time.Millisecond)
				return
			}
			s, err := raw.read(5 * time.Second)
			require.NoError(t, err)
			assert.Equal(t, replyOK, s)
			_, err = raw.read(time.Until(exp) + 500*time.Millisecond)
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "no close, no reply: %v", err)
			assert.Equal(t, "+PONG\r\n", raw.roundTrip("PING"))
			assert.Zero(t, g.Stats().ExpiryCloses)
		})
	}
}

// A connection on which nothing travels for IdleTimeout is closed, as Azure closes connections
// idle for 10 minutes; traffic keeps it open.
func TestGatewayIdleTimeout(t *testing.T) {
	iss := newTestIssuer(t, nil)
	const idle = 400 * time.Millisecond
	g := StartGateway(t, iss, miniredis.RunT(t).Addr(), &GatewayOptions{IdleTimeout: idle})
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	raw := dialRaw(t, g.Addr())
	assert.Equal(t, replyOK, raw.roundTrip("AUTH", iss.ObjectID(), tok))
	for range 6 { // 6 x idle/2: busier than the timeout
		time.Sleep(idle / 2)
		assert.Equal(t, "+PONG\r\n", raw.roundTrip("PING"))
	}
	start := time.Now()
	_, err = raw.read(5 * time.Second)
	require.ErrorIs(t, err, io.EOF, "closed without a reply")
	assert.InDelta(t, idle.Seconds(), time.Since(start).Seconds(), 0.3, "closed after IdleTimeout of silence")
	require.Eventually(t, func() bool { return g.Stats().IdleCloses == 1 }, 2*time.Second, 10*time.Millisecond)
	assert.Zero(t, g.Stats().ExpiryCloses)
}
