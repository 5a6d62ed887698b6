package provider

import (
	"context"

	"github.com/redis/go-redis/v9/auth"
)

// SubscribeWithContext is Subscribe with the caller's context: go-redis v9.24 and later call it
// (auth.ContextStreamingCredentialsProvider) with the context of the connection's handshake, so
// that on a cold cache the first token fetch waits no longer than the command that dials does,
// rather than Options.FetchTimeout. ctx bounds only this call's wait: the credential call goes on
// for the other callers and the background refresh, and an established subscription outlives ctx.
// go-redis before v9.24 calls Subscribe, which is SubscribeWithContext without a deadline of the
// caller's. (The interface is not named here: the floor go-redis has no such type.)
func (p *Provider) SubscribeWithContext(ctx context.Context, l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	return p.subscribe(ctx, l)
}

// subscribe adds l, then returns the valid token or waits for one, up to ctx or FetchTimeout.
func (p *Provider) subscribe(ctx context.Context, l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	if l == nil {
		return nil, nil, errNilListener
	}
	if !isComparable(l) {
		// A listener is a map key, and the contract asks for one subscription per listener:
		// a value that cannot be compared (a struct holding a slice...) cannot be one.
		return nil, nil, errListenerNotComparable
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nil, ErrClosed
	}
	p.subs.add(l)
	p.mu.Unlock()
	unsubscribe := func() error {
		p.mu.Lock()
		p.subs.remove(l)
		p.mu.Unlock()
		return nil
	}
	// Subscribed before reading the token: a refresh in between reaches l, never slips past it.
	c := p.valid.Load()
	if c == nil {
		ctx, cancel := context.WithTimeout(ctx, p.opts.FetchTimeout)
		defer cancel()
		var err error
		if c, err = p.fetch(ctx, false); err != nil {
			_ = unsubscribe()
			return nil, nil, err
		}
	}
	return c, unsubscribe, nil
}
