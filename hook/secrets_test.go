package hook_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// tokens is a credential that hands out the good issuer's tokens, or the foreign one's (which the
// gateway refuses) once flipped, and remembers every token it handed out.
type tokens struct {
	good, foreign *entratest.Issuer
	flipped       atomic.Bool

	mu  sync.Mutex
	all []string
}

func (c *tokens) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	iss := c.good
	if c.flipped.Load() {
		iss = c.foreign
	}
	at, err := iss.GetToken(ctx, o)
	if err == nil {
		c.mu.Lock()
		c.all = append(c.all, at.Token)
		c.mu.Unlock()
	}
	return at, err
}

func (c *tokens) issued() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.all...)
}

// TestNoSecretInLogsOrEvents drives, through entratest's gateway in front of a real redis-server,
// every path where the guard writes an AUTH of its own and reports it: a pub/sub connection
// re-authenticated in place (RESP3), one moved to a new connection (RESP2), and a new token
// the server refuses on an open connection. With a Debug logger on both the provider and the hook,
// no token (nor any of its three segments) may appear in a log line or an event.
func TestNoSecretInLogsOrEvents(t *testing.T) {
	testutil.Slow(t)
	const life = 2 * time.Second
	cases := []struct {
		name  string
		proto int
		run   func(t *testing.T, ctx context.Context, rdb *redis.Client, cred *tokens, p *provider.Provider, h *hook.Hook, note func(string))
	}{
		{"pub/sub re-authenticated in place (RESP3)", 3, func(t *testing.T, ctx context.Context, rdb *redis.Client, _ *tokens, _ *provider.Provider, h *hook.Hook, _ func(string)) {
			ps := subscribe(t, ctx, rdb)
			waitFor(t, "a pub/sub connection re-authenticated in place", func() bool { return h.Stats().PubSubReauths > 0 })
			require.NoError(t, ps.Close())
		}},
		{"pub/sub moved to a new connection (RESP2)", 2, func(t *testing.T, ctx context.Context, rdb *redis.Client, _ *tokens, _ *provider.Provider, h *hook.Hook, _ func(string)) {
			ps := subscribe(t, ctx, rdb)
			waitFor(t, "a pub/sub connection moved to a new connection before its token expired", func() bool { return h.Stats().PubSubMoved > 0 })
			require.NoError(t, ps.Close())
		}},
		{"new token refused on an open connection", 3, func(t *testing.T, ctx context.Context, rdb *redis.Client, cred *tokens, p *provider.Provider, h *hook.Hook, _ func(string)) {
			require.NoError(t, rdb.Ping(ctx).Err())
			cred.flipped.Store(true)
			require.NoError(t, p.Refresh(ctx))
			// The connection keeps its token (still valid), so the command succeeds.
			require.NoError(t, rdb.Ping(ctx).Err())
			waitFor(t, "a renewal the server refused", func() bool { return h.Stats().ReauthFailures > 0 })
		}},
		{"token refused, blocked and re-checked: the command errors too", 3, func(t *testing.T, ctx context.Context, rdb *redis.Client, cred *tokens, p *provider.Provider, h *hook.Hook, note func(string)) {
			cred.flipped.Store(true)
			require.NoError(t, p.Refresh(ctx))
			err := rdb.Ping(ctx).Err() // the handshake is refused, its refresh too: blocked
			require.ErrorIs(t, err, hook.ErrTokenRefused)
			note(err.Error())
			// A re-check rides on a command once it is due (250 ms after the block).
			waitFor(t, "a re-check of the blocked token", func() bool {
				if err := rdb.Ping(ctx).Err(); err != nil {
					note(err.Error())
				}
				return h.Stats().Rechecks > 0
			})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life})
			require.NoError(t, err)
			foreign, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour}) // its own key, a later expiry
			require.NoError(t, err)
			gw := entratest.StartGateway(t, good, entratest.StartRedis(t, nil).Addr(), nil)
			cred := &tokens{good: good, foreign: foreign}
			base := runtime.NumGoroutine()

			var logs testutil.SyncBuffer
			// A text handler writes a []byte or a string as it is: a token in an attribute shows.
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			var mu sync.Mutex
			var events []string
			p, err := provider.New(cred, &provider.Options{Logger: logger, OnEvent: func(e provider.Event) {
				mu.Lock()
				events = append(events, fmt.Sprintf("%+v %v", e, e.Err))
				mu.Unlock()
			}})
			require.NoError(t, err)
			h := hook.New(p, &hook.Options{Logger: logger, OnEvent: func(e hook.Event) {
				mu.Lock()
				events = append(events, fmt.Sprintf("%+v %v", e, e.Err))
				mu.Unlock()
			}})
			rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), Protocol: tc.proto, CredentialsProviderContext: p.CredentialsProviderContext})
			rdb.AddHook(h)
			ctx := context.Background()

			tc.run(t, ctx, rdb, cred, p, h, func(s string) { // command errors, checked as the logs are
				mu.Lock()
				events = append(events, s)
				mu.Unlock()
			})

			require.NoError(t, rdb.Close())
			require.NoError(t, h.Close())
			require.NoError(t, p.Close())
			mu.Lock()
			out := logs.String() + "\n" + strings.Join(events, "\n")
			nEvents := len(events)
			mu.Unlock()
			toks := cred.issued()
			t.Logf("%d tokens issued, %d log lines, %d events, %d AUTHs accepted and %d refused by the gateway: checked for every token segment",
				len(toks), strings.Count(logs.String(), "\n"), nEvents, gw.Stats().AuthAccepted, gw.Stats().AuthRefused)
			require.NotEmpty(t, logs.String(), "the loggers were used")
			require.NotZero(t, nEvents, "events were sent")
			for i, tok := range toks {
				// Without saying which segment: a failure message must not carry a token either.
				for j, seg := range strings.Split(tok, ".") {
					assert.False(t, strings.Contains(out, seg), "segment %d of token %d appears in a log line or an event", j, i)
				}
			}
			testutil.WaitGoroutines(t, base)
		})
	}
}

func subscribe(t *testing.T, ctx context.Context, rdb *redis.Client) *redis.PubSub {
	t.Helper()
	ps := rdb.Subscribe(ctx, "news")
	_, err := ps.Receive(ctx) // the subscription's confirmation
	require.NoError(t, err)
	go func() {
		for range ps.Channel() { // keep reading, as a subscriber does
		}
	}()
	return ps
}

// waitFor waits, with a deadline of several token lives, for what the case must have driven.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
