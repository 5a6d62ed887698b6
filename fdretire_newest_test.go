//go:build goredis_newest

package entraredis

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// TestFullDuplexRetirement: the one case in which the guard retires a full-duplex session's
// connection, an identity provider outage across its token's expiry (no newer token to renew
// with). 16 goroutines INCR their own keys through the full-duplex autopipeliner of a client
// built from options (no hook: nothing sends a command again but go-redis), 3 s tokens behind the
// TLS gateway, 200 ms go-redis timeouts; the outage runs from 2 s before the expiry to 1 s after.
//
// What must hold: an INCR reported with an error that says it was not sent (ErrConnRetired,
// provider.ErrTokenUnavailable) did not run (the server's counter is the INCRs acknowledged plus
// at most those that failed otherwise, their fate unknown); no reply is wrong; the commands
// succeed again once a token is back. Measured: those counts, closes at expiry, and the time from
// the new token to every goroutine's first success.
func TestFullDuplexRetirement(t *testing.T) {
	testutil.Slow(t)
	const n = 16
	r := fdRig(t, prodLife, true)
	opt := prodRatio(r.opt)
	opt.AutoPipelineOptions = &redis.AutoPipelineOptions{FullDuplex: true}
	rdb := NewClient(r.h, opt)
	defer rdb.Close()
	ap, err := rdb.AutoPipeline()
	require.NoError(t, err)
	defer ap.Close()
	ctx := context.Background()
	require.NoError(t, ap.Ping(ctx).Err())
	info, ok := r.p.Token()
	require.True(t, ok)

	type tally struct {
		acked, unsent, unknown int64
		last                   int64 // the last value acknowledged
		wrong, errs            []string
		failing                bool
		lastOK, recovered      time.Time // the last success; the first one after the last failure
	}
	tallies := make([]tally, n)
	var backAt time.Time
	loopEach(n, func() {
		time.Sleep(time.Until(info.ExpiresOn.Add(-2 * time.Second)))
		r.iss.FailFor(3*time.Second, http.StatusInternalServerError)
		require.Eventually(t, func() bool {
			back, ok := r.p.Token()
			return ok && back.Generation > info.Generation
		}, 15*time.Second, 10*time.Millisecond, "a token after the outage")
		backAt = time.Now()
		time.Sleep(time.Second) // an observation window after the outage
	}, func(w int) {
		key, ta := fmt.Sprintf("fdr:%d", w), &tallies[w]
		v, err := ap.Incr(ctx, key).Result()
		switch {
		case errors.Is(err, hook.ErrConnRetired) || errors.Is(err, provider.ErrTokenUnavailable):
			ta.unsent++
		case err != nil:
			ta.unknown++
		case v <= ta.last:
			ta.wrong = append(ta.wrong, fmt.Sprintf("%s: %d after %d", key, v, ta.last))
		default:
			ta.acked++
			ta.last = v
			ta.lastOK = time.Now()
			if ta.failing {
				ta.failing, ta.recovered = false, ta.lastOK
			}
		}
		if err != nil {
			ta.failing = true
			if len(ta.errs) < 3 {
				ta.errs = append(ta.errs, err.Error())
			}
			time.Sleep(10 * time.Millisecond) // as a caller backs off
		}
	})

	var acked, unsent, unknown int64
	var ranUnsent int64 // INCRs that ran though reported not sent
	var slowest time.Duration
	var wrong, errs []string
	for w := range tallies {
		ta := &tallies[w]
		v, err := rdb.Get(ctx, fmt.Sprintf("fdr:%d", w)).Int64()
		require.NoError(t, err)
		acked, unsent, unknown = acked+ta.acked, unsent+ta.unsent, unknown+ta.unknown
		ranUnsent += max(0, v-ta.acked-ta.unknown)
		assert.LessOrEqual(t, v-ta.acked, ta.unknown, "fdr:%d: ran beyond the INCRs acknowledged and those of unknown fate", w)
		assert.GreaterOrEqual(t, v, ta.acked, "fdr:%d: fewer than acknowledged", w)
		wrong, errs = append(wrong, ta.wrong...), append(errs, ta.errs...)
		if d := ta.recovered.Sub(backAt); d > slowest {
			slowest = d
		}
		assert.False(t, ta.failing, "fdr:%d: failing still a second after the token came back", w)
		assert.True(t, ta.lastOK.After(backAt), "fdr:%d: no INCR succeeded after the token came back", w)
	}
	st, gw := r.h.Stats(), r.gw.Stats()
	t.Logf("full duplex, outage across the expiry: INCRs acknowledged %d; failed as unsent %d (of which ran %d), of unknown fate %d; wrong %d; retired %d; closes at expiry %d; renewed in place %d; last goroutine back %v after the token; errors %q",
		acked, unsent, ranUnsent, unknown, len(wrong), st.ConnsRetired, gw.ExpiryCloses, st.Reauths, slowest.Round(time.Millisecond), errs)
	assert.Empty(t, wrong)
	assert.Zero(t, ranUnsent, "an INCR reported unsent ran")
}
