// Package entratest is a local Microsoft Entra ID emulator for tests: an hour of Azure Cache for Redis
// authentication happens in seconds, on loopback, without an Azure account.
//
// It has three parts:
//
//   - Issuer mints RS256 JSON Web Tokens shaped like Entra's (oid, tid, aud, iss, iat, nbf, exp, appid)
//     and implements azcore.TokenCredential. It can also serve them over HTTP with the App Service
//     managed-identity protocol, so that the real azidentity.ManagedIdentityCredential obtains them.
//     Faults (failures, HTTP 429, latency) can be injected.
//   - StartRedis runs a real redis-server on a free 127.0.0.1 port in a temporary directory.
//   - Gateway is a RESP proxy in front of a Redis server that enforces what Azure enforces: AUTH with
//     a token the Issuer signed, username equal to the token's oid, and the connection closed when the
//     token that authenticated it expires.
//
// Everything listens on 127.0.0.1 only and is stopped by the test's Cleanup or by Close.
package entratest
