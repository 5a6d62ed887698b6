package rueidisentra

import (
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/renewal"
	"github.com/entraredis/entraredis/provider"
)

func TestAzureTLS(t *testing.T) {
	for _, tc := range []struct {
		addrs []string
		want  *tls.Config
	}{
		{[]string{"mycache.redis.cache.windows.net:6380"}, &tls.Config{MinVersion: tls.VersionTLS12, ServerName: "mycache.redis.cache.windows.net"}},
		{[]string{"a.westeurope.redis.azure.net:10000", "a.westeurope.redis.azure.net:8501"}, &tls.Config{MinVersion: tls.VersionTLS12, ServerName: "a.westeurope.redis.azure.net"}},
		{[]string{"a.redis.azure.net:10000", "b.redis.azure.net:10000"}, &tls.Config{MinVersion: tls.VersionTLS12}},
		{[]string{"a.redis.azure.net:10000", "127.0.0.1:6379"}, nil},
		{[]string{"127.0.0.1:6379"}, nil},
		{nil, nil},
	} {
		assert.Equal(t, tc.want, azureTLS(tc.addrs), "%v", tc.addrs)
	}
}

func TestNewClientRefusesOtherCredentials(t *testing.T) {
	p, err := provider.New(nopCred{}, nil)
	require.NoError(t, err)
	defer p.Close()
	for _, opt := range []rueidis.ClientOption{
		{InitAddress: []string{"127.0.0.1:1"}, Password: "x"},
		{InitAddress: []string{"127.0.0.1:1"}, AuthCredentialsFn: AuthCredentialsFn(p)},
	} {
		_, err := NewClient(p, opt)
		assert.ErrorIs(t, err, ErrCredentialsSet)
	}
	_, err = NewClient(p, rueidis.ClientOption{InitAddress: []string{"127.0.0.1:1"}, DisableAutoPipelining: true})
	assert.ErrorIs(t, err, ErrNoAutoPipelining)
	assert.ErrorContains(t, err, "keep auto-pipelining", "the error says what to do")
	_, err = NewClient(nil, rueidis.ClientOption{InitAddress: []string{"127.0.0.1:1"}})
	assert.ErrorIs(t, err, errNilProvider)
	_, err = AuthCredentialsFn(nil)(rueidis.AuthCredentialsContext{})
	assert.ErrorIs(t, err, errNilProvider)
}

type nopCred struct{ azcore.TokenCredential }

// TestAuthCredentialsFnSchedule: RefreshAfter falls after the provider's refresh and before the
// renewal lead, spread per call; a hanging identity provider costs a caller at most the dial
// timeout, and callers during an outage share the provider's paced calls.
func TestAuthCredentialsFnSchedule(t *testing.T) {
	k, err := testKey()
	require.NoError(t, err)
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour, Key: k})
	require.NoError(t, err)
	defer iss.Close()
	cred := &counter{TokenCredential: iss}
	p, err := provider.New(cred, nil)
	require.NoError(t, err)
	defer p.Close()
	fn := newAuth(p, 300*time.Millisecond).credentials

	seen := map[time.Time]bool{}
	for range 100 {
		ac, err := fn(rueidis.AuthCredentialsContext{})
		require.NoError(t, err)
		r, _ := renewal.Of(p)
		assert.Equal(t, iss.ObjectID(), ac.Username)
		assert.Equal(t, r.Password, ac.Password)
		assert.True(t, ac.RefreshAfter.After(r.RefreshAt) && ac.RefreshAfter.Before(r.RenewBy), "RefreshAfter %v outside (%v, %v)", ac.RefreshAfter, r.RefreshAt, r.RenewBy)
		assert.True(t, r.ExpiresOn.Sub(ac.RefreshAfter) >= 3*time.Minute)
		seen[ac.RefreshAfter] = true
	}
	assert.Greater(t, len(seen), 90, "jittered per connection")
	assert.Equal(t, int64(1), cred.calls.Load(), "one credential call for 100 connections")

	// A hanging identity provider on a cold provider: each caller waits at most the timeout.
	iss.SetLatency(time.Hour)
	p2, err := provider.New(cred, nil)
	require.NoError(t, err)
	defer p2.Close()
	fn2 := newAuth(p2, 300*time.Millisecond).credentials
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			start := time.Now()
			_, err := fn2(rueidis.AuthCredentialsContext{})
			assert.ErrorIs(t, err, provider.ErrTokenUnavailable)
			assert.Less(t, time.Since(start), 2*time.Second, "bounded by the dial timeout (300 ms here)")
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, cred.calls.Load(), int64(2), "the 20 callers share one credential call")
}

func TestParseBlocking(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		ok       bool
		at, keys int
		keyN     int
		timeout  time.Duration
		dollar   bool
	}{
		{[]string{"BLPOP", "a", "b", "0"}, true, 3, 1, 2, 0, false},
		{[]string{"BRPOP", "a", "1.5"}, true, 2, 1, 1, 1500 * time.Millisecond, false},
		{[]string{"BLMOVE", "a", "b", "LEFT", "RIGHT", "300"}, true, 5, 1, 2, 300 * time.Second, false},
		{[]string{"BRPOPLPUSH", "a", "b", "0"}, true, 3, 1, 2, 0, false},
		{[]string{"BZPOPMIN", "z", "0"}, true, 2, 1, 1, 0, false},
		{[]string{"BLMPOP", "0", "2", "a", "b", "LEFT", "COUNT", "3"}, true, 1, 3, 2, 0, false},
		{[]string{"BZMPOP", "2", "1", "z", "MIN"}, true, 1, 3, 1, 2 * time.Second, false},
		{[]string{"XREAD", "COUNT", "10", "BLOCK", "0", "STREAMS", "s1", "s2", "0", "$"}, true, 4, 6, 2, 0, true},
		{[]string{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "2000", "NOACK", "STREAMS", "s", ">"}, true, 5, 8, 1, 2 * time.Second, false},
		{[]string{"XREAD", "STREAMS", "s", "0"}, false, 0, 0, 0, 0, false}, // no BLOCK
		{[]string{"XREAD", "BLOCK", "0", "STREAMS", "s"}, false, 0, 0, 0, 0, false},
		{[]string{"BLMPOP", "0", "x", "a", "LEFT"}, false, 0, 0, 0, 0, false},
		{[]string{"BLPOP", "a", "-1"}, false, 0, 0, 0, 0, false},
		{[]string{"WAIT", "1", "0"}, false, 0, 0, 0, 0, false},
	} {
		b, ok := parseBlocking(tc.args)
		require.Equal(t, tc.ok, ok, "%v", tc.args)
		if !ok {
			continue
		}
		assert.Equal(t, []int{tc.at, tc.keys, tc.keyN}, []int{b.at, b.keys, b.keyN}, "%v", tc.args)
		assert.Equal(t, tc.timeout, b.timeout, "%v", tc.args)
		assert.Equal(t, tc.dollar, b.dollar, "%v", tc.args)
	}
	// Rebuilt with a shorter block, keys in place (their slot is the command's).
	srv := entratest.StartRedis(t, nil)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}})
	require.NoError(t, err)
	defer c.Close()
	b, _ := parseBlocking([]string{"BLMOVE", "{k}a", "{k}b", "LEFT", "RIGHT", "0"})
	cmd := b.build(c.B(), 1500*time.Millisecond)
	assert.Equal(t, []string{"BLMOVE", "{k}a", "{k}b", "LEFT", "RIGHT", "1.500"}, cmd.Commands())
	assert.True(t, cmd.IsBlock())
	b, _ = parseBlocking([]string{"XREAD", "BLOCK", "0", "STREAMS", "s", "0"})
	cmd = b.build(c.B(), 90*time.Second)
	assert.Equal(t, []string{"XREAD", "BLOCK", "90000", "STREAMS", "s", "0"}, cmd.Commands())
}
