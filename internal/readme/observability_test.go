package readme

import (
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entraotel"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// observed returns a client measured through the global MeterProvider (install your SDK and
// exporter first) and the function that closes what it made, after the client.
func observed(host string) (*redis.Client, func(), error) {
	m, err := entraotel.New(otel.GetMeterProvider(), &entraotel.Options{ServerAddress: host})
	if err != nil {
		return nil, nil, err
	}
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		return nil, nil, err
	}
	// m.Credential times every GetToken call; m.ProviderOptions counts refreshes, failures,
	// expirations (your own OnEvent is still called).
	p, err := provider.New(m.Credential(cred), m.ProviderOptions(nil))
	if err != nil {
		return nil, nil, err
	}
	h := hook.New(p, nil)
	if err := m.Observe(p, h); err != nil { // time to expiry, the hook's counters (read at collection)
		_ = p.Close()
		return nil, nil, err
	}
	rdb := entraredis.NewClient(h, &redis.Options{Addr: host + ":6380"}) // the hook h is installed
	return rdb, func() { _ = m.Close(); _ = h.Close(); _ = p.Close() }, nil
}
