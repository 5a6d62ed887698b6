package valkeyentra

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/entraredis/entraredis/internal/renewal"
)

// Blocking commands. valkey-go's refresh AUTH waits behind a blocking command on its connection (Redis
// runs a client's commands in order), so a BLPOP that blocks past its token's expiry is closed by
// the server under the caller. NewClient's client sends such a command, given to Do, as shorter
// blocks that each end before the connection's refresh must have run: half the renewal lead (90 s
// on Azure's tokens), so that an AUTH queued at the connection's RefreshAfter runs before the
// expiry. The caller gets what Redis would give: nil at its own timeout, an element as soon as one
// is pushed. XREAD's "$" becomes the stream's last ID first, so no entry is skipped between blocks.
// DoMulti and dedicated clients are left as they are.

// client is NewClient's valkey.Client: Do splits long blocks, Receive moves RESP2 subscribers;
// everything else is valkey-go's.
type client struct {
	valkey.Client
	a     *auth
	resp2 bool // ClientOption.AlwaysRESP2: subscribers are moved (pubsub.go)
}

// blockLimit is the longest block sent at once: half the renewal lead of the current token.
func (c *client) blockLimit() time.Duration {
	life := time.Duration(0)
	if r := c.a.cur.Load(); r != nil {
		life = r.Life
	}
	return max(renewal.Lead(life)/2, 10*time.Millisecond)
}

func (c *client) Do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	if !cmd.IsBlock() {
		return c.Client.Do(ctx, cmd)
	}
	b, ok := parseBlocking(cmd.Commands())
	limit := c.blockLimit()
	if !ok || (b.timeout > 0 && b.timeout <= limit) {
		return c.Client.Do(ctx, cmd)
	}
	if b.dollar {
		if err := c.resolveDollar(ctx, &b); err != nil {
			return c.Client.Do(ctx, cmd)
		}
	}
	var deadline time.Time
	if b.timeout > 0 {
		deadline = time.Now().Add(b.timeout)
	}
	for {
		d := limit
		if !deadline.IsZero() {
			d = min(d, max(time.Until(deadline), time.Millisecond))
		}
		r := c.Client.Do(ctx, b.build(c.Client.B(), d))
		if err := r.Error(); !valkey.IsValkeyNil(err) || ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			return r
		}
	}
}

// blocking is a parsed blocking command: its arguments, where its timeout and keys are.
type blocking struct {
	args       []string
	at         int  // index of the timeout
	ms         bool // the timeout is in milliseconds (XREAD BLOCK), else seconds
	keys, keyN int  // keys are args[keys:keys+keyN]
	timeout    time.Duration
	dollar     bool // XREAD with "$" IDs
}

// parseBlocking reads the commands this splits; ok is false for the others (WAIT, a malformed one).
func parseBlocking(args []string) (b blocking, ok bool) {
	if len(args) < 3 {
		return b, false
	}
	b.args = args
	n := len(args)
	switch strings.ToUpper(args[0]) {
	case "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX":
		b.at, b.keys, b.keyN = n-1, 1, n-2
	case "BLMOVE", "BRPOPLPUSH":
		b.at, b.keys, b.keyN = n-1, 1, 2
	case "BLMPOP", "BZMPOP":
		k, err := strconv.Atoi(args[2])
		if err != nil || k < 1 || 3+k > n {
			return b, false
		}
		b.at, b.keys, b.keyN = 1, 3, k
	case "XREAD", "XREADGROUP":
		b.ms = true
		b.at = -1
		s := -1
		for i := 1; i < n; i++ {
			switch strings.ToUpper(args[i]) {
			case "BLOCK":
				if i+1 < n {
					b.at = i + 1
				}
			case "STREAMS":
				s = i
			}
			if s >= 0 {
				break
			}
		}
		if b.at < 0 || s < 0 || (n-s-1)%2 != 0 || n-s-1 == 0 {
			return b, false
		}
		b.keys, b.keyN = s+1, (n-s-1)/2
		for _, id := range args[s+1+b.keyN:] {
			b.dollar = b.dollar || id == "$"
		}
	default:
		return b, false
	}
	f, err := strconv.ParseFloat(args[b.at], 64)
	if err != nil || f < 0 {
		return b, false
	}
	unit := time.Second
	if b.ms {
		unit = time.Millisecond
	}
	b.timeout = time.Duration(f * float64(unit))
	b.args = append([]string(nil), args...) // Commands is the command's own storage
	return b, true
}

// build makes the command again with a block of d.
func (b blocking) build(bb valkey.Builder, d time.Duration) valkey.Completed {
	args := append([]string(nil), b.args...)
	if b.ms {
		args[b.at] = strconv.FormatInt(max(d.Milliseconds(), 1), 10)
	} else {
		args[b.at] = strconv.FormatFloat(max(d.Seconds(), 0.001), 'f', 3, 64)
	}
	return bb.Arbitrary(args[:b.keys]...).Keys(args[b.keys : b.keys+b.keyN]...).Args(args[b.keys+b.keyN:]...).Blocking()
}

// resolveDollar replaces XREAD's "$" IDs by each stream's last ID ("0-0" when it is empty).
func (c *client) resolveDollar(ctx context.Context, b *blocking) error {
	ids := b.args[b.keys+b.keyN:]
	for i, id := range ids {
		if id != "$" {
			continue
		}
		key := b.args[b.keys+i]
		es, err := c.Client.Do(ctx, c.Client.B().Xrevrange().Key(key).End("+").Start("-").Count(1).Build()).AsXRange()
		if err != nil && !valkey.IsValkeyNil(err) {
			return err
		}
		ids[i] = "0-0"
		if len(es) > 0 {
			ids[i] = es[0].ID
		}
	}
	b.dollar = false
	return nil
}
