package bench

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider"
)

// gwRig is what the connection scenarios (idle pool, blocking consumers) run against: a real
// redis-server behind entratest's Entra gateway serving TLS, which closes a connection when the
// token that authenticated it expires, as Azure does, and an issuer of short tokens.
type gwRig struct {
	iss *entratest.Issuer
	gw  *entratest.Gateway
	tls *tls.Config
}

func newGatewayRig(tb testing.TB, life time.Duration) *gwRig {
	tb.Helper()
	ca, err := entratest.NewTestCA()
	if err != nil {
		tb.Fatal(err)
	}
	srvTLS, err := ca.ServerTLSConfig()
	if err != nil {
		tb.Fatal(err)
	}
	r := &gwRig{iss: newIssuer(tb, life), tls: ca.ClientTLSConfig()}
	r.gw = entratest.StartGateway(tb, r.iss, entratest.StartRedis(tb, nil).Addr(), &entratest.GatewayOptions{TLS: srvTLS})
	return r
}

// options returns go-redis options for the gateway with a TLS dialer that counts the raw
// connections it makes in dials: every connection either client opens, whoever asks for it.
func (r *gwRig) options(poolSize int, dials *atomic.Int64) *redis.Options {
	d := &tls.Dialer{Config: r.tls}
	return &redis.Options{
		Addr: r.gw.Addr(), PoolSize: poolSize,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
}

// waitRotations waits until the provider has cached n tokens after generation from and the last
// token before those n has expired at the gateway (its exp claim, whole seconds, is at most its
// ExpiresOn; 200 ms of slack): every connection authenticated at generation from has lived
// through n expiries. It reports whether that happened within d.
func waitRotations(p *provider.Provider, from uint64, n int, d time.Duration) bool {
	var lastExp time.Time // of the newest token seen before generation from+n
	return waitFor(d, 10*time.Millisecond, func() bool {
		info, ok := p.Token()
		if !ok {
			return false
		}
		if info.Generation < from+uint64(n) && info.ExpiresOn.After(lastExp) {
			lastExp = info.ExpiresOn
		}
		return info.Generation >= from+uint64(n) && !lastExp.IsZero() && time.Now().After(lastExp.Add(200*time.Millisecond))
	})
}
