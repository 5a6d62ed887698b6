package hook

import (
	"errors"
	"net"

	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/retry"
)

// errNotSentAgain is set on a command before the hook sends it again; still there after next, it
// means next did not send it (go-redis's full-duplex engine, whose next only reports the result of
// the write that came before the hook). Never returned to a caller.
var errNotSentAgain = errors.New("entraredis: the command was not sent again")

// ErrConnRetired is the error a guarded connection returns from Write, before sending anything,
// when the token it authenticated with is about to expire (or has) and it cannot be renewed in
// place. go-redis then drops the connection; the hook sends the command again on another one. It
// reaches the caller only when the context ends first.
var ErrConnRetired = errors.New("entraredis: connection retired before its token expired (nothing was sent on it); send the command again")

// errBadReply: the server's answer to a request the guard sent could not be read.
var errBadReply = errors.New("entraredis: unreadable reply to the guard's own request")

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

// kind is what an error says about the command that got it: the one classification the hook's
// retry rules and its events use.
type kind int

const (
	kindOther   kind = iota // ran, or fate unknown: never sent again by the hook
	kindConn                // the connection failed after the command was written: fate unknown
	kindAuth                // rejected by the server for its token: it did not run
	kindUnsent              // failed to connect, or no token for the handshake: it was not sent
	kindRetired             // the guard failed the write: it was not sent
)

// classify walks err's tree once (retry.Classify, plus the hook's and provider's own errors).
func classify(err error) kind {
	switch {
	case errors.Is(err, ErrConnRetired):
		return kindRetired
	case errors.Is(err, provider.ErrTokenUnavailable):
		return kindUnsent // the handshake found no token: nothing was written
	}
	switch retry.Classify(err) {
	case retry.Auth:
		return kindAuth
	case retry.Connection:
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return kindUnsent
		}
		return kindConn
	}
	return kindOther
}

// class is the retry.Class reported in events.
func (k kind) class() retry.Class {
	switch k {
	case kindAuth:
		return retry.Auth
	case kindOther:
		return retry.Other
	}
	return retry.Connection
}

// notRun reports whether a command with an error of this kind certainly did not run.
func (k kind) notRun() bool { return k == kindAuth || k == kindUnsent || k == kindRetired }
