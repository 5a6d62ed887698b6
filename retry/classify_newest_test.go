//go:build goredis_newest

package retry_test

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// go-redis's own IsAuthError (v9.17 and later, newer than go.mod's floor: this runs in make test's
// pass against the newest go-redis) still misses Azure's "ERR WRONGPASS": the reason Classify
// exists. When it stops missing it, Classify can lean on it.
func TestGoRedisIsAuthError(t *testing.T) {
	g := realErrors(t)
	assert.True(t, redis.IsAuthError(g.noauth))
	assert.True(t, redis.IsAuthError(g.wrongpass))
	assert.False(t, redis.IsAuthError(g.azureWrongpass), "go-redis misses Azure's ERR prefix: the reason Classify exists")
}
