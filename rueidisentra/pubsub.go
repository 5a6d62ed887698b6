package rueidisentra

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/entraredis/entraredis/internal/renewal"
)

// RESP2 subscribers. A subscribed RESP2 connection refuses AUTH, so rueidis's refresh cannot
// extend it and the server closes it when its token expires (Receive returns EOF, and what is
// published later is lost). With ClientOption.AlwaysRESP2, NewClient's client runs Receive on a
// dedicated connection and moves it, before that expiry, to a new one (which authenticates with
// the provider's newer token): it subscribes the new connection to the same channels, waits for
// the confirmations, then ends the old one's subscriptions (UNSUBSCRIBE: its confirmations come
// after every message the server had written to the old connection, so none in flight there is
// dropped) and closes it. Nothing is lost; a message published during the move can arrive twice
// (from both connections).

// receiveMoving is Receive for a RESP2 client.
func (c *client) receiveMoving(ctx context.Context, subscribe rueidis.Completed, fn func(rueidis.PubSubMessage)) error {
	args := append([]string(nil), subscribe.Commands()...)
	var mu sync.Mutex // the old and the new subscription hand messages to fn one at a time
	deliver := func(m rueidis.PubSubMessage) {
		mu.Lock()
		defer mu.Unlock()
		fn(m)
	}
	cur, err := c.subscribe(ctx, args, deliver)
	if err != nil {
		return err
	}
	defer func() { cur.stop() }()
	for {
		t := time.NewTimer(time.Until(cur.next))
		select {
		case err := <-cur.done:
			t.Stop()
			return err
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if r, err := c.a.renewal(); err != nil || r.Generation == cur.gen {
			// No newer token yet: ask again soon, the old connection still valid.
			cur.next = moveAt(cur.renewal, time.Now())
			continue
		}
		next, err := c.subscribe(ctx, args, deliver)
		if err != nil {
			cur.next = moveAt(cur.renewal, time.Now())
			continue
		}
		cur.handOver()
		cur = next
	}
}

// clusterGrace is how long a cluster's old subscriber stays subscribed after the new one is
// confirmed. Each may be on any node (SUBSCRIBE has no slot), and a message published on a third
// node reaches each over the cluster bus, at its own pace: one that reached the new node before
// its SUBSCRIBE must still reach the old one before its UNSUBSCRIBE (CI under -race once lost a
// burst of 10 without it). A message arriving on both meanwhile is delivered twice.
const clusterGrace = 500 * time.Millisecond

// moveAt is when a subscriber on r's token looks for the next token to move to: from the
// provider's refresh on, every 64th of the life (20 ms to 1 s), and it moves at once when there
// is one. Not spread over the renewal window as AUTHs are (renewal.Next): there is one subscriber
// per Receive, not a pool of connections, and a move takes a dial and a round trip of
// confirmations, so it gets all the time left (a move at Next's time had 0.5 s of a 3 s token,
// which a starved -race run on 2 cores overran: 3 closes at expiry).
func moveAt(r *renewal.Renewal, now time.Time) time.Time {
	if now.Before(r.RefreshAt) {
		return r.RefreshAt
	}
	return now.Add(min(max(r.Life/64, 20*time.Millisecond), time.Second))
}

// subscription is one dedicated RESP2 subscriber connection.
type subscription struct {
	renewal *renewal.Renewal
	gen     uint64
	next    time.Time // when to move to a new connection
	done    chan error
	stop    func()
	// handOver ends the subscriptions once a new connection has them: it waits for the old one's
	// messages up to its UNSUBSCRIBE confirmations (at most 2 s, never past the token's expiry),
	// then stops it; on a cluster, clusterGrace first.
	handOver func()
}

// subscribe runs Receive on a new dedicated connection and returns once every channel is
// confirmed, or with the error that ended it first.
func (c *client) subscribe(ctx context.Context, args []string, fn func(rueidis.PubSubMessage)) (*subscription, error) {
	r, err := c.a.renewal() // the token the new connection authenticates with
	if err != nil {
		return nil, err
	}
	d, release := c.Client.Dedicate()
	sctx, cancel := context.WithCancel(ctx)
	want := int64(len(args) - 1)
	confirmed := make(chan struct{})
	var once sync.Once
	kind := strings.ToLower(args[0])
	sctx = rueidis.WithOnSubscriptionHook(sctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == kind && s.Count >= want {
			once.Do(func() { close(confirmed) })
		}
	})
	s := &subscription{renewal: r, gen: r.Generation, next: moveAt(r, time.Now()), done: make(chan error, 1)}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		s.done <- d.Receive(sctx, subscribeCmd(d.B(), args), fn)
	}()
	s.stop = func() {
		cancel()
		d.Close() // its subscriber connection too: the pool must not hand it out again
		<-ended
		release()
	}
	grace := time.Duration(0)
	if c.Client.Mode() == rueidis.ClientModeCluster && kind != "ssubscribe" {
		grace = clusterGrace
	}
	s.handOver = func() {
		hctx, cancel := context.WithTimeout(ctx, min(grace+2*time.Second, time.Until(r.ExpiresOn)))
		defer cancel()
		if grace > 0 {
			t := time.NewTimer(min(grace, time.Until(r.ExpiresOn)/2))
			select {
			case <-t.C:
			case <-hctx.Done():
			}
			t.Stop()
		}
		if d.Do(hctx, unsubscribeCmd(d.B(), args)).Error() == nil {
			select {
			case <-ended: // Receive returns once the confirmations are in, after the messages ahead of them
			case <-hctx.Done():
			}
		}
		s.stop()
	}
	select {
	case <-confirmed:
		return s, nil
	case err := <-s.done:
		s.done <- err
		s.stop()
		return nil, err
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// subscribeCmd builds the subscribe command again (Arbitrary refuses them).
func subscribeCmd(b rueidis.Builder, args []string) rueidis.Completed {
	switch strings.ToUpper(args[0]) {
	case "PSUBSCRIBE":
		return b.Psubscribe().Pattern(args[1:]...).Build()
	case "SSUBSCRIBE":
		return b.Ssubscribe().Channel(args[1:]...).Build()
	}
	return b.Subscribe().Channel(args[1:]...).Build()
}

// unsubscribeCmd builds the command that ends subscribeCmd's subscriptions.
func unsubscribeCmd(b rueidis.Builder, args []string) rueidis.Completed {
	switch strings.ToUpper(args[0]) {
	case "PSUBSCRIBE":
		return b.Punsubscribe().Pattern(args[1:]...).Build()
	case "SSUBSCRIBE":
		return b.Sunsubscribe().Channel(args[1:]...).Build()
	}
	return b.Unsubscribe().Channel(args[1:]...).Build()
}

// Receive moves a RESP2 subscriber to a new connection before its token expires (receiveMoving);
// over RESP3 the subscriber is renewed in place by rueidis.
func (c *client) Receive(ctx context.Context, subscribe rueidis.Completed, fn func(rueidis.PubSubMessage)) error {
	if !c.resp2 {
		return c.Client.Receive(ctx, subscribe, fn)
	}
	return c.receiveMoving(ctx, subscribe, fn)
}
