// Package rueidisentra gives rueidis (github.com/redis/rueidis) Microsoft Entra ID authentication
// for Azure Cache for Redis and Azure Managed Redis, with the tokens of an entraredis provider: each
// connection authenticates with the cached token (username: the identity's object ID) and sends the
// next token on the live connection before Azure would close it at expiry, through rueidis's own
// AuthCredentials.RefreshAfter (rueidis v1.0.80 or later).
//
// What rueidis's mechanism covers, and what it does not, is measured in this package's tests and
// listed in the entraredis repository's docs/rueidis-valkey.md: request/reply connections, idle and
// dedicated ones, RESP3 pub/sub and client-side caching are renewed in place. A blocking command
// would hold its connection past the expiry (the AUTH runs only after it): NewClient's client
// sends it as shorter blocks; a RESP2 subscriber refuses AUTH: NewClient's client moves it to a
// new connection before expiry. Not covered: DisableAutoPipelining (a pooled connection's refresh
// timer pauses while it is checked out).
package rueidisentra

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/internal/renewal"
	"github.com/entraredis/entraredis/provider"
)

// ErrCredentialsSet is returned by NewClient when the options already carry credentials
// (Password or AuthCredentialsFn): the provider's token would replace them.
var ErrCredentialsSet = errors.New("rueidisentra: ClientOption already has Password or AuthCredentialsFn: NewClient sets the credentials from the provider")

// ErrNoAutoPipelining is returned by NewClient for options with DisableAutoPipelining. The
// client's own re-AUTH does not hold on its connection pool: rueidis v1.0.80's refresh timer can fire
// on a pooled connection without a queue and panic, ending the process (pipe.go, refreshAuth), and a
// connection checked out again and again may never run its refresh, so Azure closes it at expiry
// under a command. Keep auto-pipelining (the default); AuthCredentialsFn alone does not refuse it.
var ErrNoAutoPipelining = errors.New("rueidisentra: DisableAutoPipelining is not supported: rueidis's token refresh on pooled connections can panic and miss expiries; keep auto-pipelining")

var errNilProvider = errors.New("rueidisentra: nil provider: pass provider.New(cred, nil)")

// AuthCredentialsFn authenticates each connection with p's token (username: its oid) and sets
// RefreshAfter so that the client sends the next token on the live connection before Azure
// would close it.
//
// RefreshAfter falls after the provider's refresh and at least 3 minutes before the token expires
// (an eighth of the life for short test tokens, as the entraredis hook), at a random point of that
// window per connection, so that a pool's connections do not AUTH at once.
// While the provider's next token is late it returns the current one, valid still, and asks again
// soon: rueidis closes a connection whose AuthCredentialsFn fails, so it fails only when no valid
// token is left. rueidis passes no context: with no valid token a call waits at most
// rueidis.DefaultDialTimeout (5 s; NewClient uses the client's Dialer.Timeout), and the provider's
// pacing decides when the credential is called: during an identity-provider
// outage a dial waits for the provider's next attempt (about half a second apart) and fails with its
// error, so rueidis's redials follow that pace rather than loop.
func AuthCredentialsFn(p *provider.Provider) func(rueidis.AuthCredentialsContext) (rueidis.AuthCredentials, error) {
	return newAuth(p, rueidis.DefaultDialTimeout).credentials
}

// NewClient sets AuthCredentialsFn on opt (and TLS for an Azure host name, as the root
// package does for go-redis) and returns the client.
//
// The client's Do sends a blocking command (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN,
// BZPOPMAX, BZMPOP, XREAD and XREADGROUP with BLOCK) whose block could outlast its connection's
// token as shorter blocks (half the 3-minute renewal lead at most), since rueidis's refresh AUTH
// runs only after the block; the caller sees one command. DoMulti and Dedicated clients send
// blocking commands as given. With opt.AlwaysRESP2, its Receive runs the subscription on a
// dedicated connection and moves it to a new one (on the newer token) before the token expires,
// since a subscribed RESP2 connection refuses AUTH: nothing is lost, a message published during
// the move can arrive twice.
//
// Options with DisableAutoPipelining are refused (ErrNoAutoPipelining).
//
// TLS: when opt.TLSConfig is nil and every InitAddress is an Azure host name
// (entraredis.IsAzureHost), it is set to TLS 1.2 or later, as Azure accepts only TLS.
func NewClient(p *provider.Provider, opt rueidis.ClientOption) (rueidis.Client, error) {
	if p == nil {
		return nil, errNilProvider
	}
	if opt.Password != "" || opt.AuthCredentialsFn != nil {
		return nil, ErrCredentialsSet
	}
	if opt.DisableAutoPipelining {
		return nil, ErrNoAutoPipelining
	}
	timeout := opt.Dialer.Timeout
	if timeout <= 0 {
		timeout = rueidis.DefaultDialTimeout
	}
	a := newAuth(p, timeout)
	opt.AuthCredentialsFn = a.credentials
	if opt.TLSConfig == nil {
		opt.TLSConfig = azureTLS(opt.InitAddress)
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, err
	}
	return &client{Client: c, a: a, resp2: opt.AlwaysRESP2}, nil
}

// azureTLS returns TLS 1.2+ when every address is an Azure host (with the server name when they
// share one), nil otherwise.
func azureTLS(addrs []string) *tls.Config {
	name := ""
	for i, a := range addrs {
		if !entraredis.IsAzureHost(a) {
			return nil
		}
		h, _, err := net.SplitHostPort(a)
		if err != nil {
			h = a
		}
		if i == 0 {
			name = h
		} else if !strings.EqualFold(h, name) {
			name = ""
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
}

// auth is one client's AuthCredentialsFn: the provider's token with its schedule, cached per token.
type auth struct {
	p       *provider.Provider
	timeout time.Duration
	cur     atomic.Pointer[renewal.Renewal]
}

func newAuth(p *provider.Provider, timeout time.Duration) *auth {
	return &auth{p: p, timeout: timeout}
}

func (a *auth) credentials(rueidis.AuthCredentialsContext) (rueidis.AuthCredentials, error) {
	if a.p == nil {
		return rueidis.AuthCredentials{}, errNilProvider
	}
	r, err := a.renewal()
	if err != nil {
		return rueidis.AuthCredentials{}, err
	}
	return rueidis.AuthCredentials{Username: r.Username, Password: r.Password, RefreshAfter: r.Next(time.Now())}, nil
}

// renewal returns the provider's token and schedule: the cached one while it is the provider's
// (one atomic load each), else read again, fetching when none is valid (renewal.Await).
func (a *auth) renewal() (*renewal.Renewal, error) {
	info, ok := a.p.Token()
	if r := a.cur.Load(); ok && r != nil && r.Generation == info.Generation {
		return r, nil
	}
	var r renewal.Renewal
	if ok {
		r, ok = renewal.Of(a.p)
	}
	if !ok {
		// No valid token: fetch, within the dial timeout, waiting for the provider's next paced
		// attempt after a failure, so that the client's redials follow the credential's pace.
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		var err error
		if r, err = renewal.Await(ctx, a.p); err != nil {
			return nil, fmt.Errorf("rueidisentra: %w", err)
		}
	}
	a.cur.Store(&r)
	return &r, nil
}
