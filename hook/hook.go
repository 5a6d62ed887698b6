package hook

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"

	"github.com/entraredis/entraredis/internal/link"
	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/retry"
)

// The defaults of Options.
const (
	defaultGuardMargin = 30 * time.Second // how long before its token expires a connection is retired
	defaultKeepAlive   = 2 * time.Minute  // idle time after which a connection is PINGed (Azure closes at 10)
	defaultDialTimeout = 5 * time.Second  // go-redis's: the longest a command without a deadline waits for a token
)

// Options configures a Hook. Zero fields mean defaults; a nil *Options means all defaults.
type Options struct {
	// MaxRetries is how many times a command is sent again after an authentication error or a
	// failure to connect; default 3, -1 none. A connection the guard retired does not count: the
	// command is sent again on another connection (at most once per open connection).
	MaxRetries int
	// Backoff paces the retries: the first is immediate (a refresh or a new connection came first),
	// the n-th waits Backoff.Backoff(n-1). Zero fields mean retry.Policy's defaults.
	Backoff retry.Policy
	// GuardMargin: a connection that could not be renewed in place is retired this long before
	// its token expires, once a newer token is available; at most an eighth of the token's life.
	// Default 30s. Negative turns the guard off: no wrapping of connections, no
	// renewal in place (entraredis then lets go-redis re-authenticate open connections itself:
	// that path raced with commands and hung tests before go-redis v9.23, and is tested only
	// against the newest go-redis).
	GuardMargin time.Duration
	// KeepAlive: a connection that started no request for between KeepAlive/2 and KeepAlive gets
	// a PING from the guard, well before Azure's 10-minute idle timeout closes it (over TLS
	// go-redis never checks an idle connection, and the next command would meet the closed
	// socket, its fate unknown). Default 2 minutes; negative: off.
	KeepAlive time.Duration
	// Logger receives retries, give-ups and retired connections; nil: the provider's
	// (provider.Options.Logger), so that one option sets both.
	Logger *slog.Logger
	// OnEvent, when set, is called synchronously for each Event; keep it fast.
	OnEvent func(Event)
}

// source is what the hook needs of a *provider.Provider.
type source interface {
	CredentialsProviderContext(ctx context.Context) (username, password string, err error)
	Subscribe(l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error)
	Refresh(ctx context.Context) error
	Token() (provider.TokenInfo, bool)
}

// Hook is a redis.Hook; see the package documentation. One Hook may serve several clients of the
// same provider. It is safe for concurrent use.
type Hook struct {
	p          *provider.Provider
	src        source
	maxRetries int
	backoff    retry.Policy
	margin     time.Duration
	keepAlive  time.Duration
	guardOff   bool
	log        *slog.Logger
	onEvent    func(Event)

	g       guard
	refused refusals
	wait    time.Duration // a command with no deadline waits this long for a token: the client's DialTimeout

	refusedCmds, dials, reauths, reauthFailures, retries, authRetries, gaveUp, retired, pubsubReauths, pubsubClosed,
	idleReauths, keepAlives, splits, pubsubMoved, pubsubMoveFailures atomic.Uint64
}

var _ redis.Hook = (*Hook)(nil)

// New returns a Hook that refreshes p's token when the server rejects it. It panics when p is nil:
// that is a programming error, and a hook without a provider could only fail later.
func New(p *provider.Provider, opts *Options) *Hook {
	if p == nil {
		panic("entraredis: hook.New: the provider is nil: create one with provider.New(cred, nil) or provider.NewDefault(nil, nil)")
	}
	if opts == nil || opts.Logger == nil {
		o := Options{}
		if opts != nil {
			o = *opts
		}
		o.Logger = link.ProviderLogger(p) // the provider's logger serves both unless told otherwise
		opts = &o
	}
	h := newHook(p, opts)
	h.p = p
	return h
}

func newHook(src source, opts *Options) *Hook {
	var o Options
	if opts != nil {
		o = *opts
	}
	h := &Hook{src: src, maxRetries: o.MaxRetries, backoff: o.Backoff, margin: o.GuardMargin, keepAlive: o.KeepAlive, log: o.Logger, onEvent: o.OnEvent,
		wait: defaultDialTimeout}
	switch {
	case h.maxRetries == 0:
		h.maxRetries = 3
	case h.maxRetries < 0:
		h.maxRetries = 0
	}
	switch {
	case h.keepAlive == 0:
		h.keepAlive = defaultKeepAlive
	case h.keepAlive < 0:
		h.keepAlive = 0
	}
	switch {
	case h.margin == 0:
		h.margin = defaultGuardMargin
	case h.margin < 0:
		h.guardOff = true
	}
	h.g.init(h)
	return h
}

// Credentials returns what a client using the hook sets in its options: the provider's
// CredentialsProviderContext for new connections and, only when the guard is off
// (Options.GuardMargin < 0), the provider as StreamingCredentialsProvider for open ones. With the
// guard on, none is needed: the guard renews each open connection in place, which go-redis's
// streaming re-authentication would do less well (it sets connections aside and dials new ones
// meanwhile). Both are nil for a hook not made by New.
func (h *Hook) Credentials() (func(context.Context) (string, string, error), auth.StreamingCredentialsProvider) {
	if h == nil || h.p == nil {
		return nil, nil
	}
	if h.guardOff {
		return h.p.CredentialsProviderContext, h.p
	}
	return h.p.CredentialsProviderContext, nil
}

// Stats returns the hook's counters.
func (h *Hook) Stats() Stats {
	return Stats{
		Dials:              h.dials.Load(),
		Reauths:            h.reauths.Load(),
		ReauthFailures:     h.reauthFailures.Load(),
		Retries:            h.retries.Load(),
		AuthRetries:        h.authRetries.Load(),
		GaveUp:             h.gaveUp.Load(),
		Refused:            h.refusedCmds.Load(),
		ConnsRetired:       h.retired.Load(),
		PubSubReauths:      h.pubsubReauths.Load(),
		PubSubClosed:       h.pubsubClosed.Load(),
		IdleReauths:        h.idleReauths.Load(),
		KeepAlives:         h.keepAlives.Load(),
		BlockingSplits:     h.splits.Load(),
		PubSubMoved:        h.pubsubMoved.Load(),
		PubSubMoveFailures: h.pubsubMoveFailures.Load(),
	}
}

// Close stops the guard's timers and its goroutine, and returns within a second whatever the
// credential does (the guard never waits for a credential call). Connections keep working; they
// are just no longer renewed or retired early. Closing is optional: each timer ends by itself when
// its token expires, and the goroutine when the last guarded connection is closed.
func (h *Hook) Close() error {
	h.g.close()
	return nil
}

func init() {
	link.HookForClient = func(h any, dialTimeout time.Duration) redis.Hook { return h.(*Hook).forClient(dialTimeout) }
}

// forClient returns the hook as installed on a client whose Options.DialTimeout is dialTimeout: a
// command with no deadline then waits for a token at most dialTimeout, the time go-redis would
// give a dial, instead of the default 5 s (go-redis's default DialTimeout); 0 keeps the default.
// entraredis's constructors install it this way (through link); it shares everything else with h.
func (h *Hook) forClient(dialTimeout time.Duration) redis.Hook {
	if dialTimeout <= 0 {
		return h
	}
	return clientHook{h: h, wait: dialTimeout}
}

// clientHook is a Hook with a client's DialTimeout.
type clientHook struct {
	h    *Hook
	wait time.Duration
}

func (c clientHook) DialHook(next redis.DialHook) redis.DialHook { return c.h.DialHook(next) }
func (c clientHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return c.h.processHook(next, c.wait)
}
func (c clientHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return c.h.processPipelineHook(next, c.wait)
}

// DialHook dials only when the provider has a token for the handshake, and wraps each new
// connection in the guard (unless Options.GuardMargin is negative, or the Dialer did already:
// WrapDialer). In an identity provider outage past expiry the provider answers at once with its
// last error between its paced attempts, so commands fail before any connection is made (the
// error wraps provider.ErrTokenUnavailable: the command was not sent) instead of dialling,
// failing the handshake and closing, in a storm. Nor does it dial for a token the cache has
// refused (see ErrTokenRefused).
func (h *Hook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if _, _, err := h.src.CredentialsProviderContext(ctx); err != nil {
			return nil, err
		}
		if info, ok := h.src.Token(); ok {
			if r := h.refused.blocked.Load(); r != nil && r.gen == info.Generation {
				h.refusedCmds.Add(1)
				return nil, r.err
			}
		}
		c, err := next(ctx, network, addr)
		if err != nil || c == nil || h.guardOff || guarded(c) {
			return c, err
		}
		return h.g.wrap(c, func(ctx context.Context) (net.Conn, error) { return next(ctx, network, addr) }), nil
	}
}

// WrapDialer returns a dialer whose connections the guard wraps: set it as the options' Dialer,
// so that the connections go-redis dials before a hook can be added (the MinIdleConns prefill in
// redis.NewClient) are guarded too. dial is the dialer to wrap: the options' own, or
// redis.NewDialer's. entraredis's constructors do this.
func (h *Hook) WrapDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if h.guardOff {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil || c == nil || guarded(c) {
			return c, err
		}
		return h.g.wrap(c, func(ctx context.Context) (net.Conn, error) { return dial(ctx, network, addr) }), nil
	}
}

// ProcessHook retries a command after an authentication error or a failure to connect, and sends
// a blocking command whose block would outlast the connection's token as shorter blocks. A command
// fails before go-redis takes a connection when no token can be had (see admit) or the cache has
// refused the current one.
func (h *Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return h.processHook(next, h.wait)
}

func (h *Hook) processHook(next redis.ProcessHook, wait time.Duration) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		name := cmd.Name()
		if handshake(name) {
			return next(ctx, cmd) // the handshake and go-redis's re-AUTH: retrying would recurse
		}
		probe, err := h.admit(ctx, wait)
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		if probe != nil {
			err = h.processCmd(ctx, cmd, name, next)
			h.probed(probe, err)
			return err
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
		err = h.recover(ctx, name, err, func(ctx context.Context, _ error) (error, bool) {
			cmd.SetErr(nil)
			return next(ctx, cmd), true
		})
		if re, ok := err.(*refusedError); ok {
			cmd.SetErr(re) // the server's reply, explained
		}
		return err
	}
	if b, ok := blockingOf(name, cmd.Args()); ok && !h.guardOff {
		return h.block(ctx, cmd, b, once, next)
	}
	return once(ctx)
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
				return next(ctx, cmds) // the handshake's own pipeline
			}
		}
		if len(cmds) == 0 {
			return next(ctx, cmds)
		}
		probe, err := h.admit(ctx, wait)
		if err != nil {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return err
		}
		if probe != nil {
			err = h.processPipeline(ctx, cmds, next)
			h.probed(probe, err)
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

// recover runs the retry rules on err, the failure of the first attempt; again sends the command
// once more and says whether it did (a pipeline may decline).
//
// The rule: a command is sent again only when it certainly did not run, at most MaxRetries times
// after an authentication error or a failure to connect, and at most once per connection that was
// open after a retired connection (go-redis drops each one the guard retires, so that ends).
func (h *Hook) recover(ctx context.Context, name string, err error, again func(ctx context.Context, prev error) (error, bool)) error {
	tries, swaps, maxSwaps := 0, 0, h.g.live()+2
	for {
		k := classify(err)
		switch {
		case !k.notRun():
			if k == kindConn {
				h.ensureToken(ctx) // so that go-redis's reconnection authenticates
			}
			return err
		case k == kindRetired:
			if swaps++; swaps > maxSwaps {
				return h.giveUp(name, swaps-1, k, err)
			}
		default:
			if tries >= h.maxRetries {
				return h.giveUp(name, tries, k, err)
			}
			if k == kindAuth {
				if info, ok := h.src.Token(); ok {
					if re := h.onRefused(ctx, name, info.Generation, err); re != nil {
						return re // not sent again: the same token would be refused
					}
				}
			}
			tries++
			if !h.prepare(ctx, name, k, tries) && errors.Is(err, provider.ErrTokenUnavailable) {
				// No token to connect with, and the provider has none to give before its next
				// paced attempt: sending it again now would only fail the same way (after
				// go-redis's dial retries, or at the caller's deadline with a bare context error).
				return h.giveUp(name, tries-1, k, err)
			}
			if tries > 1 && sleep(ctx, h.backoff.Backoff(tries-1)) != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return err
		}
		n := tries
		if k == kindRetired {
			n = swaps
		}
		h.retries.Add(1)
		h.emit(Event{Kind: EventRetry, Command: name, Attempt: n, Class: k.class(), Err: err},
			slog.LevelDebug, "entraredis: sending a command again", slog.String("command", name),
			slog.Int("attempt", n), slog.Any("error", err))
		var sent bool
		if err, sent = again(ctx, err); !sent || err == nil || err == redis.Nil {
			return err
		}
	}
}

// prepare makes the next attempt worth making: a fresh token after the server rejected one (and
// the connections on older tokens renewed or retired), or a valid token before reconnecting. It
// reports false when no valid token could be had for a reconnection.
func (h *Hook) prepare(ctx context.Context, name string, k kind, tries int) bool {
	if k != kindAuth {
		return h.ensureToken(ctx)
	}
	if _, ok := h.src.Token(); !ok {
		// No valid token: nothing onRefused could judge; get one (paced by the provider).
		if err := h.src.Refresh(ctx); err != nil {
			h.logf(slog.LevelWarn, "entraredis: token refresh after an authentication error failed",
				slog.String("command", name), slog.Any("error", err))
		}
	}
	h.g.retireOlder(ctx)
	h.authRetries.Add(1)
	return true
}

func (h *Hook) giveUp(name string, attempts int, k kind, err error) error {
	h.gaveUp.Add(1)
	h.emit(Event{Kind: EventGaveUp, Command: name, Attempt: attempts, Class: k.class(), Err: err},
		slog.LevelWarn, "entraredis: command failed after retries", slog.String("command", name),
		slog.Int("retries", attempts), slog.Any("error", err))
	return err
}

// ensureToken refreshes the provider's token when none is valid or it expires within the guard
// margin, so that the connection go-redis dials next authenticates. It reports whether a token is
// valid (false: the refresh failed).
func (h *Hook) ensureToken(ctx context.Context) bool {
	if info, ok := h.src.Token(); ok {
		// The guard's margin, shrunk for short-lived tokens as the guard does (half the time
		// between the refresh point and the expiry stands in for an eighth of the life).
		m := min(h.margin, info.ExpiresOn.Sub(info.RefreshAt)/2)
		if time.Until(info.ExpiresOn) > m {
			return true
		}
	}
	if err := h.src.Refresh(ctx); err != nil {
		h.logf(slog.LevelWarn, "entraredis: token refresh before reconnecting failed", slog.Any("error", err))
		return false
	}
	return true
}

// admit lets a command through to go-redis only when a connection could authenticate: a valid
// token, not refused by the cache. With none valid it asks the provider, which fetches one or,
// between its paced attempts in an outage, answers its last error at once; a context with no
// deadline waits at most wait (the client's DialTimeout, what go-redis would give a dial). The
// command then fails with the provider's error before go-redis dials: the dials would fail
// anyway, and PoolSize failed dials would trip go-redis's dial breaker, which then dials once a
// second only and delays the recovery by up to a second.
//
// After a block, the first command on a new token is its probe (returned: report its outcome to
// probed); the others fail at once until the probe shows the new token accepted.
func (h *Hook) admit(ctx context.Context, wait time.Duration) (*refusal, error) {
	info, ok := h.src.Token()
	if !ok {
		if _, hasDeadline := ctx.Deadline(); !hasDeadline && wait > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, wait)
			defer cancel()
		}
		if _, _, err := h.src.CredentialsProviderContext(ctx); err != nil {
			return nil, err
		}
		if info, ok = h.src.Token(); !ok {
			return nil, nil // expired meanwhile: go-redis's own path decides
		}
	}
	return h.blockedErr(info.Generation)
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
