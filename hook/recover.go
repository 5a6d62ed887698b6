package hook

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/provider"
)

// recover runs the retry rules on err, the failure of the first attempt; again sends the command
// once more and says whether it did (a pipeline may decline).
//
// The rule: a command is sent again only when it certainly did not run, at most MaxRetries times
// after an authentication error or a failure to connect, and at most once per connection that was
// open after a retired connection (go-redis drops each one the guard retires, so that ends).
func (h *Hook) recover(ctx context.Context, name string, err error, again func(ctx context.Context, prev error) (error, bool)) error {
	tries, swaps, maxSwaps := 0, 0, h.g.live()+2
	var resent uint64 // generation+1 of the token this command was sent again on after a refusal
	for {
		k := classify(err)
		switch {
		case !k.notRun():
			if k == kindConn {
				h.ensureToken(ctx, false) // so that go-redis's reconnection authenticates
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
				if re := h.onRefused(ctx, name, err, &resent); re != nil {
					return re // not sent again: the same token would be refused
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
			if sent && resent != 0 && (err == nil || err == redis.Nil) {
				h.resendAnswered(resent - 1)
			}
			return err
		}
	}
}

// prepare makes the next attempt worth making: a fresh token after the server rejected one (and
// the connections on older tokens renewed or retired), or a valid token before reconnecting. It
// reports false when no valid token could be had for a reconnection.
func (h *Hook) prepare(ctx context.Context, name string, k kind, tries int) bool {
	if k != kindAuth {
		return h.ensureToken(ctx, true)
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
//
// With none valid and await set (the command is about to be sent again), it waits for the
// provider's next paced attempt when that is due in time, as admit does: the token may have
// expired between admit and go-redis's dial. A command that failed for good does not wait.
func (h *Hook) ensureToken(ctx context.Context, await bool) bool {
	info, ok := h.src.Token()
	if ok {
		// The guard's margin, shrunk for short-lived tokens as the guard does (half the time
		// between the refresh point and the expiry stands in for an eighth of the life).
		m := min(h.margin, info.ExpiresOn.Sub(info.RefreshAt)/2)
		if time.Until(info.ExpiresOn) > m {
			return true
		}
	} else if await && h.p != nil {
		if _, has := ctx.Deadline(); !has {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, h.wait)
			defer cancel()
		}
		if err := h.awaitToken(ctx); err != nil {
			h.logf(slog.LevelWarn, "entraredis: no token before reconnecting", slog.Any("error", err))
			return false
		}
		return true
	}
	if err := h.src.Refresh(ctx); err != nil {
		h.logf(slog.LevelWarn, "entraredis: token refresh before reconnecting failed", slog.Any("error", err))
		return false
	}
	return true
}
