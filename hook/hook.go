// Package hook is a go-redis hook (redis.Hook) that keeps commands working across Microsoft Entra
// ID token expiry on Azure Cache for Redis and Azure Managed Redis.
//
// It does four things:
//
//   - Renew open connections in place. Azure closes a connection when the token it authenticated
//     with expires, unless a newer token was sent with AUTH before. The hook's DialHook wraps each
//     connection; when a request starts on one whose token is older than the provider's newest,
//     it writes "AUTH user token" in the same write, ahead of the request, and removes the reply
//     before go-redis reads it. Every connection in use is renewed right after each refresh,
//     without being set aside or redialled (go-redis's own streaming re-authentication takes
//     connections out of the pool meanwhile and dials new ones: it is not needed with the hook).
//     Pub/sub connections are renewed with an AUTH between their messages (RESP3), or reconnected
//     before their token expires (RESP2, where a subscriber cannot send AUTH).
//   - Retire what cannot be renewed. A connection that could not be renewed (its AUTH was
//     refused, or it sits inside MULTI) is retired Options.GuardMargin before its token expires,
//     and any connection still on an expired token is: its next request fails in Write, before a
//     byte leaves, with ErrConnRetired; go-redis drops it and the hook sends the command again on
//     another connection.
//   - Retry after an authentication error. When a command, a pipeline or a MULTI/EXEC fails with
//     NOAUTH or WRONGPASS (also Azure's "ERR WRONGPASS ...", which go-redis does not recognise),
//     the server has rejected it, so it did not run: the hook forces a token refresh, renews or
//     retires the connections on older tokens and sends it again, up to Options.MaxRetries times.
//   - Retry after a failure to connect: a dial error or a credential failure during the handshake
//     never reached the server, so the command is sent again too, after making sure the
//     reconnection gets a valid token. A command that was written and then lost its connection is
//     never sent again by the hook: its fate is unknown, and go-redis's own MaxRetries, as
//     configured, decides.
//
// Install it with entraredis.NewClient and friends, which also set the credentials and put the
// hook where it runs (on every node client of a cluster or ring). By hand:
//
//	opt.CredentialsProviderContext = p.CredentialsProviderContext
//	rdb := redis.NewClient(opt)
//	rdb.AddHook(hook.New(p, nil))
package hook

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"

	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/retry"
)

// DefaultGuardMargin is how long before its token expires a connection is retired by default.
const DefaultGuardMargin = 30 * time.Second

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
	// Default DefaultGuardMargin. Negative turns the guard off: no wrapping of connections, no
	// renewal in place (entraredis then lets go-redis re-authenticate open connections itself).
	GuardMargin time.Duration
	// Logger receives retries, give-ups and retired connections; nil is silent.
	Logger *slog.Logger
	// OnEvent, when set, is called synchronously for each Event; keep it fast.
	OnEvent func(Event)
}

// EventKind says what the hook did.
type EventKind int

// The kinds of Event.
const (
	EventRetry        EventKind = iota + 1 // a command is sent again
	EventGaveUp                            // retries are spent: the error goes to the caller
	EventConnRetired                       // the guard retired a connection before its token expired
	EventPubSubReauth                      // a pub/sub connection was re-authenticated in place
	EventReauthFailed                      // the server refused a new token on an open connection
)

func (k EventKind) String() string {
	switch k {
	case EventRetry:
		return "retry"
	case EventGaveUp:
		return "gave up"
	case EventConnRetired:
		return "connection retired"
	case EventPubSubReauth:
		return "pub/sub re-authenticated"
	case EventReauthFailed:
		return "re-authentication failed"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event reports what the hook did. It never holds a token.
type Event struct {
	Kind      EventKind
	Command   string      // command name, or "pipeline" / "multi" (EventRetry, EventGaveUp)
	Attempt   int         // retries so far, this one included (EventRetry, EventGaveUp)
	Class     retry.Class // of Err (EventRetry, EventGaveUp)
	Err       error       // the error that caused the event
	Addr      string      // server address (EventConnRetired, EventPubSubReauth, EventReauthFailed)
	ExpiresOn time.Time   // of the connection's token (EventConnRetired) or the new one (the others)
	PubSub    bool        // the retired connection was a pub/sub one, closed to make go-redis reconnect
}

// Stats are counters since the hook was made.
type Stats struct {
	Dials          uint64 // connections made through the hook
	Reauths        uint64 // connections renewed in place with a newer token
	ReauthFailures uint64 // renewals the server refused (the connection kept its token)
	Retries        uint64 // commands and pipelines sent again
	AuthRetries    uint64 // of which after an authentication error
	GaveUp         uint64 // commands that failed after their retries
	ConnsRetired   uint64 // connections the guard retired before their token expired
	PubSubReauths  uint64 // pub/sub connections re-authenticated in place
	PubSubClosed   uint64 // pub/sub connections closed so that go-redis reconnects them
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
	guardOff   bool
	log        *slog.Logger
	onEvent    func(Event)

	g guard

	dials, reauths, reauthFailures, retries, authRetries, gaveUp, retired, pubsubReauths, pubsubClosed atomic.Uint64
}

var _ redis.Hook = (*Hook)(nil)

// New returns a Hook that refreshes p's token when the server rejects it. It panics when p is nil:
// that is a programming error, and a hook without a provider could only fail later.
func New(p *provider.Provider, opts *Options) *Hook {
	if p == nil {
		panic("hook: New needs a *provider.Provider, got nil: create one with provider.New or provider.NewDefault")
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
	h := &Hook{src: src, maxRetries: o.MaxRetries, backoff: o.Backoff, margin: o.GuardMargin, log: o.Logger, onEvent: o.OnEvent}
	switch {
	case h.maxRetries == 0:
		h.maxRetries = 3
	case h.maxRetries < 0:
		h.maxRetries = 0
	}
	switch {
	case h.margin == 0:
		h.margin = DefaultGuardMargin
	case h.margin < 0:
		h.guardOff = true
	}
	h.g.init(h)
	return h
}

// Provider returns the provider the hook refreshes.
func (h *Hook) Provider() *provider.Provider { return h.p }

// Guarded reports whether the hook guards and renews connections (Options.GuardMargin is not
// negative). When it does, a client needs no auth.StreamingCredentialsProvider: the guard renews
// each open connection in place, which go-redis's streaming re-authentication would otherwise do,
// less well (it sets connections aside and dials new ones meanwhile).
func (h *Hook) Guarded() bool { return !h.guardOff }

// Stats returns the hook's counters.
func (h *Hook) Stats() Stats {
	return Stats{
		Dials:          h.dials.Load(),
		Reauths:        h.reauths.Load(),
		ReauthFailures: h.reauthFailures.Load(),
		Retries:        h.retries.Load(),
		AuthRetries:    h.authRetries.Load(),
		GaveUp:         h.gaveUp.Load(),
		ConnsRetired:   h.retired.Load(),
		PubSubReauths:  h.pubsubReauths.Load(),
		PubSubClosed:   h.pubsubClosed.Load(),
	}
}

// Close stops the guard's timers. Connections keep working; they are just no longer retired early.
// Closing is optional: each timer ends by itself when its token expires.
func (h *Hook) Close() error {
	h.g.close()
	return nil
}

// DialHook dials only when the provider has a token for the handshake, and wraps each new
// connection in the guard (unless Options.GuardMargin is negative). In an identity provider outage
// past expiry the provider answers at once with its last error between its paced attempts, so
// commands fail before any connection is made (the error wraps provider.ErrTokenUnavailable: the
// command was not sent) instead of dialling, failing the handshake and closing, in a storm.
func (h *Hook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if _, _, err := h.src.CredentialsProviderContext(ctx); err != nil {
			return nil, err
		}
		c, err := next(ctx, network, addr)
		if err != nil || c == nil || h.guardOff {
			return c, err
		}
		return h.g.wrap(c), nil
	}
}

// ProcessHook retries a command after an authentication error or a failure to connect.
func (h *Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil || err == redis.Nil {
			return err
		}
		if name := cmd.Name(); name == "hello" || name == "auth" {
			return err // the handshake and go-redis's re-AUTH: retrying would recurse
		}
		return h.recover(ctx, cmd.Name(), err, func(ctx context.Context, _ error) (error, bool) {
			cmd.SetErr(nil)
			return next(ctx, cmd), true
		})
	}
}

// ProcessPipelineHook retries a pipeline or MULTI/EXEC after an authentication error or a failure
// to connect, when no command of it ran: every command failed with that error, or none got a reply.
func (h *Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err == nil || len(cmds) == 0 {
			return err
		}
		for _, cmd := range cmds {
			if isHandshake(cmd) {
				return err
			}
		}
		name := "pipeline"
		if cmds[0].Name() == "multi" {
			name = "multi"
		}
		return h.recover(ctx, name, err, func(ctx context.Context, prev error) (error, bool) {
			if !noneRan(cmds, kindOf(prev)) {
				return prev, false
			}
			for _, cmd := range cmds {
				cmd.SetErr(nil)
			}
			return next(ctx, cmds), true
		})
	}
}

// noneRan reports whether no command of a failed pipeline can have run: all failed with an error
// of kind k, or none has an error (the pipeline failed before any reply: no connection). A mix of
// failed and answered commands means some ran.
func noneRan(cmds []redis.Cmder, k errKind) bool {
	var failed, clean int
	for _, cmd := range cmds {
		switch e := cmd.Err(); {
		case e == nil:
			clean++
		case kindOf(e) == k:
			failed++
		default:
			return false
		}
	}
	return failed == len(cmds) || clean == len(cmds)
}

type errKind int

const (
	kindOther   errKind = iota
	kindAuth            // rejected by the server: it did not run
	kindUnsent          // failed to connect: it was not sent
	kindRetired         // the guard failed the write: it was not sent
)

func kindOf(err error) errKind {
	switch {
	case errors.Is(err, ErrConnRetired):
		return kindRetired
	case retry.IsAuth(err):
		return kindAuth
	case errors.Is(err, provider.ErrTokenUnavailable):
		return kindUnsent // the handshake found no token: nothing was written
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return kindUnsent
	}
	return kindOther
}

// recover runs the retry rules on err, the failure of the first attempt; again sends the command
// once more and says whether it did (a pipeline may decline).
func (h *Hook) recover(ctx context.Context, name string, err error, again func(ctx context.Context, prev error) (error, bool)) error {
	attempts, swaps := 0, 0
	for {
		k := kindOf(err)
		switch k {
		case kindOther:
			if retry.IsConnection(err) {
				h.ensureToken(ctx) // so that go-redis's reconnection authenticates
			}
			return err
		case kindRetired:
			// Each retired connection is dropped by go-redis, so this ends: at most once per
			// connection open when the guard retired them, and a new one is on a new token.
			if swaps++; swaps > int(h.g.live.Load())+2 {
				return h.giveUp(name, attempts, err)
			}
		default:
			if attempts >= h.maxRetries {
				return h.giveUp(name, attempts, err)
			}
			attempts++
			if k == kindAuth {
				if rerr := h.src.Refresh(ctx); rerr != nil {
					h.logf(slog.LevelWarn, "entraredis: token refresh after an authentication error failed",
						slog.String("command", name), slog.Any("error", rerr))
				}
				h.g.retireOlder(ctx)
				h.authRetries.Add(1)
			} else if !h.ensureToken(ctx) && errors.Is(err, provider.ErrTokenUnavailable) {
				// No token to connect with, and the provider has none to give before its next
				// paced attempt: sending it again now would only fail the same way (after
				// go-redis's dial retries, or at the caller's deadline with a bare context error).
				return h.giveUp(name, attempts-1, err)
			}
			if attempts > 1 {
				if werr := sleep(ctx, h.backoff.Backoff(attempts-1)); werr != nil {
					return err
				}
			}
		}
		if ctx.Err() != nil {
			return err
		}
		h.retries.Add(1)
		n := attempts
		if k == kindRetired {
			n = swaps
		}
		h.emit(Event{Kind: EventRetry, Command: name, Attempt: n, Class: retry.Classify(err), Err: err},
			slog.LevelDebug, "entraredis: sending a command again", slog.String("command", name),
			slog.Int("attempt", n), slog.Any("error", err))
		var sent bool
		if err, sent = again(ctx, err); !sent || err == nil || err == redis.Nil {
			return err
		}
	}
}

// errRetiredNoToken is the guard's error for a connection retired as its token expired with no
// new token to reconnect with: both ErrConnRetired and provider.ErrTokenUnavailable, so that the
// caller learns the cause (an identity provider outage), not "send the command again".
type errRetiredNoToken struct{}

func (errRetiredNoToken) Error() string {
	return "entraredis: connection retired as its token expired, and no new token could be fetched (provider: no valid token): the command was not sent"
}

func (errRetiredNoToken) Is(target error) bool {
	return target == ErrConnRetired || target == provider.ErrTokenUnavailable
}

func (h *Hook) giveUp(name string, attempts int, err error) error {
	h.gaveUp.Add(1)
	h.emit(Event{Kind: EventGaveUp, Command: name, Attempt: attempts, Class: retry.Classify(err), Err: err},
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

// isHandshake reports the commands go-redis pipelines to set up a connection (and AUTH/HELLO,
// which re-authenticate one). They pass through the hooks too; retrying them would recurse into
// the handshake.
func isHandshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth", "client", "select", "readonly":
		return true
	}
	return false
}

func (h *Hook) emit(e Event, level slog.Level, msg string, attrs ...slog.Attr) {
	h.logf(level, msg, attrs...)
	if h.onEvent != nil {
		h.onEvent(e)
	}
}

func (h *Hook) logf(level slog.Level, msg string, attrs ...slog.Attr) {
	if h.log != nil {
		h.log.LogAttrs(context.Background(), level, msg, attrs...)
	}
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
