//go:build goredis_newest

package testutil

// goRedisNewest: built with -tags goredis_newest, as make test's pass against the newest go-redis.
const goRedisNewest = true
