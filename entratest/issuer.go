package entratest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/golang-jwt/jwt/v5"
)

// Defaults of IssuerOptions: fixed, GUID-shaped values, so tests and examples can print them.
const (
	DefaultObjectID = "6f1c2b7a-4e2d-4c1b-9a6e-0c1d2e3f4a5b"
	DefaultTenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	DefaultAppID    = "0e3c5f7a-9b1d-4f2e-8a6c-5d4b3a291807"
	// Audience is the aud claim of a token for Azure Cache for Redis / Azure Managed Redis.
	Audience = "https://redis.azure.com"
	// Scope is what a client asks for to get a token with Audience.
	Scope = Audience + "/.default"
	// DefaultLifetime is the lifetime of a token when IssuerOptions.Lifetime is zero.
	DefaultLifetime = time.Hour
)

// IssuerOptions configures NewIssuer. Nil or zero fields mean defaults.
type IssuerOptions struct {
	Lifetime time.Duration // of each token; default DefaultLifetime
	ObjectID string        // oid (and sub) claim, the Redis username; default DefaultObjectID
	TenantID string        // tid claim, also in iss; default DefaultTenantID
	AppID    string        // appid claim; default DefaultAppID
	// Key signs the tokens; default a fresh 2048-bit key. Sharing one key between issuers saves the
	// key generation time, and makes their tokens valid for each other's gateways.
	Key *rsa.PrivateKey
}

// IssuerStats counts what an Issuer did, over GetToken and HTTP together.
type IssuerStats struct {
	Served   int64 // tokens handed out
	Failed   int64 // requests failed by fault injection
	Rejected int64 // HTTP requests refused as malformed (bad header, parameters, method)
}

// Issuer mints RS256 JWTs shaped like Microsoft Entra ID's access tokens. It implements
// azcore.TokenCredential, so it can stand in for any azidentity credential. It is safe for
// concurrent use.
type Issuer struct {
	key   *rsa.PrivateKey
	kid   string
	oid   string
	tid   string
	appid string

	lifetime atomic.Int64
	faults   faults
	closed   atomic.Bool

	served, failed, rejected atomic.Int64

	mu      sync.Mutex
	closers []func() error // HTTP servers started by Serve*

	miEndpoint, miHeader string
	app                  authority // the application behind ServeAuthority, and managed identities
}

// NewIssuer returns an Issuer. It does no network I/O; the Serve methods start listeners.
func NewIssuer(opts *IssuerOptions) (*Issuer, error) {
	var o IssuerOptions
	if opts != nil {
		o = *opts
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.ObjectID == "" {
		o.ObjectID = DefaultObjectID
	}
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.AppID == "" {
		o.AppID = DefaultAppID
	}
	if o.Key == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("entratest: generate RSA key: %w", err)
		}
		o.Key = k
	}
	der, err := x509.MarshalPKIXPublicKey(&o.Key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("entratest: marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	i := &Issuer{
		key:   o.Key,
		kid:   base64.RawURLEncoding.EncodeToString(sum[:15]),
		oid:   o.ObjectID,
		tid:   o.TenantID,
		appid: o.AppID,
	}
	i.lifetime.Store(int64(o.Lifetime))
	return i, nil
}

// ObjectID returns the oid claim of the tokens, which is the Redis username.
func (i *Issuer) ObjectID() string { return i.oid }

// TenantID returns the tid claim of the tokens.
func (i *Issuer) TenantID() string { return i.tid }

// PublicKey returns the key that verifies the tokens' signatures.
func (i *Issuer) PublicKey() *rsa.PublicKey { return &i.key.PublicKey }

// IssuerURL returns the iss claim of the tokens: Entra's v1 issuer for the tenant.
func (i *Issuer) IssuerURL() string { return "https://sts.windows.net/" + i.tid + "/" }

// SetLifetime changes the lifetime of tokens minted from now on.
func (i *Issuer) SetLifetime(d time.Duration) { i.lifetime.Store(int64(d)) }

// Lifetime returns the lifetime of tokens minted now.
func (i *Issuer) Lifetime() time.Duration { return time.Duration(i.lifetime.Load()) }

// FailNext makes the next n token requests (GetToken or HTTP) fail with status (HTTP 500 when
// status is not 4xx/5xx). 429 answers carry Retry-After. n <= 0 cancels.
func (i *Issuer) FailNext(n int, status int) { i.faults.failNext(n, status) }

// FailFor makes every token request fail with status for d from now (an outage of the identity
// provider). d <= 0 ends an outage.
func (i *Issuer) FailFor(d time.Duration, status int) { i.faults.failFor(d, status) }

// SetLatency delays every token request by d (0 removes the delay). GetToken's wait honours its ctx.
func (i *Issuer) SetLatency(d time.Duration) { i.faults.setLatency(d) }

// Stats returns the counters.
func (i *Issuer) Stats() IssuerStats {
	return IssuerStats{Served: i.served.Load(), Failed: i.failed.Load(), Rejected: i.rejected.Load()}
}

// Close stops the HTTP endpoints started by the Serve methods and makes GetToken fail with
// ErrClosed. Minting still works, so tests can keep making tokens for a gateway.
func (i *Issuer) Close() error {
	i.closed.Store(true)
	i.mu.Lock()
	closers := i.closers
	i.closers = nil
	i.mu.Unlock()
	var errs []error
	for _, c := range closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// TokenOptions shapes a token made by MintWith. Zero fields mean the issuer's values.
type TokenOptions struct {
	// Lifetime from now; negative makes a token that has already expired. 0: the issuer's lifetime.
	Lifetime  time.Duration
	ObjectID  string    // oid and sub claims
	AppID     string    // appid claim (a managed identity's client ID)
	Audience  string    // aud claim; default Audience
	NotBefore time.Time // nbf claim; default the issue time
}

// Mint returns a signed token valid for lifetime from now (0: the issuer's lifetime; negative: a
// token that has already expired) and its expiry, which is the exp claim: a whole second, rounded up.
func (i *Issuer) Mint(lifetime time.Duration) (token string, expiresOn time.Time, err error) {
	return i.MintWith(TokenOptions{Lifetime: lifetime})
}

// MintWith returns a signed token shaped by o and its expiry (the exp claim).
func (i *Issuer) MintWith(o TokenOptions) (token string, expiresOn time.Time, err error) {
	now := time.Now()
	life := o.Lifetime
	if life == 0 {
		life = i.Lifetime()
	}
	oid := o.ObjectID
	if oid == "" {
		oid = i.oid
	}
	aud := o.Audience
	if aud == "" {
		aud = Audience
	}
	appid := o.AppID
	if appid == "" {
		appid = i.appid
	}
	// Claims are whole seconds; rounding exp up keeps a token valid for at least its lifetime.
	exp := now.Add(life)
	expSec := exp.Unix()
	if exp.After(time.Unix(expSec, 0)) {
		expSec++
	}
	iat := now.Unix()
	if expSec <= iat {
		// An expired token was issued some time before it expired, like a real one.
		iat = expSec - int64(DefaultLifetime/time.Second)
	}
	nbf := iat
	if !o.NotBefore.IsZero() {
		nbf = o.NotBefore.Unix()
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("entratest: random token id: %w", err)
	}
	claims := jwt.MapClaims{
		"aud":   aud,
		"iss":   i.IssuerURL(),
		"idp":   i.IssuerURL(),
		"iat":   iat,
		"nbf":   nbf,
		"exp":   expSec,
		"appid": appid,
		"oid":   oid,
		"sub":   oid,
		"tid":   i.tid,
		"ver":   "1.0",
		"jti":   hex.EncodeToString(jti[:]),
		"uti":   base64.RawURLEncoding.EncodeToString(jti[:12]),
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = i.kid
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("entratest: sign token: %w", err)
	}
	return s, time.Unix(expSec, 0), nil
}

// GetToken implements azcore.TokenCredential: it mints a token with the issuer's lifetime whose
// audience is the scope without "/.default". Injected faults apply.
func (i *Issuer) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) == 0 {
		return azcore.AccessToken{}, errors.New("entratest: GetToken needs a scope, e.g. " + Scope)
	}
	tok, exp, err := i.issue(ctx, o.Scopes[0])
	if err != nil {
		return azcore.AccessToken{}, err
	}
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, nil
}

// issue is one token request, from GetToken or HTTP: faults, then minting, counted.
func (i *Issuer) issue(ctx context.Context, scopeOrResource string) (string, time.Time, error) {
	return i.issueFor(ctx, scopeOrResource, ManagedIdentity{})
}

// issueFor is issue for an identity (zero fields: the issuer's).
func (i *Issuer) issueFor(ctx context.Context, scopeOrResource string, id ManagedIdentity) (string, time.Time, error) {
	if i.closed.Load() {
		return "", time.Time{}, ErrClosed
	}
	latency, fault := i.faults.take()
	if err := sleepCtx(ctx, latency); err != nil {
		return "", time.Time{}, fmt.Errorf("entratest: token request: %w", err)
	}
	if fault != nil {
		i.failed.Add(1)
		return "", time.Time{}, fault
	}
	aud := strings.TrimSuffix(scopeOrResource, "/.default")
	tok, exp, err := i.MintWith(TokenOptions{Audience: aud, ObjectID: id.ObjectID, AppID: id.ClientID})
	if err != nil {
		return "", time.Time{}, err
	}
	i.served.Add(1)
	return tok, exp, nil
}

var _ azcore.TokenCredential = (*Issuer)(nil)
