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
)

func TestRenewLead(t *testing.T) {
	for _, tc := range []struct {
		life, want time.Duration
	}{
		{90 * time.Minute, 3 * time.Minute},
		{24 * time.Minute, 3 * time.Minute},
		{8 * time.Minute, time.Minute},
		{3 * time.Second, 375 * time.Millisecond},
		{0, 3 * time.Minute}, // unknown
	} {
		assert.Equal(t, tc.want, RenewLead(tc.life), "life %v", tc.life)
	}
}

func TestRenewalNext(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name   string
		r      Renewal
		at     time.Time
		lo, hi time.Time // Next falls in [lo, hi)
	}{{
		name: "Azure token, refresh ahead: between a quarter into the window and 3 min before expiry",
		r:    Renewal{RefreshAt: now.Add(54 * time.Minute), RenewBy: now.Add(57 * time.Minute), ExpiresOn: now.Add(time.Hour), Life: time.Hour},
		at:   now,
		lo:   now.Add(54*time.Minute + 45*time.Second), hi: now.Add(57 * time.Minute),
	}, {
		name: "3 s test token",
		r:    Renewal{RefreshAt: now.Add(1500 * time.Millisecond), RenewBy: now.Add(2625 * time.Millisecond), ExpiresOn: now.Add(3 * time.Second), Life: 3 * time.Second},
		at:   now,
		lo:   now.Add(1781250 * time.Microsecond), hi: now.Add(2625 * time.Millisecond),
	}, {
		name: "refresh later than RenewBy: up to halfway to expiry",
		r:    Renewal{RefreshAt: now.Add(58 * time.Minute), RenewBy: now.Add(57 * time.Minute), ExpiresOn: now.Add(time.Hour), Life: time.Hour},
		at:   now,
		lo:   now.Add(58*time.Minute + 15*time.Second), hi: now.Add(59 * time.Minute),
	}, {
		name: "window passed, no newer token: retry in 10-15 s on an Azure token",
		r:    Renewal{RefreshAt: now.Add(-time.Minute), RenewBy: now.Add(time.Minute), ExpiresOn: now.Add(4 * time.Minute), Life: time.Hour},
		at:   now.Add(30 * time.Second),
		lo:   now.Add(40 * time.Second), hi: now.Add(45 * time.Second),
	}, {
		name: "window passed on a 3 s token: 93-140 ms",
		r:    Renewal{RefreshAt: now, RenewBy: now.Add(time.Second), ExpiresOn: now.Add(2 * time.Second), Life: 3 * time.Second},
		at:   now.Add(1500 * time.Millisecond),
		lo:   now.Add(1593750 * time.Microsecond), hi: now.Add(1640625 * time.Microsecond),
	}, {
		name: "window passed on a very short token: at least 50 ms",
		r:    Renewal{RefreshAt: now, RenewBy: now.Add(100 * time.Millisecond), ExpiresOn: now.Add(200 * time.Millisecond), Life: 300 * time.Millisecond},
		at:   now.Add(150 * time.Millisecond),
		lo:   now.Add(200 * time.Millisecond), hi: now.Add(225 * time.Millisecond),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[time.Time]bool{}
			for range 200 {
				n := tc.r.Next(tc.at)
				require.False(t, n.Before(tc.lo), "%v before %v", n, tc.lo)
				require.True(t, n.Before(tc.hi), "%v not before %v", n, tc.hi)
				seen[n] = true
			}
			assert.Greater(t, len(seen), 100, "jittered: connections must not all renew at once")
		})
	}
}

func TestRenewalOfProvider(t *testing.T) {
	cred := &fakeCred{life: 3 * time.Second}
	p := newTest(t, cred, nil)
	_, ok := p.Renewal()
	require.False(t, ok, "nothing cached yet")
	_, _, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)

	r, ok := p.Renewal()
	require.True(t, ok)
	info, _ := p.Token()
	assert.Equal(t, testOID, r.Username)
	assert.Equal(t, cred.issued()[0], r.Password)
	assert.Equal(t, info.ExpiresOn, r.ExpiresOn)
	assert.Equal(t, info.RefreshAt, r.RefreshAt)
	assert.Equal(t, info.Generation, r.Generation)
	// No iat in the fake's tokens: the life is what was left, so the lead is an eighth of it.
	assert.InDelta(t, 3*time.Second, r.Life, float64(200*time.Millisecond))
	assert.Equal(t, r.ExpiresOn.Add(-RenewLead(r.Life)), r.RenewBy)
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
		r, err := p.AwaitRenewal(ctx)
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
		_, err := p.AwaitRenewal(ctx)
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
		_, err := p.AwaitRenewal(ctx)
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
				_, err := p.AwaitRenewal(ctx)
				assert.ErrorIs(t, err, ErrTokenUnavailable)
			})
		}
		wg.Wait()
		assert.LessOrEqual(t, cred.calls.Load(), int64(3))
	})
}
