package hook

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/entraredis/entraredis/retry"
)

// EventKind says what the hook did.
type EventKind int

// The kinds of Event.
const (
	EventRetry        EventKind = iota + 1 // a command is sent again
	EventGaveUp                            // retries are spent, or the cache refuses the token (Err matches ErrTokenRefused; once per token): the error goes to the caller
	EventConnRetired                       // the guard retired a connection before its token expired
	EventPubSubReauth                      // a pub/sub connection moved to a new token: in place (RESP3), or to a new connection (RESP2)
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
	Dials              uint64 // connections made through the hook
	Reauths            uint64 // connections renewed in place with a newer token
	ReauthFailures     uint64 // renewals the server refused (the connection kept its token)
	Retries            uint64 // commands and pipelines sent again
	AuthRetries        uint64 // of which after an authentication error
	GaveUp             uint64 // commands that failed after their retries
	Refused            uint64 // commands failed at once (not sent) because the cache refused the current token
	ConnsRetired       uint64 // connections the guard retired before their token expired
	PubSubReauths      uint64 // pub/sub connections re-authenticated in place
	PubSubClosed       uint64 // pub/sub connections closed so that go-redis reconnects them
	PubSubMoved        uint64 // RESP2 pub/sub connections moved to a new connection, unseen by go-redis
	PubSubMoveFailures uint64 // pub/sub renewals that failed: a RESP2 move not dialled, a RESP3 in-place AUTH not written or not answered in time
	IdleReauths        uint64 // of Reauths, idle connections renewed by the guard in the background
	KeepAlives         uint64 // PINGs sent on idle connections
	BlockingSplits     uint64 // blocking commands sent again as a further, shorter block
	Rechecks           uint64 // AUTHs that re-checked a blocked token (see ErrTokenRefused)
	Blocked            bool   // the cache refuses the provider's current token now: commands fail at once (shared by the provider's hooks)
}

func (h *Hook) emit(e Event, level slog.Level, msg string, attrs ...slog.Attr) {
	h.logf(level, msg, attrs...)
	if h.onEvent != nil {
		h.onEvent(e)
	}
}

// logf logs msg and its attributes at level when Options.Logger is set (a message, not a format).
func (h *Hook) logf(level slog.Level, msg string, attrs ...slog.Attr) {
	if h.log != nil {
		h.log.LogAttrs(context.Background(), level, msg, attrs...)
	}
}
