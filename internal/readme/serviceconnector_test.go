package readme

import (
	"context"

	"github.com/entraredis/entraredis"
)

func fromServiceConnector(ctx context.Context) error {
	rdb, p, err := entraredis.NewClientFromEnv(nil, nil) // go-redis options (Addr empty), provider options
	if err != nil {
		return err // says what is missing, e.g. AZURE_REDIS_HOST (errors.Is(err, entraredis.ErrMissingEnv))
	}
	defer p.Close()
	defer rdb.Close()
	return rdb.Ping(ctx).Err()
}
