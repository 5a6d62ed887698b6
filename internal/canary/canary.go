// Package canary proves, in a test, that entratest's gateway closes connections when their token
// expires while the test runs: "no connection closed at expiry" proves nothing against a gateway
// that never closes one.
package canary

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
)

// Canary is a connection a test leaves idle on a token of its own, to prove that the gateway
// closes connections when their token expires while the test runs: "no connection closed at
// expiry" proves nothing against a gateway that never closes one.
type Canary struct {
	expires time.Time
	closed  chan time.Time
}

// Start authenticates a connection to the gateway at addr (TLS when cfg is set) with a token
// from iss that lives life, and watches for the gateway to close it.
func Start(t *testing.T, iss *entratest.Issuer, addr string, cfg *tls.Config, life time.Duration) *Canary {
	t.Helper()
	tok, exp, err := iss.Mint(life)
	require.NoError(t, err)
	var conn net.Conn
	if cfg != nil {
		conn, err = tls.Dial("tcp", addr, cfg)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	user := iss.ObjectID()
	_, err = fmt.Fprintf(conn, "*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(user), user, len(tok), tok)
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", line, "the canary's AUTH")
	c := &Canary{expires: exp, closed: make(chan time.Time, 1)}
	go func() {
		_, _ = io.Copy(io.Discard, r) // until the gateway closes the connection
		c.closed <- time.Now()
	}()
	return c
}

// Wait fails the test unless the gateway closed the canary when its token expired (within 3 s),
// and returns how long after the expiry it did.
func (c *Canary) Wait(t *testing.T) time.Duration {
	t.Helper()
	var at time.Time
	select {
	case at = <-c.closed:
	case <-time.After(time.Until(c.expires) + 3*time.Second):
		select {
		case at = <-c.closed: // both were ready: the close came first
		default:
			t.Fatalf("the gateway did not close a connection whose token expired at %s: the test's claims about closes at expiry prove nothing",
				c.expires.Format(time.TimeOnly))
		}
	}
	late := at.Sub(c.expires)
	assert.GreaterOrEqual(t, late, -10*time.Millisecond, "the gateway closed the canary before its token expired")
	assert.Less(t, late, 3*time.Second, "the gateway closed the canary long after its token expired")
	return late
}
