package hook

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/internal/renewal"
)

// ProcessHook retries a command after an authentication error or a failure to connect, and sends
// a blocking command whose block would outlast the connection's token as shorter blocks. A command
// fails before go-redis takes a connection when no token can be had (see admit) or the cache has
// refused the current one (one command now and then re-checks it first: see ErrTokenRefused).
func (h *Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return h.processHook(next, h.wait)
}

func (h *Hook) processHook(next redis.ProcessHook, wait time.Duration) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// The common case, in one small frame: a command neither of the handshake nor blocking,
		// a valid token, none refused. go-redis's full-duplex path runs the hook on a new
		// goroutine per command, whose stack the deeper general path made grow (copied) once per
		// command; and cmd.Name() (a lower-cased copy checked byte by byte) was half the cost.
		if plain(cmd) && h.st.blocked.Load() == nil {
			if h.hasToken() {
				err := next(ctx, cmd)
				if err == nil || err == redis.Nil {
					return err
				}
				return h.failed(ctx, cmd, cmd.Name(), next, err)
			}
		}
		name := cmd.Name()
		if handshake(name) {
			err := next(ctx, cmd) // the handshake and go-redis's re-AUTH: retrying would recurse
			if name == "hello" || name == "auth" {
				h.sawAuth(ctx, cmd.Args(), err)
			}
			return err
		}
		probe, kind, err := h.admit(ctx, wait)
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		switch kind {
		case probeNewer:
			err = h.processCmd(ctx, cmd, name, next)
			h.probed(probe, err, 0)
			return err
		case probeSame:
			if !h.recheck(ctx, probe, next) {
				cmd.SetErr(probe.err)
				return probe.err
			}
		}
		return h.processCmd(ctx, cmd, name, next)
	}
}

// processCmd sends cmd, recovering as the rules say.
func (h *Hook) processCmd(ctx context.Context, cmd redis.Cmder, name string, next redis.ProcessHook) error {
	once := func(ctx context.Context) error {
		err := next(ctx, cmd)
		if err == nil || err == redis.Nil {
			return err
		}
		return h.failed(ctx, cmd, name, next, err)
	}
	if b, ok := blockingOf(name, cmd.Args()); ok && !h.guardOff {
		return h.block(ctx, cmd, b, once, next)
	}
	return once(ctx)
}

// failed applies the recovery rules to cmd, whose first attempt failed with err.
func (h *Hook) failed(ctx context.Context, cmd redis.Cmder, name string, next redis.ProcessHook, err error) error {
	err = h.recover(ctx, name, err, func(ctx context.Context, prev error) (error, bool) {
		// Not nil: go-redis's full-duplex engine runs a hook after the command was written, and its
		// next only hands back the command's error (nothing is sent again). Cleared, that would tell
		// the caller the command succeeded with an empty value; left as this sentinel, it shows that
		// next did not send it, and the server's refusal stands.
		cmd.SetErr(errNotSentAgain)
		if err := next(ctx, cmd); err != errNotSentAgain {
			return err, true
		}
		cmd.SetErr(prev)
		return prev, false
	})
	if re, ok := err.(*refusedError); ok {
		cmd.SetErr(re) // the server's reply, explained
	}
	return err
}

// ProcessPipelineHook retries a pipeline or MULTI/EXEC after an authentication error or a failure
// to connect, when no command of it ran: every command failed with that error, or none got a reply.
// Like a command, it fails before go-redis takes a connection when no token can be had.
func (h *Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return h.processPipelineHook(next, h.wait)
}

func (h *Hook) processPipelineHook(next redis.ProcessPipelineHook, wait time.Duration) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if handshake(cmd.Name()) {
				err := next(ctx, cmds) // the handshake's own pipeline
				for _, cmd := range cmds {
					if name := cmd.Name(); name == "hello" || name == "auth" {
						h.sawAuth(ctx, cmd.Args(), cmd.Err())
					}
				}
				return err
			}
		}
		if len(cmds) == 0 {
			return next(ctx, cmds)
		}
		probe, kind, err := h.admit(ctx, wait)
		if kind == probeSame {
			// Re-check the blocked token with an AUTH of its own; never inside a transaction,
			// whose replies go-redis reads as MULTI ... EXEC.
			if cmds[0].Name() == "multi" {
				probe.busy.Store(0)
				h.refusedCmds.Add(1)
				err = probe.err
			} else if !h.recheck(ctx, probe, func(ctx context.Context, cmd redis.Cmder) error { return next(ctx, []redis.Cmder{cmd}) }) {
				err = probe.err
			}
		}
		if err != nil {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return err
		}
		if kind == probeNewer {
			err = h.processPipeline(ctx, cmds, next)
			h.probed(probe, err, 0)
			return err
		}
		return h.processPipeline(ctx, cmds, next)
	}
}

// processPipeline sends cmds, recovering as the rules say.
func (h *Hook) processPipeline(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
	err := next(ctx, cmds)
	if err == nil || len(cmds) == 0 {
		return err
	}
	name := "pipeline"
	if cmds[0].Name() == "multi" {
		name = "multi"
	}
	err = h.recover(ctx, name, err, func(ctx context.Context, prev error) (error, bool) {
		if !noneRan(cmds, classify(prev)) {
			return prev, false
		}
		for _, cmd := range cmds {
			cmd.SetErr(nil)
		}
		return next(ctx, cmds), true
	})
	if re, ok := err.(*refusedError); ok {
		for _, cmd := range cmds {
			if classify(cmd.Err()) == kindAuth {
				cmd.SetErr(re)
			}
		}
	}
	return err
}

// noneRan reports whether no command of a failed pipeline can have run: all failed with an error
// of kind k, or none has an error (the pipeline failed before any reply: no connection). A mix of
// failed and answered commands means some ran.
func noneRan(cmds []redis.Cmder, k kind) bool {
	var failed, clean int
	for _, cmd := range cmds {
		switch e := cmd.Err(); {
		case e == nil:
			clean++
		case classify(e) == k:
			failed++
		default:
			return false
		}
	}
	return failed == len(cmds) || clean == len(cmds)
}

// admit lets a command through to go-redis only when a connection could authenticate: a valid
// token, not refused by the cache. With none valid it asks the provider, which fetches one or,
// between its paced attempts in an outage, answers its last error at once; a context with no
// deadline waits at most wait (the client's DialTimeout, what go-redis would give a dial). The
// command then fails with the provider's error before go-redis dials: the dials would fail
// anyway, and PoolSize failed dials would trip go-redis's dial breaker, which then dials once a
// second only and delays the recovery by up to a second.
//
// After a block, the first command on a new token is its probe (probeNewer: report its outcome
// to probed), and now and then one command re-checks the blocked token first (probeSame: recheck);
// the others fail at once.
func (h *Hook) admit(ctx context.Context, wait time.Duration) (*refusal, probeKind, error) {
	info, ok := h.src.Token()
	if !ok {
		if _, hasDeadline := ctx.Deadline(); !hasDeadline && wait > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, wait)
			defer cancel()
		}
		if err := h.awaitToken(ctx); err != nil {
			return nil, noProbe, err
		}
		if info, ok = h.src.Token(); !ok {
			return nil, noProbe, nil // expired meanwhile: go-redis's own path decides
		}
	}
	return h.blockedErr(info.Generation)
}

// hasToken reports whether the provider has a valid token: through the provider itself when the
// hook was made from one (a call the compiler can inline, not one through the interface).
func (h *Hook) hasToken() bool {
	if h.p != nil {
		_, ok := h.p.Token()
		return ok
	}
	_, ok := h.src.Token()
	return ok
}

// plain reports whether cmd is certainly neither a handshake command nor a blocking one (see
// handshake and blockingOf), from its first argument without lower-casing it (cmd.Name() makes a
// lower-cased copy, checked byte by byte: half the hook's cost).
func plain(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) == 0 {
		return false
	}
	name, ok := args[0].(string)
	if !ok || name == "" {
		return false
	}
	f := strings.EqualFold
	switch c := name[0] | 0x20; len(name) { // c: the first letter in lower case
	case 4:
		return !(c == 'a' && f(name, "auth") || c == 'w' && f(name, "wait"))
	case 5:
		return !(c == 'h' && f(name, "hello") || c == 'b' && (f(name, "blpop") || f(name, "brpop")) || c == 'x' && f(name, "xread"))
	case 6:
		return !(c == 'c' && f(name, "client") || c == 's' && f(name, "select") ||
			c == 'b' && (f(name, "blmove") || f(name, "blmpop") || f(name, "bzmpop")))
	case 7:
		return !(c == 'w' && f(name, "waitaof"))
	case 8:
		return !(c == 'r' && f(name, "readonly") || c == 'b' && (f(name, "bzpopmin") || f(name, "bzpopmax")))
	case 10:
		return !(c == 'b' && f(name, "brpoplpush") || c == 'x' && f(name, "xreadgroup"))
	}
	return true
}

// awaitToken gets a valid token for admit. From a provider, after a failed fetch, it waits for
// the provider's next paced attempt when that is due before ctx ends (the provider's
// AwaitRenewal path), rather than failing with the last error when a token is moments away.
func (h *Hook) awaitToken(ctx context.Context) error {
	if h.p != nil {
		_, err := renewal.Await(ctx, h.p)
		return err
	}
	_, _, err := h.src.CredentialsProviderContext(ctx)
	return err
}

// handshake reports the commands go-redis pipelines to set up a connection (and AUTH/HELLO,
// which re-authenticate one). They pass through the hooks too; retrying them would recurse into
// the handshake.
func handshake(name string) bool {
	switch name {
	case "hello", "auth", "client", "select", "readonly":
		return true
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
