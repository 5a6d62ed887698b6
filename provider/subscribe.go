package provider

import (
	"context"
	"errors"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9/auth"
)

// credentials is the auth.Credentials the provider hands to go-redis: the username and token of one
// cached token. It is immutable once published.
type credentials struct {
	username, password string
	expiresOn          time.Time
	refreshAt          time.Time
	gen                uint64
}

// BasicAuth returns the username (the identity's object ID) and password (the token).
func (c *credentials) BasicAuth() (username, password string) { return c.username, c.password }

// RawCredentials returns "username:token", as auth.Credentials asks; keep it out of logs.
func (c *credentials) RawCredentials() string { return c.username + ":" + c.password }

// Generation returns the token's sequence number: it increases with every token the provider caches.
func (c *credentials) Generation() uint64 { return c.gen }

// String hides the token, so that a %v of the credentials never leaks it.
func (c *credentials) String() string {
	return "provider credentials{" + c.username + ", expires " + c.expiresOn.String() + "}"
}

var _ auth.StreamingCredentialsProvider = (*Provider)(nil)

// Subscribe returns the current credentials for a new connection and tells l of every new token
// (OnNext) until the returned function is called; OnError only once no valid token remains (go-redis
// closes the connection then). Subscribing the same listener again is a no-op; any of the
// unsubscribe functions ends the subscription and may be called any number of times. go-redis
// subscribes one listener per connection and unsubscribes it when the connection closes. It passes
// no context: on a cold cache the fetch is bounded by Options.FetchTimeout.
func (p *Provider) Subscribe(l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	return p.subscribe(context.Background(), l)
}

// isComparable reports whether l can be a map key.
func isComparable(l auth.CredentialsListener) bool { return reflect.TypeOf(l).Comparable() }

var (
	errNilListener           = errors.New("provider: Subscribe needs a non-nil listener")
	errListenerNotComparable = errors.New("provider: Subscribe needs a comparable listener: pass a pointer")
)

// subscribers is the provider's listener set, guarded by Provider.mu.
type subscribers struct {
	m map[auth.CredentialsListener]struct{}
}

func (ss *subscribers) add(l auth.CredentialsListener) {
	if ss.m == nil {
		ss.m = make(map[auth.CredentialsListener]struct{})
	}
	ss.m[l] = struct{}{}
}

func (ss *subscribers) remove(l auth.CredentialsListener) { delete(ss.m, l) }

// snapshot returns the listeners, to be called outside Provider.mu (a listener may call back).
func (ss *subscribers) snapshot() []auth.CredentialsListener {
	ls := make([]auth.CredentialsListener, 0, len(ss.m))
	for l := range ss.m {
		ls = append(ls, l)
	}
	return ls
}
