package valkeyentra

// This package is written by internal/adaptergen from rueidisentra (valkey-go is rueidis's fork,
// under other names): edit rueidisentra, then run go generate in valkeyentra (its own module), or
// go run ./internal/adaptergen from the repository root. internal/adaptergen's
// TestGeneratedCopyIsCurrent fails while the copy is stale.

//go:generate sh -c "cd .. && go run ./internal/adaptergen"
