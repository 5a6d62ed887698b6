package entratest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// CachedCredential hands back its cached token on every call until the token nears expiry, as
// azidentity's credentials do (MSAL's cache: a new token only within 5 minutes of expiry, so for
// up to an hour, a managed identity's for up to a day). A refresh forced after the cache refused
// the token therefore brings the same token: what a library must cope with. Forget drops the
// cache, as a credential that has a new token for another reason (a revocation, a restart).
type CachedCredential struct {
	cred   azcore.TokenCredential
	window time.Duration

	mu     sync.Mutex
	cached map[string]cachedToken // per scope

	calls, fetches atomic.Int64
}

// NewCachedCredential caches cred's tokens. window is how long before expiry a cached token is
// replaced; 0: 5 minutes, as azidentity, shortened to a twelfth of the token's life for tokens
// under an hour (tests), the same ratio.
func NewCachedCredential(cred azcore.TokenCredential, window time.Duration) *CachedCredential {
	return &CachedCredential{cred: cred, window: window, cached: map[string]cachedToken{}}
}

// cachedToken is a token and its life when fetched.
type cachedToken struct {
	at   azcore.AccessToken
	life time.Duration
}

// GetToken implements azcore.TokenCredential.
func (c *CachedCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	key := ""
	if len(o.Scopes) > 0 {
		key = o.Scopes[0]
	}
	c.mu.Lock()
	ct, ok := c.cached[key]
	c.mu.Unlock()
	if ok && time.Until(ct.at.ExpiresOn) > c.windowFor(ct) {
		return ct.at, nil
	}
	c.fetches.Add(1)
	at, err := c.cred.GetToken(ctx, o)
	if err != nil {
		return at, err
	}
	c.mu.Lock()
	c.cached[key] = cachedToken{at: at, life: time.Until(at.ExpiresOn)}
	c.mu.Unlock()
	return at, nil
}

func (c *CachedCredential) windowFor(ct cachedToken) time.Duration {
	if c.window > 0 {
		return c.window
	}
	if !ct.at.RefreshOn.IsZero() {
		return time.Until(ct.at.ExpiresOn) - time.Until(ct.at.RefreshOn)
	}
	return min(5*time.Minute, ct.life/12)
}

// Forget drops the cached tokens: the next call fetches a new one.
func (c *CachedCredential) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.cached)
}

// Calls returns how many times GetToken was called, and how many of those fetched a new token.
func (c *CachedCredential) Calls() (calls, fetches int64) { return c.calls.Load(), c.fetches.Load() }

var _ azcore.TokenCredential = (*CachedCredential)(nil)
