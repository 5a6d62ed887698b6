package hook

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Blocking commands. Redis runs a client's commands in order, so an AUTH written behind a blocked
// BLPOP runs only when the BLPOP returns: a connection blocked through its token's expiry is
// closed by the server under the command, and an element popped at that moment is lost. So a
// blocking command whose block would outlast the connection's token (or that blocks forever) is
// sent as shorter blocks that end before the token must be renewed; between two, the next
// request renews the connection in place. The caller sees what Redis would have given: nil at its
// own timeout, an element as soon as one is pushed.
//
// Covered: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, XREAD and
// XREADGROUP with BLOCK (XREAD's "$" is first turned into the stream's last ID, so that no entry
// added between two blocks is skipped). WAIT and WAITAOF are not split but capped: they wait for
// the writes of the connection they run on, and a second block could run on another pooled
// connection; one block ending before the token must be renewed returns the count reached then,
// as at a timeout. A cancelled context ends a split with the context's error. Not covered, because they cannot be cut
// short: MONITOR (the guard retires its connection before expiry, so go-redis's reader sees the
// error), and a RESP2 subscriber (reconnected before expiry, see pubsub.go).

// blocking says where a blocking command's timeout is.
type blocking struct {
	at     int   // index of the timeout in the arguments
	ms     bool  // in milliseconds (XREAD/XREADGROUP BLOCK, WAIT, WAITAOF), else seconds
	want   []int // WAIT, WAITAOF: indexes of the counts asked for, compared with the reply
	stream bool  // XREAD: resolve "$"
	capped bool  // WAIT, WAITAOF: one block at most, on the connection that wrote
}

func blockingOf(name string, args []any) (blocking, bool) {
	n := len(args)
	switch name {
	case "blpop", "brpop", "bzpopmin", "bzpopmax", "blmove", "brpoplpush":
		return blocking{at: n - 1}, n >= 3
	case "blmpop", "bzmpop":
		return blocking{at: 1}, n >= 4
	case "wait":
		return blocking{at: 2, ms: true, want: []int{1}, capped: true}, n == 3
	case "waitaof":
		return blocking{at: 3, ms: true, want: []int{1, 2}, capped: true}, n == 4
	case "xread", "xreadgroup":
		for i := 1; i+1 < n; i++ {
			s, ok := args[i].(string)
			if !ok {
				continue
			}
			if strings.EqualFold(s, "streams") {
				break // what follows are stream names and IDs: a stream may be called "block"
			}
			if strings.EqualFold(s, "block") {
				return blocking{at: i + 1, ms: true, stream: name == "xread"}, true
			}
		}
	}
	return blocking{}, false
}

// block runs a blocking command as shorter blocks where needed; once runs one block with the
// hook's retry rules, next is the rest of the chain (for XREAD's look-up of "$").
func (h *Hook) block(ctx context.Context, cmd redis.Cmder, b blocking, once func(context.Context) error, next redis.ProcessHook) error {
	args := cmd.Args()
	orig := args[b.at]
	total, ok := duration(orig, b.ms)
	if h.g.cur.Load() == nil {
		// No connection has authenticated yet: the one this command is about to open will take
		// the provider's token, so that is the one to measure the block against.
		if user, pass, err := h.src.CredentialsProviderContext(ctx); err == nil {
			h.g.offer(user, pass)
		}
	}
	limit := h.g.blockLimit()
	if !ok || limit <= 0 || (total > 0 && total <= limit) {
		return once(ctx)
	}
	saved := slices.Clone(args)
	defer copy(args, saved)
	if b.capped {
		args[b.at] = format(limit, b.ms)
		return once(ctx)
	}
	if b.stream {
		if err := resolveLastIDs(ctx, cmd, next); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(total)
	for first := true; ; first = false {
		d := limit
		if total > 0 {
			d = min(d, time.Until(deadline))
		}
		args[b.at] = format(max(d, time.Millisecond), b.ms)
		if !first {
			h.splits.Add(1)
			cmd.SetErr(nil)
		}
		err := once(ctx)
		if !b.unanswered(cmd, err) || (total > 0 && time.Until(deadline) <= 0) {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			cmd.SetErr(cerr) // not the block's nil: the caller's own timeout has not come
			return cerr
		}
		if limit = h.g.blockLimit(); limit <= 0 {
			limit = 50 * time.Millisecond
		}
	}
}

// unanswered reports whether a block ended without what the command waits for: nil (timed out),
// or for WAIT/WAITAOF fewer acknowledgements than asked.
func (b blocking) unanswered(cmd redis.Cmder, err error) bool {
	if err == redis.Nil {
		return true
	}
	if err != nil || b.want == nil {
		return false
	}
	var got []int64
	switch c := cmd.(type) {
	case *redis.IntCmd:
		got = []int64{c.Val()}
	case *redis.IntSliceCmd:
		got = c.Val()
	case *redis.Cmd:
		switch v := c.Val().(type) {
		case int64:
			got = []int64{v}
		case []any:
			for _, e := range v {
				i, _ := e.(int64)
				got = append(got, i)
			}
		}
	default:
		return false
	}
	args := cmd.Args()
	for i, at := range b.want {
		want, ok := number(args[at])
		if ok && (i >= len(got) || float64(got[i]) < want) {
			return true
		}
	}
	return false
}

// blockLimit is how long a block may last on a connection that starts it now: until its token
// (the newest, which the connection is renewed to when the block is written) must be renewed,
// or failing that retired. Zero: no token known yet, the command is sent as it is.
func (g *guard) blockLimit() time.Duration {
	cur := g.cur.Load()
	if cur == nil {
		return 0
	}
	until := time.Until(time.Unix(0, cur.exp))
	if d := until - g.renewBy(cur.life); d >= 100*time.Millisecond {
		return d
	}
	return max(until-g.margin(cur.life), 50*time.Millisecond) // no newer token yet: short blocks until one comes
}

// duration reads a timeout argument: seconds (an integer or a decimal), or milliseconds.
func duration(v any, ms bool) (time.Duration, bool) {
	if d, ok := v.(time.Duration); ok {
		return d, d >= 0
	}
	f, ok := number(v)
	if !ok || f < 0 {
		return 0, false
	}
	if ms {
		return time.Duration(f * float64(time.Millisecond)), true
	}
	return time.Duration(f * float64(time.Second)), true
}

// number reads a numeric argument as go-redis passes it.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}

func format(d time.Duration, ms bool) string {
	if ms {
		return strconv.FormatInt(max(d.Milliseconds(), 1), 10)
	}
	return strconv.FormatFloat(max(d.Seconds(), 0.001), 'f', 3, 64)
}

// resolveLastIDs replaces XREAD's "$" by each stream's last ID (0-0 for an empty or missing
// stream): "$" sent again would skip what was added between two blocks.
func resolveLastIDs(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error {
	args := cmd.Args()
	s := -1
	for i := 1; i < len(args); i++ {
		if v, ok := args[i].(string); ok && strings.EqualFold(v, "streams") {
			s = i
			break
		}
	}
	if s < 0 || (len(args)-s-1)%2 != 0 {
		return nil
	}
	n := (len(args) - s - 1) / 2
	for i := 0; i < n; i++ {
		if id, ok := args[s+1+n+i].(string); !ok || id != "$" {
			continue
		}
		last := redis.NewXMessageSliceCmd(ctx, "xrevrange", args[s+1+i], "+", "-", "count", 1)
		if err := next(ctx, last); err != nil {
			cmd.SetErr(err)
			return err
		}
		id := "0-0"
		if m := last.Val(); len(m) > 0 {
			id = m[0].ID
		}
		args[s+1+n+i] = id
	}
	return nil
}
