package readme

import (
	"crypto/tls"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// byHand does what entraredis.NewClient does for an Azure host name.
func byHand(p *provider.Provider, opt *redis.Options) *redis.Client {
	h := hook.New(p, nil)
	opt.CredentialsProviderContext, opt.StreamingCredentialsProvider = h.Credentials()
	if opt.TLSConfig == nil {
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12} // Azure accepts TLS only
	}
	// The guard goes in the dialer: redis.NewClient dials the MinIdleConns prefill before AddHook.
	opt.Dialer = h.WrapDialer(redis.NewDialer(&redis.Options{TLSConfig: opt.TLSConfig, DialTimeout: 5 * time.Second}))
	rdb := redis.NewClient(opt)
	rdb.AddHook(h)
	return rdb
}
