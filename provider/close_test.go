package provider

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/testutil"
)

// lingeringCred hands out the issuer's tokens until blocked; then each call waits for its context to
// end and takes a while more to return, as a cancelled HTTP request does. inFlight counts the
// calls that have not returned.
type lingeringCred struct {
	iss      *entratest.Issuer
	blocked  atomic.Bool
	inFlight atomic.Int32
	linger   time.Duration
}

func (c *lingeringCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	if !c.blocked.Load() {
		return c.iss.GetToken(ctx, o)
	}
	<-ctx.Done()
	time.Sleep(c.linger) // unwinding, not synchronisation: Close must wait for it
	return azcore.AccessToken{}, ctx.Err()
}

// TestCloseWaitsForItsGoroutines: when Close returns, nothing the provider started is still running:
// no credential call is in flight, whichever goroutine made it. Checked right after Close, not
// after a grace period, so a Close that returned early fails here.
func TestCloseWaitsForItsGoroutines(t *testing.T) {
	cases := []struct {
		name  string
		start func(t *testing.T, p *Provider, c *lingeringCred) // leaves a credential call in flight
	}{
		{"a caller's fetch", func(t *testing.T, p *Provider, c *lingeringCred) {
			c.blocked.Store(true)
			go func() { _, _, _ = p.CredentialsProviderContext(context.Background()) }()
		}},
		{"Subscribe's fetch", func(t *testing.T, p *Provider, c *lingeringCred) {
			c.blocked.Store(true)
			go func() { _, _, _ = p.Subscribe(&recorder{}) }()
		}},
		{"the background refresh", func(t *testing.T, p *Provider, c *lingeringCred) {
			// A 1 s token is refreshed at 50-75 % of its life, by the provider's own goroutine.
			_, _, err := p.CredentialsProviderContext(context.Background())
			require.NoError(t, err)
			c.blocked.Store(true)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Second})
			require.NoError(t, err)
			c := &lingeringCred{iss: iss, linger: 100 * time.Millisecond}
			base := runtime.NumGoroutine()
			p, err := New(c, nil)
			require.NoError(t, err)
			tc.start(t, p, c)
			deadline := time.Now().Add(10 * time.Second)
			for c.inFlight.Load() == 0 {
				require.True(t, time.Now().Before(deadline), "no credential call started")
				time.Sleep(5 * time.Millisecond)
			}

			start := time.Now()
			require.NoError(t, p.Close())
			left := c.inFlight.Load() // right after Close: no grace period
			t.Logf("Close returned after %s with %d credential calls in flight (each takes %s to return once cancelled)",
				time.Since(start).Round(time.Millisecond), left, c.linger)
			assert.Zero(t, left, "Close returned while a credential call it started was still running")
			testutil.WaitGoroutines(t, base) // the callers above, which end once Close has
		})
	}
}
