package provider

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/testutil"
)

// lateCred ignores its context and, once released, returns a valid token: the result Close must
// drop.
type lateCred struct {
	iss     *entratest.Issuer
	started chan struct{}
	release chan struct{}
}

func (c *lateCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	close(c.started)
	<-c.release
	return c.iss.GetToken(context.Background(), o)
}

// TestCloseAbandonsAStuckCall: with the default FetchTimeout (30 s, a Kubernetes pod's whole grace
// period), Close returns within a second while the credential ignores its context; it logs the
// abandoned call. When the call returns later, with a token, the result is dropped: the provider
// stays closed, and the call's goroutine, the only one left after Close, ends.
func TestCloseAbandonsAStuckCall(t *testing.T) {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour})
	require.NoError(t, err)
	cred := &lateCred{iss: iss, started: make(chan struct{}), release: make(chan struct{})}
	base := runtime.NumGoroutine()
	var logs testutil.SyncBuffer
	p, err := New(cred, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	go func() { _, _, _ = p.CredentialsProviderContext(context.Background()) }()
	<-cred.started

	start := time.Now()
	require.NoError(t, p.Close())
	took := time.Since(start)
	t.Logf("Close returned after %v with the credential call stuck", took.Round(time.Millisecond))
	assert.Less(t, took, time.Second)
	assert.Contains(t, logs.String(), "abandoned")
	testutil.WaitGoroutines(t, base+1) // the credential's call, and nothing else

	close(cred.release)
	testutil.WaitGoroutines(t, base)
	_, ok := p.Token()
	assert.False(t, ok, "the abandoned call's token was dropped")
	_, _, err = p.CredentialsProviderContext(context.Background())
	assert.ErrorIs(t, err, ErrClosed)
}
