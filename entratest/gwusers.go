package entratest

import (
	"crypto/sha256"
	"time"
)

// The cache's side of an identity: is its oid a Redis user there (an access policy assignment),
// and what time is it on the cache. The two commonest ways a valid token is refused.

// reasonNoUser is checkToken's reason for a valid token whose oid is not a Redis user.
const reasonNoUser = "no Redis user for the token's oid"

// replyNoUser is Redis's reply to AUTH for a user that does not exist, which is what Azure
// answers an identity without an access policy on the cache.
const replyNoUser = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"

// SetUsers makes oids the Redis users of the cache, replacing GatewayOptions.Users: a valid token
// of any other oid is refused with WRONGPASS. With no argument every identity is refused
// (AllowAllUsers accepts every one again). Connections already authenticated keep their
// authentication.
func (g *Gateway) SetUsers(oids ...string) {
	m := make(map[string]bool, len(oids))
	for _, o := range oids {
		m[o] = true
	}
	g.users.Store(&m)
}

// AllowAllUsers makes every oid a Redis user again (the default).
func (g *Gateway) AllowAllUsers() { g.users.Store(nil) }

func (g *Gateway) isUser(oid string) bool {
	m := g.users.Load()
	return m == nil || (*m)[oid]
}

// now is the gateway's clock: the machine's, shifted by GatewayOptions.ClockSkew.
func (g *Gateway) now() time.Time { return time.Now().Add(g.skew) }

// until is how long until t on the gateway's clock.
func (g *Gateway) until(t time.Time) time.Duration { return t.Sub(g.now()) }

// Revoke makes the gateway refuse token from now on (WRONGPASS), as the cache does with a revoked
// token, and drops every open client connection, as it does with the connections authenticated
// with it; it returns how many it dropped. Other tokens of the same identity are still accepted.
func (g *Gateway) Revoke(token string) int {
	g.revoked.Store(tokenKey(token), true)
	return g.DropConnections()
}

func (g *Gateway) isRevoked(token string) bool {
	_, ok := g.revoked.Load(tokenKey(token))
	return ok
}

// tokenKey keeps a digest, not the token, in the gateway's memory.
func tokenKey(token string) [32]byte { return sha256.Sum256([]byte(token)) }
