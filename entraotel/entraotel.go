// Package entraotel records OpenTelemetry metrics of an entraredis provider and hook: how long the
// cached token has left, refreshes and their failures by error class, how long the credential takes,
// and what the hook did to connections and commands. An SRE can then alert on "the token expires in
// less than 10 minutes and refreshing fails" without writing code.
//
// It depends only on the OpenTelemetry metric API: bring your own SDK and exporter (Prometheus,
// OTLP, ...). It instruments from the outside, so each part is optional:
//
//	m, err := entraotel.New(otel.GetMeterProvider(), &entraotel.Options{ServerAddress: host})
//	if err != nil { ... }
//	p, err := provider.New(m.Credential(cred), m.ProviderOptions(nil)) // credential call duration; refreshes, failures, expirations
//	if err != nil { ... }
//	defer p.Close()
//	h := hook.New(p, nil)
//	if err := m.Observe(p, h); err != nil { ... } // time to expiry, the hook's counters
//	defer m.Close()
//	rdb := entraredis.NewClient(h, opt) // the client with this hook installed
//
// The README's Observability section has the same as a complete, compiled function.
//
// go-redis's own redisotel (InstrumentTracing, InstrumentMetrics) works on the same client: it
// measures commands and the pool, entraotel the tokens and what the hook did.
//
// Instruments (names after OpenTelemetry's conventions; every one also carries Options'
// attributes, server.address when set):
//
//	entraredis.token.time_to_expiry        gauge      s             0 once the token expired; none before the first token
//	entraredis.token.refreshes             counter    {refresh}     a new token was cached
//	entraredis.token.refresh_failures      counter    {failure}     error.type: see ErrorType
//	entraredis.token.expirations           counter    {expiration}  the token expired before a new one arrived
//	entraredis.token.blocked               gauge                    1 while the cache refuses the current token (hook.ErrTokenRefused)
//	entraredis.token.rechecks              counter    {auth}        AUTHs re-checking a refused token
//	entraredis.credential.duration         histogram  s             error.type on failure
//	entraredis.connection.dials            counter    {connection}  connections made through the hook
//	entraredis.connection.reauths          counter    {connection}  renewed in place with a newer token
//	entraredis.connection.reauth_failures  counter    {connection}  renewals the server refused
//	entraredis.connection.retired          counter    {connection}  retired by the guard before their token expired
//	entraredis.connection.idle_reauths     counter    {connection}  of the renewals in place, those of idle connections
//	entraredis.connection.keepalives       counter    {ping}        PINGs on idle connections before Azure's idle timeout
//	entraredis.command.retries             counter    {retry}       error.type: auth, or connect (a failure to connect)
//	entraredis.command.give_ups            counter    {command}     commands failed after their retries
//	entraredis.command.blocking_splits     counter    {block}       further, shorter blocks of blocking commands
//	entraredis.command.refused             counter    {command}     failed at once, not sent: the cache refuses the current token
//	entraredis.pubsub.reauths              counter    {connection}  pub/sub connections renewed in place
//	entraredis.pubsub.moves                counter    {connection}  RESP2 subscribers moved to a new connection
//	entraredis.pubsub.move_failures        counter    {connection}  RESP2 moves whose new connection could not be dialled
//	entraredis.pubsub.reconnects           counter    {connection}  closed so that go-redis reconnects them (a failed renewal or move, RESP2 or RESP3)
package entraotel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// ScopeName is the instrumentation scope (the meter's name).
const ScopeName = "github.com/entraredis/entraredis/entraotel"

// Attribute keys, after OpenTelemetry's semantic conventions.
const (
	AttrServerAddress = attribute.Key("server.address")
	AttrServerPort    = attribute.Key("server.port")
	AttrErrorType     = attribute.Key("error.type")
)

// ErrNoMeterProvider is returned by New given a nil MeterProvider.
var ErrNoMeterProvider = errors.New("entraotel: nil MeterProvider: pass otel.GetMeterProvider() or your SDK's")

// Options configures Metrics. Zero fields mean defaults; a nil *Options means all defaults.
type Options struct {
	// ServerAddress is recorded as server.address on every instrument, e.g. the cache's host name.
	ServerAddress string
	// ServerPort is recorded as server.port when not zero.
	ServerPort int
	// Attributes are added to every instrument, e.g. to tell several clients apart.
	Attributes []attribute.KeyValue
}

// Metrics records the metrics of one provider and its hook. Its methods are safe for concurrent use.
type Metrics struct {
	base    []attribute.KeyValue
	baseSet attribute.Set
	meter   metric.Meter

	refreshes, refreshFailures, expirations metric.Int64Counter
	credDuration                            metric.Float64Histogram

	timeToExpiry                                              metric.Float64ObservableGauge
	dials, reauths, reauthFailures, retired, retries, giveUps metric.Int64ObservableCounter
	pubsubReauths, pubsubReconnects, pubsubMoves              metric.Int64ObservableCounter
	idleReauths, keepAlives, blockingSplits                   metric.Int64ObservableCounter
	refused, rechecks, pubsubMoveFailures                     metric.Int64ObservableCounter
	blocked                                                   metric.Int64ObservableGauge
	authRetries, connectRetries                               attribute.Set

	mu   sync.Mutex
	regs []metric.Registration
}

// New creates the instruments on mp's meter named ScopeName. Nothing is observed until Observe;
// nothing is counted until the credential, provider options or events are routed to it.
func New(mp metric.MeterProvider, opts *Options) (*Metrics, error) {
	if mp == nil {
		return nil, ErrNoMeterProvider
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	m := &Metrics{meter: mp.Meter(ScopeName)}
	if o.ServerAddress != "" {
		m.base = append(m.base, AttrServerAddress.String(o.ServerAddress))
	}
	if o.ServerPort != 0 {
		m.base = append(m.base, AttrServerPort.Int(o.ServerPort))
	}
	m.base = append(m.base, o.Attributes...)
	m.baseSet = attribute.NewSet(m.base...)
	m.authRetries = m.with(AttrErrorType.String("auth"))
	m.connectRetries = m.with(AttrErrorType.String("connect"))

	// Every instrument is created; the first error is reported, and the others are still usable
	// (the API hands back no-op instruments with the error).
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		keep(err)
		return c
	}
	observed := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		keep(err)
		return c
	}
	var err error
	m.timeToExpiry, err = m.meter.Float64ObservableGauge("entraredis.token.time_to_expiry", metric.WithUnit("s"),
		metric.WithDescription("Time left before the cached Entra ID token expires; 0 once it expired with no newer token."))
	keep(err)
	m.credDuration, err = m.meter.Float64Histogram("entraredis.credential.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of the credential's GetToken calls."),
		// An IMDS or Entra round trip takes tens of milliseconds; the SDK's own retries take seconds.
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	keep(err)
	m.refreshes = counter("entraredis.token.refreshes", "{refresh}", "New tokens cached by the provider.")
	m.refreshFailures = counter("entraredis.token.refresh_failures", "{failure}", "Failed token fetches; the current token is kept while valid.")
	m.expirations = counter("entraredis.token.expirations", "{expiration}", "Tokens that expired before a new one arrived.")
	m.dials = observed("entraredis.connection.dials", "{connection}", "Connections made through the hook.")
	m.reauths = observed("entraredis.connection.reauths", "{connection}", "Open connections renewed in place with a newer token.")
	m.reauthFailures = observed("entraredis.connection.reauth_failures", "{connection}", "Renewals in place the server refused.")
	m.retired = observed("entraredis.connection.retired", "{connection}", "Connections the guard retired before their token expired.")
	m.retries = observed("entraredis.command.retries", "{retry}", "Commands and pipelines the hook sent again.")
	m.giveUps = observed("entraredis.command.give_ups", "{command}", "Commands that failed after the hook's retries.")
	m.pubsubReauths = observed("entraredis.pubsub.reauths", "{connection}", "Pub/sub connections renewed in place.")
	m.pubsubReconnects = observed("entraredis.pubsub.reconnects", "{connection}", "Pub/sub connections closed so that go-redis reconnects them.")
	m.pubsubMoves = observed("entraredis.pubsub.moves", "{connection}", "RESP2 pub/sub connections moved to a new connection on a new token.")
	m.idleReauths = observed("entraredis.connection.idle_reauths", "{connection}", "Of the renewals in place, those of idle connections, in the background.")
	m.keepAlives = observed("entraredis.connection.keepalives", "{ping}", "PINGs the guard sent on idle connections.")
	m.blockingSplits = observed("entraredis.command.blocking_splits", "{block}", "Further, shorter blocks of blocking commands that would have outlasted a token.")
	m.refused = observed("entraredis.command.refused", "{command}", "Commands failed at once, not sent, because the cache refuses the provider's current token (hook.ErrTokenRefused).")
	m.rechecks = observed("entraredis.token.rechecks", "{auth}", "AUTHs that re-checked a token the cache refused; the first accepted ends the refusal.")
	m.pubsubMoveFailures = observed("entraredis.pubsub.move_failures", "{connection}", "RESP2 pub/sub moves whose new connection could not be dialled.")
	m.blocked, err = m.meter.Int64ObservableGauge("entraredis.token.blocked",
		metric.WithDescription("1 while the cache refuses the provider's current token and commands fail at once (hook.ErrTokenRefused), else 0."))
	keep(err)
	if len(errs) > 0 {
		return m, fmt.Errorf("entraotel: creating instruments: %w", errors.Join(errs...))
	}
	return m, nil
}

// with returns the base attributes plus extra.
func (m *Metrics) with(extra ...attribute.KeyValue) attribute.Set {
	kv := make([]attribute.KeyValue, 0, len(m.base)+len(extra))
	return attribute.NewSet(append(append(kv, m.base...), extra...)...)
}

// Observe registers the observable instruments for p (token time to expiry) and h (the hook's
// counters); either may be nil. Call it once per provider and hook; Close unregisters.
func (m *Metrics) Observe(p *provider.Provider, h *hook.Hook) error {
	var seen atomic.Bool // a token was cached once: from then on, none valid means 0 s left
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if p != nil {
			if info, ok := p.Token(); ok {
				seen.Store(true)
				o.ObserveFloat64(m.timeToExpiry, max(time.Until(info.ExpiresOn).Seconds(), 0), metric.WithAttributeSet(m.baseSet))
			} else if seen.Load() {
				o.ObserveFloat64(m.timeToExpiry, 0, metric.WithAttributeSet(m.baseSet))
			}
		}
		if h != nil {
			s := h.Stats()
			for _, c := range []struct {
				inst metric.Int64ObservableCounter
				n    uint64
			}{
				{m.dials, s.Dials}, {m.reauths, s.Reauths}, {m.reauthFailures, s.ReauthFailures},
				{m.retired, s.ConnsRetired}, {m.giveUps, s.GaveUp},
				{m.pubsubReauths, s.PubSubReauths}, {m.pubsubReconnects, s.PubSubClosed}, {m.pubsubMoves, s.PubSubMoved},
				{m.idleReauths, s.IdleReauths}, {m.keepAlives, s.KeepAlives}, {m.blockingSplits, s.BlockingSplits},
				{m.refused, s.Refused}, {m.rechecks, s.Rechecks}, {m.pubsubMoveFailures, s.PubSubMoveFailures},
			} {
				o.ObserveInt64(c.inst, int64(c.n), metric.WithAttributeSet(m.baseSet))
			}
			var blocked int64
			if s.Blocked {
				blocked = 1
			}
			o.ObserveInt64(m.blocked, blocked, metric.WithAttributeSet(m.baseSet))
			// The hook retries after an auth error or after a failure to connect, nothing else.
			o.ObserveInt64(m.retries, int64(s.AuthRetries), metric.WithAttributeSet(m.authRetries))
			o.ObserveInt64(m.retries, int64(s.Retries-min(s.AuthRetries, s.Retries)), metric.WithAttributeSet(m.connectRetries))
		}
		return nil
	}, m.timeToExpiry, m.dials, m.reauths, m.reauthFailures, m.retired, m.retries, m.giveUps, m.pubsubReauths, m.pubsubReconnects,
		m.pubsubMoves, m.idleReauths, m.keepAlives, m.blockingSplits, m.refused, m.rechecks, m.pubsubMoveFailures, m.blocked)
	if err != nil {
		return fmt.Errorf("entraotel: registering the callback: %w", err)
	}
	m.mu.Lock()
	m.regs = append(m.regs, reg)
	m.mu.Unlock()
	return nil
}

// Close unregisters the callbacks Observe registered. The counters of the provider's events and the
// credential's durations are still recorded if they are still routed here.
func (m *Metrics) Close() error {
	m.mu.Lock()
	regs := m.regs
	m.regs = nil
	m.mu.Unlock()
	var errs []error
	for _, r := range regs {
		errs = append(errs, r.Unregister())
	}
	return errors.Join(errs...)
}

// ProviderEvent records a provider event. Route events to it through provider.Options.OnEvent,
// or use ProviderOptions, which does that and calls your own OnEvent as well.
func (m *Metrics) ProviderEvent(e provider.Event) {
	ctx := context.Background()
	switch e.Kind {
	case provider.EventRefreshed:
		m.refreshes.Add(ctx, 1, metric.WithAttributeSet(m.baseSet))
	case provider.EventRefreshFailed:
		m.refreshFailures.Add(ctx, 1, metric.WithAttributeSet(m.with(AttrErrorType.String(ErrorType(e.Err)))))
	case provider.EventExpired:
		m.expirations.Add(ctx, 1, metric.WithAttributeSet(m.baseSet))
	}
}

// ProviderOptions returns a copy of opts (nil: defaults) whose OnEvent records the provider's events
// and then calls opts.OnEvent, if any.
func (m *Metrics) ProviderOptions(opts *provider.Options) *provider.Options {
	var o provider.Options
	if opts != nil {
		o = *opts
	}
	next := o.OnEvent
	o.OnEvent = func(e provider.Event) {
		m.ProviderEvent(e)
		if next != nil {
			next(e)
		}
	}
	return &o
}

// Credential returns cred timed: each GetToken call's duration goes to entraredis.credential.duration,
// with error.type when it failed. Pass the result to provider.New.
func (m *Metrics) Credential(cred azcore.TokenCredential) azcore.TokenCredential {
	if cred == nil {
		return nil // provider.New reports it
	}
	return &timedCredential{cred: cred, m: m}
}

type timedCredential struct {
	cred azcore.TokenCredential
	m    *Metrics
}

func (c *timedCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	start := time.Now()
	tok, err := c.cred.GetToken(ctx, o)
	set := c.m.baseSet
	if err != nil {
		set = c.m.with(AttrErrorType.String(ErrorType(err)))
	}
	c.m.credDuration.Record(context.Background(), time.Since(start).Seconds(), metric.WithAttributeSet(set))
	return tok, err
}

// ErrorType is the error.type value recorded for a credential or refresh failure: "timeout",
// "canceled", the HTTP status code (e.g. "429", "503") when the identity endpoint answered,
// "authentication_failed" when it refused without one, "credential_unavailable" (e.g. not on
// Azure, no login), "connection" (the endpoint could not be reached), "expired_token",
// "no_username", and "_OTHER" for anything else, as OpenTelemetry's conventions say.
// It never calls err.Error(): azidentity's errors are not safe to format from several goroutines.
func ErrorType(err error) (typ string) {
	defer func() {
		// A typed nil inside err, or a net.Error whose Timeout panics: classify, never crash a
		// refresh loop over a metric.
		if recover() != nil {
			typ = "_OTHER"
		}
	}()
	var (
		respErr *azcore.ResponseError
		authErr *azidentity.AuthenticationFailedError
		// azidentity's credential-unavailable type is unexported; after AuthenticationFailedError,
		// the SDK's other non-retriable errors are that one (and AuthenticationRequiredError).
		unavail interface{ NonRetriable() }
		netErr  net.Error
	)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, provider.ErrExpiredToken):
		return "expired_token"
	case errors.Is(err, provider.ErrNoUsername):
		return "no_username"
	case errors.As(err, &respErr) && respErr != nil:
		return strconv.Itoa(respErr.StatusCode)
	case errors.As(err, &authErr) && authErr != nil:
		if authErr.RawResponse != nil {
			return strconv.Itoa(authErr.RawResponse.StatusCode)
		}
		return "authentication_failed"
	case errors.As(err, &unavail):
		return "credential_unavailable"
	case errors.As(err, &netErr):
		if netErr.Timeout() {
			return "timeout"
		}
		return "connection"
	}
	return "_OTHER"
}
