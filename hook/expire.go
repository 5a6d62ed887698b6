package hook

// Idle connections at their token's expiry with no newer token (an identity provider outage):
// while no token exists the hook fails commands before go-redis takes a connection, so no
// request comes to retire them, and the server would close them at expiry under go-redis's feet.
// The guard closes them itself just before, as it retires busy ones; each stays retired, so its
// next request fails before anything is sent and the hook sends it on another connection.

// closeDead closes the idle connections still on a token expiring at or before exp.
func (g *guard) closeDead(exp int64) {
	for _, c := range g.snapshot() {
		if e := c.exp.Load(); e == 0 || e > exp {
			continue
		}
		c.hold(nil, func() bool {
			_ = c.retire(c.exp.Load()) // counted and reported
			_ = c.Conn.Close()
			return true
		})
	}
}
