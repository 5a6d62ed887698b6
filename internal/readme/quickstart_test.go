package readme

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/provider"
)

func quickstart(ctx context.Context) error {
	p, err := provider.NewManagedIdentity(nil, nil) // or provider.FromEnv(nil), provider.New(anyAzCredential, nil)
	if err != nil {
		return err
	}
	defer p.Close()
	rdb := entraredis.NewClient(p, &redis.Options{Addr: "mycache.redis.cache.windows.net:6380"})
	defer rdb.Close()
	return rdb.Set(ctx, "key", "value", 0).Err()
}
