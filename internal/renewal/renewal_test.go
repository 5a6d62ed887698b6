package renewal

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLead(t *testing.T) {
	for _, tc := range []struct {
		life, want time.Duration
	}{
		{90 * time.Minute, 3 * time.Minute},
		{24 * time.Minute, 3 * time.Minute},
		{8 * time.Minute, time.Minute},
		{3 * time.Second, 375 * time.Millisecond},
		{0, 3 * time.Minute}, // unknown
	} {
		assert.Equal(t, tc.want, Lead(tc.life), "life %v", tc.life)
	}
}

func TestNext(t *testing.T) {
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
