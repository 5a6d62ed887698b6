package hook

import "time"

// Idle connections at their token's expiry with no newer token (an identity provider outage):
// while no token exists the hook fails commands before go-redis takes a connection, so no
// request comes to retire them, and the server would close them at expiry under go-redis's feet.
// The guard closes them itself just before, as it retires busy ones; each stays retired, so its
// next request fails before anything is sent and the hook sends it on another connection. One
// still busy (a command admitted just before the token stopped being handed out, its reply not
// yet read) is tried again every few milliseconds until the expiry.

// closeDead closes the idle connections still on a token expiring at or before exp.
func (g *guard) closeDead(exp int64) {
	if busy := g.closeIdle(exp); busy == 0 {
		return // else tried again below until exp
	}
	g.spawn(func() {
		g.pollUntil(2*time.Millisecond, exp, func() bool { return g.closeIdle(exp) == 0 })
	})
}

// spawn runs f on a goroutine that Close waits for, unless the guard is closed already.
func (g *guard) spawn(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

// pollUntil calls done every tick until it reports true or the clock reaches until (unix ns). It
// reports false when the guard was closed first.
func (g *guard) pollUntil(every time.Duration, until int64, done func() bool) bool {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for time.Now().UnixNano() < until {
		select {
		case <-tick.C:
		case <-g.stop:
			return false
		}
		if done() {
			return true
		}
	}
	return true
}

// closeIdle closes the idle connections on a token expiring at or before exp and returns how many
// were busy.
func (g *guard) closeIdle(exp int64) (busy int) {
	for _, c := range g.snapshot() {
		if e := c.exp.Load(); e == 0 || e > exp {
			continue
		}
		ran, _ := c.hold(nil, func() bool {
			_ = c.retire(c.exp.Load()) // counted and reported
			_ = c.Conn.Close()
			return true
		})
		if !ran && c.state.Load() == stateManaged {
			busy++
		}
	}
	return busy
}
