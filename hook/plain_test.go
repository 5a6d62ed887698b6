package hook

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// The process hook's fast path takes a command that plain says is neither of the handshake nor
// blocking: every command handshake or blockingOf knows must fail plain, in any letter case, or a
// BLPOP 0 would not be split (or a handshake command retried into itself).
func TestPlainKnowsTheSpecialCommands(t *testing.T) {
	ctx := context.Background()
	special := [][]any{
		{"hello", 3}, {"auth", "u", "p"}, {"client", "setname", "n"}, {"select", 1}, {"readonly"},
		{"blpop", "k", 0}, {"brpop", "k", 0}, {"bzpopmin", "k", 0}, {"bzpopmax", "k", 0},
		{"blmove", "a", "b", "left", "right", 0}, {"brpoplpush", "a", "b", 0},
		{"blmpop", 0, 1, "k", "left"}, {"bzmpop", 0, 1, "k", "min"},
		{"wait", 1, 0}, {"waitaof", 1, 1, 0},
		{"xread", "block", 0, "streams", "s", "$"}, {"xreadgroup", "group", "g", "c", "block", 0, "streams", "s", ">"},
	}
	for _, args := range special {
		name := args[0].(string)
		_, blk := blockingOf(name, args)
		assert.True(t, handshake(name) || blk, "%s: one of handshake's or blockingOf's", name)
		for _, n := range []string{name, strings.ToUpper(name), strings.ToUpper(name[:1]) + name[1:]} {
			assert.False(t, plain(redis.NewCmd(ctx, append([]any{n}, args[1:]...)...)), n)
		}
	}
	for _, n := range []string{"get", "GET", "set", "incr", "INCR", "hset", "xadd", "xrange", "subscribe", "evalsha", "ping", "lpush", "blpopx", "waiter"} {
		assert.True(t, plain(redis.NewCmd(ctx, n, "k")), n)
	}
	assert.False(t, plain(redis.NewCmd(ctx)), "no arguments")
	assert.False(t, plain(redis.NewCmd(ctx, []byte("get"), "k")), "a name that is not a string")
	assert.False(t, plain(redis.NewCmd(ctx, "", "k")), "an empty name")
}
