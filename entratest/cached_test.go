package entratest_test

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
)

// TestCachedCredential: the cached token is handed back until a twelfth of its life is left (5
// minutes of an hour, azidentity's window), then a new one is fetched; Forget fetches at once.
func TestCachedCredential(t *testing.T) {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: 2400 * time.Millisecond})
	require.NoError(t, err)
	defer iss.Close()
	c := entratest.NewCachedCredential(iss, 0)
	ctx := context.Background()
	o := policy.TokenRequestOptions{Scopes: []string{entratest.Scope}}
	first, err := c.GetToken(ctx, o)
	require.NoError(t, err)
	again, err := c.GetToken(ctx, o)
	require.NoError(t, err)
	assert.Equal(t, first.Token, again.Token, "the cached token, handed back")
	c.Forget()
	fresh, err := c.GetToken(ctx, o)
	require.NoError(t, err)
	assert.NotEqual(t, first.Token, fresh.Token, "a new token after Forget")
	// Within the last twelfth of the life (0.2 s of 2.4 s, exp rounded up to a second), a new one.
	time.Sleep(time.Until(fresh.ExpiresOn.Add(-150 * time.Millisecond)))
	late, err := c.GetToken(ctx, o)
	require.NoError(t, err)
	assert.NotEqual(t, fresh.Token, late.Token, "renewed near expiry")
	calls, fetches := c.Calls()
	assert.Equal(t, int64(4), calls)
	assert.Equal(t, int64(3), fetches)
}
