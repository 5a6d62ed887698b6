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
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for time.Now().UnixNano() < exp {
			select {
			case <-tick.C:
			case <-g.stop:
				return
			}
			if g.closeIdle(exp) == 0 {
				return
			}
		}
	}()
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
