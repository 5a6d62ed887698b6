package provider

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRefreshJitterSpreadsAFleet: a fleet of providers given tokens of the same life must not
// refresh at the same moment (IMDS allows 20 requests/s per VM; Azure asks for jitter). Each
// provider's lead (ExpiresOn - RefreshAt, from Token) must lie in the configured range AND the
// fleet's leads must cover it: every tenth of the range holds some of them. A range check alone
// passes with the jitter removed; this does not.
func TestRefreshJitterSpreadsAFleet(t *testing.T) {
	const fleet = 200 // uniform draws: a tenth of the range is empty with probability 0.9^200 < 1e-9
	cases := []struct {
		name   string
		life   time.Duration
		opts   *Options
		lo, hi time.Duration // the lead's range
		spread bool          // false: no jitter, every lead is lo
	}{
		{"defaults, hour token: 5m + [0, 1m)", time.Hour, nil, 5 * time.Minute, 6 * time.Minute, true},
		{"jitter 10m: 5m + [0, 10m)", time.Hour, &Options{RefreshJitter: 10 * time.Minute}, 5 * time.Minute, 15 * time.Minute, true},
		{"short token: 25-50% of its life", 2 * time.Second, nil, 500 * time.Millisecond, time.Second, true},
		{"jitter off", time.Hour, &Options{RefreshJitter: -1}, 5 * time.Minute, 5 * time.Minute, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leads := make([]time.Duration, 0, fleet)
			for range fleet {
				p, err := New(&fakeCred{life: tc.life}, tc.opts)
				require.NoError(t, err)
				_, _, err = p.CredentialsProviderContext(context.Background())
				require.NoError(t, err)
				info, ok := p.Token()
				require.True(t, ok)
				require.NoError(t, p.Close())
				leads = append(leads, info.ExpiresOn.Sub(info.RefreshAt))
			}
			slices.Sort(leads)
			// The short token's life is measured a few microseconds after the credential made it.
			const slack = 20 * time.Millisecond
			require.GreaterOrEqual(t, leads[0], tc.lo-slack, "lead below the range")
			require.LessOrEqual(t, leads[fleet-1], tc.hi+slack, "lead above the range")
			tenth := (tc.hi - tc.lo) / 10
			var filled int
			for k := range 10 {
				if tenth == 0 {
					break // the range is one point
				}
				from, to := tc.lo+time.Duration(k)*tenth, tc.lo+time.Duration(k+1)*tenth
				if slices.ContainsFunc(leads, func(d time.Duration) bool { return d >= from && d <= to }) {
					filled++
				}
			}
			t.Logf("%d providers: refresh %s to %s before expiry (median %s); %d of 10 tenths of [%s, %s] hold some",
				fleet, leads[0].Round(time.Millisecond), leads[fleet-1].Round(time.Millisecond),
				leads[fleet/2].Round(time.Millisecond), filled, tc.lo, tc.hi)
			if tc.spread {
				assert.Equal(t, 10, filled, "the refreshes of a fleet are spread over the jitter range")
			} else {
				assert.Equal(t, leads[0], leads[fleet-1], "no jitter: every provider refreshes at the same lead")
			}
		})
	}
}
