package hook

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// onRefused handles the server's refusal (reply) of a command's token. It returns the error when
// the token is blocked (see blocked.go); nil when the command may be sent again: on a newer
// token, or on the same one (a token accepted before gets one resend; resent, the caller's
// record, is the generation+1 it was resent on).
func (h *Hook) onRefused(ctx context.Context, name string, reply error, resent *uint64) *refusedError {
	info, ok := h.src.Token()
	if !ok {
		return nil // no valid token: prepare gets one
	}
	gen, st := info.Generation, h.st
	if r := st.blocked.Load(); r != nil && r.gen == gen {
		return r.err
	}
	if st.sawHandshake.Load() && st.refused.Load() != gen {
		// The refused connection was on an older token (or no handshake refusal was seen): the
		// current one is not to blame. prepare moves the connections on older tokens.
		return nil
	}
	accepted := st.accepted.Load() >= gen
	switch {
	case accepted && *resent == gen+1:
		return h.blockToken(ctx, name, gen, reply) // a revocation whose resend was refused too
	case !accepted && st.forced.Load() == gen+1:
		return h.blockToken(ctx, name, gen, reply) // brought by a refusal's refresh, refused
	}
	h.forcedRefresh(ctx, name, gen)
	if r := st.blocked.Load(); r != nil && r.gen == gen {
		return r.err
	}
	if info, ok := h.src.Token(); ok && info.Generation != gen {
		st.forced.Store(info.Generation + 1)
		*resent = info.Generation + 1
		return nil
	}
	if ctx.Err() != nil {
		return nil // the caller gave up during the refresh: its own error says so
	}
	if accepted {
		*resent = gen + 1
		return nil // the same token once more: the refusal may have been a moment's
	}
	return h.blockToken(ctx, name, gen, reply)
}

// forcedRefresh makes or shares the paced refresh of the provider's token gen.
func (h *Hook) forcedRefresh(ctx context.Context, name string, gen uint64) {
	for {
		if r := h.st.blocked.Load(); r != nil && r.gen == gen {
			return // blocked meanwhile by a command that shared the last refresh: no other
		}
		start, running, due := h.st.paced.begin()
		if start {
			err := h.refreshPaced(ctx)
			if err != nil {
				h.logf(slog.LevelWarn, "entraredis: token refresh after an authentication error failed",
					slog.String("command", name), slog.Any("error", err))
			}
			return
		}
		if running != nil {
			select { // share the refresh another command started
			case <-running:
			case <-ctx.Done():
			}
			return
		}
		if info, ok := h.src.Token(); !ok || info.Generation != gen || sleep(ctx, due) != nil {
			return // the last refresh brought another token, or the caller gave up
		}
	}
}

// refreshPaced runs the refresh begin allowed; end is deferred, so that a refresh that panics
// does not leave later refusals waiting for it.
func (h *Hook) refreshPaced(ctx context.Context) error {
	defer h.st.paced.end()
	return h.src.Refresh(ctx)
}

// blockToken makes gen the blocked token and returns its error.
func (h *Hook) blockToken(ctx context.Context, name string, gen uint64, reply error) *refusedError {
	user, pass, err := h.src.CredentialsProviderContext(ctx)
	if info, ok := h.src.Token(); err != nil || !ok || info.Generation != gen {
		pass = "" // not the refused token any more: the claims are unknown
	}
	e := newRefusedError(reply, user, pass)
	r := &refusal{gen: gen, err: e}
	r.next.Store(time.Now().Add(recheckAfter(0)).UnixNano())
	for {
		cur := h.st.blocked.Load()
		if cur != nil && cur.gen == gen {
			return cur.err // another command blocked it first
		}
		if h.st.blocked.CompareAndSwap(cur, r) {
			break
		}
	}
	h.refusedCmds.Add(1)
	h.gaveUp.Add(1)
	h.emit(Event{Kind: EventGaveUp, Command: name, Class: kindAuth.class(), Err: e},
		slog.LevelError, "entraredis: the cache refuses the identity's token; commands fail at once while it is re-checked at growing intervals",
		slog.Any("error", e), slog.Duration("max_recheck_interval", maxRecheck))
	return e
}

// refusalGap paces the refreshes that refusals force, per provider, whatever the number of hooks
// and clients using it: at most one every half second, no more credential calls than an outage's
// pacing makes.
const refusalGap = 500 * time.Millisecond

// pacer is the last forced refresh of a provider: when it started, and closed when it ended.
type pacer struct {
	mu    sync.Mutex
	start time.Time
	done  chan struct{} // nil: none yet
}

// begin reports whether a forced refresh may start now (then the caller calls end after it); if
// not, running is the refresh in flight to wait for, or, when the last one has ended, due is how
// long until the next may start.
func (p *pacer) begin() (start bool, running <-chan struct{}, due time.Duration) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
			if d := refusalGap - now.Sub(p.start); d > 0 {
				return false, nil, d
			}
		default:
			return false, p.done, 0
		}
	}
	p.start, p.done = now, make(chan struct{})
	return true, nil, 0
}

// end marks the forced refresh that begin allowed as ended.
func (p *pacer) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
}
