package entratest

import (
	"crypto/tls"
	"errors"
	"strings"
)

// ServeClientSecret sets the application's client secret (SetClientSecret) and starts the HTTPS
// authority (ServeAuthority), so that the real azidentity.ClientSecretCredential obtains tokens from
// the issuer. Once the authority is served, later calls return its host and change nothing.
//
// Unlike managed identity, the credential caches tokens per credential value, until 5 minutes
// before they expire.
func (i *Issuer) ServeClientSecret(tlsConfig *tls.Config, secret string) (authorityHost string, err error) {
	if tlsConfig == nil {
		return "", errors.New("entratest: ServeClientSecret needs a TLS configuration (see TestCA.ServerTLSConfig): azidentity only talks to an HTTPS authority")
	}
	if secret == "" {
		return "", errors.New("entratest: ServeClientSecret needs a non-empty secret")
	}
	i.app.mu.Lock()
	host := i.app.host
	i.app.mu.Unlock()
	if host != "" {
		return host, nil
	}
	i.SetClientSecret(secret)
	return i.ServeAuthority(tlsConfig)
}

// AppID returns the appid claim of the tokens: the client ID of the application (or of the
// managed identity).
func (i *Issuer) AppID() string { return i.appid }

// firstScope returns the first of space-separated scopes.
func firstScope(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
