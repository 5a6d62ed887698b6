package main

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// authWatch is a redis.Hook that reports the authentications go-redis sends: "hello" (HELLO with
// AUTH, a new connection) and "auth" (AUTH alone: go-redis re-authenticating an open connection
// with the provider's new token, or its fallback when HELLO is refused). go-redis sends both
// through the client's hooks. It never looks at the arguments beyond the AUTH keyword: they hold
// the token.
type authWatch struct {
	onAuth func(cmd string, err error)
}

var _ redis.Hook = (*authWatch)(nil)

func (a *authWatch) DialHook(next redis.DialHook) redis.DialHook { return next }

func (a *authWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		switch cmd.Name() {
		case "auth":
			a.onAuth("auth", err)
		case "hello":
			if helloHasAuth(cmd.Args()) {
				a.onAuth("hello", err)
			}
		}
		return err
	}
}

func (a *authWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// helloHasAuth reports whether HELLO's arguments (HELLO protover [AUTH user pass] [SETNAME n])
// carry AUTH.
func helloHasAuth(args []any) bool {
	for i, a := range args {
		if s, ok := a.(string); ok && i > 0 && strings.EqualFold(s, "auth") {
			return true
		}
	}
	return false
}
