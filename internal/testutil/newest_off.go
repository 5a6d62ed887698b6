//go:build !goredis_newest

package testutil

// goRedisNewest: built without -tags goredis_newest, at go.mod's floor versions.
const goRedisNewest = false
