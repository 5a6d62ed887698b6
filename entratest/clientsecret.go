package entratest

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ServeClientSecret starts (once; later calls return the same host) an HTTPS endpoint on 127.0.0.1
// that speaks the OAuth 2.0 client-credentials flow as Entra ID's v2 endpoints do, so that the real
// azidentity.ClientSecretCredential obtains tokens from the issuer:
//
//   - GET  /{tenant}/v2.0/.well-known/openid-configuration (MSAL's authority metadata),
//   - POST /{tenant}/oauth2/v2.0/token with grant_type=client_credentials, client_id (the issuer's
//     AppID), client_secret (secret) and a scope ending in "/.default".
//
// tlsConfig is the server's TLS configuration (TestCA.ServerTLSConfig). Configure the credential
// with the returned host as ClientOptions.Cloud.ActiveDirectoryAuthorityHost, a Transport that
// trusts the CA (TestCA.ClientTLSConfig), and DisableInstanceDiscovery: true (instance discovery
// would ask login.microsoftonline.com about the host). Wrong client ID or secret is answered like
// Entra: 400 unauthorized_client, 401 invalid_client. Injected faults apply. Close stops it.
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
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed.Load() {
		return "", ErrClosed
	}
	if i.csHost != "" {
		return i.csHost, nil
	}
	var host string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		i.serveOIDC(w, r, host)
	})
	mux.HandleFunc("/{tenant}/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) {
		i.serveClientCredentials(w, r, secret)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		i.rejected.Add(1)
		oauthError(w, http.StatusNotFound, "invalid_request", "entratest: no such endpoint")
	})
	addr, closeFn, err := serveHTTP(mux, tlsConfig)
	if err != nil {
		return "", err
	}
	host = "https://" + addr
	i.closers = append(i.closers, closeFn)
	i.csHost = host + "/"
	return i.csHost, nil
}

// AppID returns the appid claim of the tokens: the client ID of the application (or of the
// managed identity).
func (i *Issuer) AppID() string { return i.appid }

func (i *Issuer) serveOIDC(w http.ResponseWriter, r *http.Request, host string) {
	tenant := r.PathValue("tenant")
	if tenant != i.tid {
		i.rejected.Add(1)
		oauthError(w, http.StatusBadRequest, "invalid_tenant", "AADSTS90002: tenant '"+sanitize(tenant)+"' not found")
		return
	}
	authority := host + "/" + tenant
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                authority + "/v2.0",
		"token_endpoint":                        authority + "/oauth2/v2.0/token",
		"authorization_endpoint":                authority + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         authority + "/oauth2/v2.0/devicecode",
		"jwks_uri":                              authority + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"tenant_region_scope":                   "WW",
		"cloud_instance_name":                   "microsoftonline.com",
	})
}

func (i *Issuer) serveClientCredentials(w http.ResponseWriter, r *http.Request, secret string) {
	reject := func(status int, code, desc string) {
		i.rejected.Add(1)
		oauthError(w, status, code, desc)
	}
	if r.Method != http.MethodPost {
		reject(http.StatusMethodNotAllowed, "invalid_request", "AADSTS900561: the endpoint only accepts POST requests")
		return
	}
	if r.PathValue("tenant") != i.tid {
		reject(http.StatusBadRequest, "invalid_tenant", "AADSTS90002: tenant not found")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		reject(http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed request body")
		return
	}
	f := r.PostForm
	id, sec := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok { // client_secret_basic
		id, sec = u, p
	}
	scope := f.Get("scope")
	switch {
	case f.Get("grant_type") != "client_credentials":
		reject(http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: only client_credentials is supported by entratest")
	case id != i.appid:
		reject(http.StatusBadRequest, "unauthorized_client", "AADSTS700016: application not found in the directory")
	case subtle.ConstantTimeCompare([]byte(sec), []byte(secret)) != 1:
		reject(http.StatusUnauthorized, "invalid_client", "AADSTS7000215: invalid client secret provided")
	case !strings.HasSuffix(firstScope(scope), "/.default"):
		reject(http.StatusBadRequest, "invalid_scope", "AADSTS1002012: the scope must end with /.default for the client credentials flow")
	default:
		tok, exp, err := i.issue(r.Context(), firstScope(scope))
		var fe *FaultError
		switch {
		case errors.As(err, &fe):
			writeFault(w, fe)
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		case err != nil:
			oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		default:
			secs := strconv.FormatInt(int64(time.Until(exp).Round(time.Second)/time.Second), 10)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store, no-cache")
			_, _ = w.Write([]byte(`{"token_type":"Bearer","expires_in":` + secs + `,"ext_expires_in":` + secs + `,"access_token":"` + tok + `"}`))
		}
	}
}

// firstScope returns the first of space-separated scopes.
func firstScope(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
