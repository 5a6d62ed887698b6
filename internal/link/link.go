// Package link lets the library's packages share what they must without exporting it: set by the
// package that owns it, in an init function, and read by the one that needs it.
package link

import (
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// ProviderLogger returns a *provider.Provider's Options.Logger, so that a hook made from it logs
// to the same place unless told otherwise: one logger option for the whole library.
var ProviderLogger func(p any) *slog.Logger

// HookForClient returns a *hook.Hook as installed on a client whose Options.DialTimeout is
// dialTimeout: a command with no deadline waits for a token at most that long. entraredis's
// constructors use it.
var HookForClient func(h any, dialTimeout time.Duration) redis.Hook

// DiagnoseRefusal describes the cache's refusal (reply) of token for username as the hook's error
// does: a summary and the likely fixes, never the token. The CLI's check prints it.
var DiagnoseRefusal func(reply error, username, token string) (summary string, fixes []string)
