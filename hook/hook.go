package hook

import (
	"context"
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
	// OnEvent, when set, is called synchronously for each Event, at times while the guard holds a
	// connection's reader or writer (a renewal's answer is seen there): keep it fast, never block
	// in it or send commands from it; hand the event to a goroutine or a buffered channel instead.
	// The same holds for Logger's handler.
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

	g    guard
	st   *tokenState   // the refusals of the provider's tokens, shared with its other hooks (blocked.go)
	wait time.Duration // a command with no deadline waits this long for a token: the client's DialTimeout

	refusedCmds, dials, reauths, reauthFailures, retries, authRetries, gaveUp, retired, pubsubReauths, pubsubClosed,
	idleReauths, keepAlives, splits, pubsubMoved, pubsubMoveFailures, rechecks atomic.Uint64
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
		wait: defaultDialTimeout, st: stateFor(src)}
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
		Rechecks:           h.rechecks.Load(),
		Blocked:            h.st.blocked.Load() != nil,
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
			if r := h.st.blocked.Load(); r != nil && r.gen == info.Generation && !r.probing() {
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
