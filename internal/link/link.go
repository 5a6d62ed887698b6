// Package link lets the library's packages share what they must without exporting it: set by the
// package that owns it, in an init function, and read by the one that needs it.
package link

import "log/slog"

// ProviderLogger returns a *provider.Provider's Options.Logger, so that a hook made from it logs
// to the same place unless told otherwise: one logger option for the whole library.
var ProviderLogger func(p any) *slog.Logger
