// Package entratest is a local Microsoft Entra ID emulator for tests: an hour of Azure Cache for Redis
// authentication happens in seconds, on loopback, without an Azure account.
//
//   - Issuer mints RS256 JSON Web Tokens shaped like Entra's (oid, tid, aud, iss, iat, nbf, exp,
//     appid) and implements azcore.TokenCredential. It also serves them over HTTP with the App
//     Service managed-identity protocol (ServeManagedIdentity, SetManagedIdentityEnv) and over
//     HTTPS with the client-credentials flow (ServeClientSecret), so that the real azidentity
//     credentials obtain them. Faults (failures, HTTP 429, latency) can be injected.
//   - StartRedis runs a real redis-server on a free 127.0.0.1 port in a temporary directory;
//     StartCluster runs a 3-master Redis Cluster whose nodes each sit behind a Gateway.
//   - Gateway is a RESP proxy in front of a Redis server (redis-server or miniredis) that enforces
//     what Azure enforces: AUTH with a token the Issuer signed, username equal to the token's oid,
//     and the connection closed when the token that authenticated it expires. TestCA makes the
//     certificates for a TLS gateway.
//
// Everything listens on 127.0.0.1 only and is stopped by the test's Cleanup or by Close. The
// package imports nothing of entraredis, so it can test any Entra ID client code.
package entratest
