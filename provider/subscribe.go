package provider

import (
	"context"
	"errors"
	"reflect"
	"time"
	"unsafe"
	"weak"

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

// ExpiresOn returns when the token expires.
func (c *credentials) ExpiresOn() time.Time { return c.expiresOn }

// Generation returns the token's sequence number: it increases with every token the provider caches.
func (c *credentials) Generation() uint64 { return c.gen }

// String hides the token, so that a %v of credentials never leaks it.
func (c *credentials) String() string {
	return "provider.Credentials{" + c.username + ", expires " + c.expiresOn.String() + "}"
}

var _ auth.StreamingCredentialsProvider = (*Provider)(nil)

// Subscribe returns the current credentials for a new connection and tells l of every new token
// (OnNext) until the returned function is called. Subscribing the same listener again is a no-op;
// the unsubscribe function may be called any number of times. Listeners are held weakly where
// they are pointers, so a connection that go-redis drops without unsubscribing does not pin its
// listener here. go-redis passes no context: on a cold cache the fetch is bounded by
// Options.FetchTimeout.
func (p *Provider) Subscribe(l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	if l == nil {
		return nil, nil, errNilListener
	}
	key, s := subscriberOf(l)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nil, ErrClosed
	}
	p.subs.add(key, s)
	p.mu.Unlock()
	unsubscribe := func() error {
		p.mu.Lock()
		p.subs.remove(key)
		p.mu.Unlock()
		return nil
	}
	// Subscribed before reading the token: a refresh in between reaches l, never slips past it.
	c := p.valid.Load()
	if c == nil {
		ctx, cancel := context.WithTimeout(p.ctx, p.opts.FetchTimeout)
		defer cancel()
		var err error
		if c, err = p.fetch(ctx, false); err != nil {
			unsubscribe()
			return nil, nil, err
		}
	}
	return c, unsubscribe, nil
}

var errNilListener = errors.New("provider: Subscribe needs a non-nil listener")

// subscriber holds a listener strongly, or weakly when it is a pointer (go-redis's always are).
type subscriber struct {
	strong auth.CredentialsListener
	weak   weak.Pointer[byte]
	typ    reflect.Type
}

func subscriberOf(l auth.CredentialsListener) (key any, s subscriber) {
	v := reflect.ValueOf(l)
	if v.Kind() == reflect.Pointer && !v.IsNil() && v.Type().Elem().Size() > 0 {
		w := weak.Make((*byte)(v.UnsafePointer()))
		return w, subscriber{weak: w, typ: v.Type()}
	}
	if !v.Comparable() {
		return new(byte), subscriber{strong: l} // cannot be deduplicated, but must not panic as a map key
	}
	return l, subscriber{strong: l}
}

func (s subscriber) listener() auth.CredentialsListener {
	if s.strong != nil {
		return s.strong
	}
	ptr := s.weak.Value()
	if ptr == nil {
		return nil
	}
	return reflect.NewAt(s.typ.Elem(), unsafe.Pointer(ptr)).Interface().(auth.CredentialsListener)
}

// subscribers is the provider's listener set, guarded by Provider.mu. Dead weak entries are dropped
// on every snapshot (each refresh) and when the set doubles, so it stays bounded by the live ones.
type subscribers struct {
	m       map[any]subscriber
	pruneAt int
}

func (ss *subscribers) add(key any, s subscriber) {
	if ss.m == nil {
		ss.m = make(map[any]subscriber)
	}
	if _, ok := ss.m[key]; ok {
		return
	}
	ss.m[key] = s
	if len(ss.m) >= max(ss.pruneAt, 64) {
		ss.snapshot()
	}
}

func (ss *subscribers) remove(key any) { delete(ss.m, key) }

func (ss *subscribers) snapshot() []auth.CredentialsListener {
	ls := make([]auth.CredentialsListener, 0, len(ss.m))
	for k, s := range ss.m {
		if l := s.listener(); l != nil {
			ls = append(ls, l)
		} else {
			delete(ss.m, k)
		}
	}
	ss.pruneAt = 2 * len(ss.m)
	return ls
}
