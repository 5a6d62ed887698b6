// Package entratest is a local Microsoft Entra ID emulator for tests: an hour of Azure Cache for Redis
// authentication happens in seconds, on loopback, without an Azure account.
//
//   - Issuer mints RS256 JSON Web Tokens shaped like Entra's (oid, tid, aud, iss, iat, nbf, exp,
//     appid) and implements azcore.TokenCredential. It also serves them over HTTP with the App
//     Service managed-identity protocol (ServeManagedIdentity, SetManagedIdentityEnv; user-assigned
//     identities by client, object or resource ID with AddManagedIdentity, each with its own oid)
//     and over HTTPS as Entra's v2 token endpoint (ServeAuthority): client credentials with a
//     secret (SetClientSecret), an assertion signed by a registered certificate (AddCertificate,
//     NewClientCertificate) or a federated token it mints as a Kubernetes service-account issuer
//     (MintFederated, AddFederatedCredential), refused with Entra's AADSTS codes. So the real
//     azidentity credentials obtain them: managed identity, secret, certificate, workload identity,
//     DefaultAzureCredential. Faults (failures, HTTP 429, latency) can be injected.
//   - StartRedis runs a real redis-server on a free 127.0.0.1 port in a temporary directory;
//     StartCluster runs a 3-master Redis Cluster whose nodes each sit behind a Gateway.
//   - Gateway is a RESP proxy in front of a Redis server (redis-server or miniredis) that enforces
//     what Azure enforces: AUTH with a token the Issuer signed, username equal to the token's oid,
//     the connection closed when the token that authenticated it expires (an AUTH queued behind a
//     blocked command runs only when that command returns, as in Redis), and closed after
//     IdleTimeout without traffic (10 minutes by default, as Azure). TestCA makes the
//     certificates for a TLS gateway.
//
// Everything listens on 127.0.0.1 only and is stopped by the test's Cleanup or by Close. The
// package imports nothing of entraredis, so it can test any Entra ID client code.
package entratest
