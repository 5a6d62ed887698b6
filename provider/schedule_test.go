package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/renewal"
)

func TestRenewalOfProvider(t *testing.T) {
	cred := &fakeCred{life: 3 * time.Second}
	p := newTest(t, cred, nil)
	_, ok := p.renewal()
	require.False(t, ok, "nothing cached yet")
	_, _, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)

	r, ok := p.renewal()
	require.True(t, ok)
	info, _ := p.Token()
	assert.Equal(t, testOID, r.Username)
	assert.Equal(t, cred.issued()[0], r.Password)
	assert.Equal(t, info.ExpiresOn, r.ExpiresOn)
	assert.Equal(t, info.RefreshAt, r.RefreshAt)
	assert.Equal(t, info.Generation, r.Generation)
	// No iat in the fake's tokens: the life is what was left, so the lead is an eighth of it.
	assert.InDelta(t, 3*time.Second, r.Life, float64(200*time.Millisecond))
	assert.Equal(t, r.ExpiresOn.Add(-renewal.Lead(r.Life)), r.RenewBy)
	// The provider's refresh of a 3 s token comes at 50-75% of its life, before RenewBy.
	assert.True(t, r.RefreshAt.Before(r.RenewBy))

	for _, s := range []string{r.String(), fmt.Sprintf("%v %+v %#v %s", r, r, r, r)} {
		assert.NotContains(t, s, r.Password)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "renewal", r)
	assert.NotContains(t, b.String(), r.Password)
	assert.Contains(t, b.String(), testOID)
}

func TestRenewalLifeFromIssuedAt(t *testing.T) {
	iat := time.Now().Add(-50 * time.Minute).Truncate(time.Second)
	exp := iat.Add(80 * time.Minute)
	tok := mint(map[string]any{"oid": testOID, "iat": iat.Unix(), "exp": exp.Unix()})
	r := renewalOf(&credentials{username: testOID, password: tok, expiresOn: exp}, time.Now())
	assert.Equal(t, 80*time.Minute, r.Life)
	assert.Equal(t, exp.Add(-3*time.Minute), r.RenewBy)
}

func TestAwaitRenewal(t *testing.T) {
	boom := errors.New("identity endpoint down")
	t.Run("waits for the next paced attempt, which succeeds", func(t *testing.T) {
		cred := &fakeCred{life: time.Hour, err: boom}
		p := newTest(t, cred, nil)
		// The first attempt fails; the endpoint is back before the next is due.
		_, _, err := p.CredentialsProviderContext(context.Background())
		require.ErrorIs(t, err, boom)
		cred.set(func(f *fakeCred) { f.err = nil })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		r, err := p.awaitRenewal(ctx)
		require.NoError(t, err)
		assert.Equal(t, testOID, r.Username)
		assert.Less(t, time.Since(start), 2*time.Second)
		assert.Equal(t, int64(2), cred.calls.Load())
	})
	t.Run("one more attempt, then the error", func(t *testing.T) {
		cred := &fakeCred{life: time.Hour, err: boom}
		p := newTest(t, cred, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := p.awaitRenewal(ctx)
		require.ErrorIs(t, err, boom)
		require.ErrorIs(t, err, ErrTokenUnavailable)
		assert.Equal(t, int64(2), cred.calls.Load())
		assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "waited for the pacing")
	})
	t.Run("a deadline sooner than the next attempt: the error at once", func(t *testing.T) {
		cred := &fakeCred{life: time.Hour, err: boom}
		p := newTest(t, cred, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := p.awaitRenewal(ctx)
		require.ErrorIs(t, err, boom)
		assert.Equal(t, int64(1), cred.calls.Load(), "no wait for an attempt it could not see")
	})
	t.Run("concurrent callers share the paced attempts", func(t *testing.T) {
		cred := &fakeCred{life: time.Hour, err: boom}
		p := newTest(t, cred, nil)
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := p.awaitRenewal(ctx)
				assert.ErrorIs(t, err, ErrTokenUnavailable)
			})
		}
		wg.Wait()
		assert.LessOrEqual(t, cred.calls.Load(), int64(3))
	})
}
