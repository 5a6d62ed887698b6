package entratest

import (
	"context"
	"crypto/rand"
	"crypto/rsa" //nolint:gosec // x5t is a SHA-1 thumbprint by definition (RFC 7515), not a security hash here
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The confidential-client flows of Entra ID's v2 token endpoint, as azidentity v1.15 (through MSAL)
// speaks them: client_credentials with a client_secret, or with a client_assertion (a JWT bearer
// assertion) signed by a certificate registered with the application, or a federated token from a
// trusted OIDC issuer (workload identity).
const (
	// ClientAssertionType is the client_assertion_type of a JWT bearer assertion.
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// FederatedAudience is the audience Entra expects in a federated token (workload identity).
	FederatedAudience = "api://AzureADTokenExchange"
	// DefaultServiceAccount is the subject of a federated token when FederatedTokenOptions.Subject
	// is empty: what AKS's service-account issuer writes for the pod's service account.
	DefaultServiceAccount = "system:serviceaccount:default:workload-identity-sa"
)

// FederatedCredential is a federated identity credential of the issuer's application: Entra
// accepts, instead of a secret, a token whose iss, sub and aud are these (exactly, case-sensitive).
type FederatedCredential struct {
	Issuer   string // default Issuer.FederatedIssuerURL()
	Subject  string // default DefaultServiceAccount
	Audience string // default FederatedAudience
}

// FederatedTokenOptions shapes a token minted by MintFederated. Zero fields mean defaults.
type FederatedTokenOptions struct {
	Subject  string        // default DefaultServiceAccount
	Audience string        // default FederatedAudience
	Issuer   string        // default Issuer.FederatedIssuerURL()
	Lifetime time.Duration // from now, default an hour (AKS's); negative: already expired
}

// authority is the application registration behind the HTTPS token endpoint: its credentials,
// and what was presented.
type authority struct {
	mu         sync.Mutex
	host       string // "https://127.0.0.1:port/" once served
	secret     string
	certs      []*x509.Certificate
	federated  []FederatedCredential
	assertions map[string]int // jti of each accepted client assertion -> times presented
	identities []ManagedIdentity
}

// ServeAuthority starts (once; later calls return the same host) an HTTPS endpoint on 127.0.0.1
// that speaks Entra ID's v2 client-credentials flow, so that the real azidentity credentials of an
// application obtain tokens from the issuer:
//
//   - GET  /{tenant}/v2.0/.well-known/openid-configuration (MSAL's authority metadata),
//   - POST /{tenant}/oauth2/v2.0/token with grant_type=client_credentials, client_id (the issuer's
//     AppID), a scope ending in "/.default", and one of: client_secret (SetClientSecret);
//     client_assertion signed by a certificate registered with AddCertificate
//     (ClientCertificateCredential); client_assertion holding a federated token that matches a
//     credential added with AddFederatedCredential (WorkloadIdentityCredential,
//     ClientAssertionCredential).
//
// tlsConfig is the server's TLS configuration (TestCA.ServerTLSConfig). Configure a credential with
// the returned host as ClientOptions.Cloud.ActiveDirectoryAuthorityHost, a Transport that trusts the
// CA (TestCA.ClientTLSConfig), and DisableInstanceDiscovery: true (instance discovery would ask
// login.microsoftonline.com about the host). Refusals are Entra's: 400 unauthorized_client
// AADSTS700016 for an unknown client, 401 invalid_client AADSTS7000215 for a wrong secret,
// AADSTS700027 for an assertion signed by an unregistered, expired or other key, AADSTS700024 for
// an assertion outside its validity, AADSTS700023 for a wrong aud, AADSTS700211/700212/700213 for
// a federated token whose issuer, audience or subject no credential matches. Injected faults
// apply. Close stops it.
func (i *Issuer) ServeAuthority(tlsConfig *tls.Config) (host string, err error) {
	if tlsConfig == nil {
		return "", errors.New("entratest: ServeAuthority needs a TLS configuration (see TestCA.ServerTLSConfig): azidentity only talks to an HTTPS authority")
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed.Load() {
		return "", ErrClosed
	}
	i.app.mu.Lock()
	host = i.app.host
	i.app.mu.Unlock()
	if host != "" {
		return host, nil
	}
	mux := http.NewServeMux()
	// The handlers read the host under the lock: it is known only once the listener is.
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		i.serveOIDC(w, r, i.app.base())
	})
	mux.HandleFunc("/{tenant}/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) {
		i.serveToken(w, r, i.app.base())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		i.rejected.Add(1)
		oauthError(w, http.StatusNotFound, "invalid_request", "entratest: no such endpoint")
	})
	addr, closeFn, err := serveHTTP(mux, tlsConfig)
	if err != nil {
		return "", err
	}
	i.closers = append(i.closers, closeFn)
	i.app.mu.Lock()
	i.app.host = "https://" + addr + "/"
	i.app.mu.Unlock()
	return "https://" + addr + "/", nil
}

// base returns the authority's URL without the trailing slash.
func (a *authority) base() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.TrimSuffix(a.host, "/")
}

// SetClientSecret sets the application's client secret ("" accepts none).
func (i *Issuer) SetClientSecret(secret string) {
	i.app.mu.Lock()
	i.app.secret = secret
	i.app.mu.Unlock()
}

// AddCertificate registers cert (its public key) as a credential of the application, as uploading
// it to the app registration does: the token endpoint then accepts client assertions it signed.
func (i *Issuer) AddCertificate(cert *x509.Certificate) {
	i.app.mu.Lock()
	i.app.certs = append(i.app.certs, cert)
	i.app.mu.Unlock()
}

// AddFederatedCredential adds a federated identity credential to the application.
func (i *Issuer) AddFederatedCredential(fc FederatedCredential) {
	if fc.Issuer == "" {
		fc.Issuer = i.FederatedIssuerURL()
	}
	if fc.Subject == "" {
		fc.Subject = DefaultServiceAccount
	}
	if fc.Audience == "" {
		fc.Audience = FederatedAudience
	}
	i.app.mu.Lock()
	i.app.federated = append(i.app.federated, fc)
	i.app.mu.Unlock()
}

// FederatedIssuerURL returns the iss claim of tokens minted by MintFederated: the issuer acts as a
// cluster's service-account (OIDC) issuer, shaped like AKS's.
func (i *Issuer) FederatedIssuerURL() string {
	return "https://oidc.entratest.invalid/" + i.tid + "/" + i.kid + "/"
}

// AssertionsSeen returns how many times the token endpoint accepted each client assertion, by its
// jti claim: a test sees which federated token (or certificate assertion) a credential presented.
func (i *Issuer) AssertionsSeen() map[string]int {
	i.app.mu.Lock()
	defer i.app.mu.Unlock()
	m := make(map[string]int, len(i.app.assertions))
	for k, v := range i.app.assertions {
		m[k] = v
	}
	return m
}

// MintFederated returns a federated token shaped like a Kubernetes projected service-account token
// (what the AKS workload identity webhook writes to AZURE_FEDERATED_TOKEN_FILE), signed by the
// issuer's key, its jti and its expiry.
func (i *Issuer) MintFederated(o FederatedTokenOptions) (token, jti string, expiresOn time.Time, err error) {
	if o.Subject == "" {
		o.Subject = DefaultServiceAccount
	}
	if o.Audience == "" {
		o.Audience = FederatedAudience
	}
	if o.Issuer == "" {
		o.Issuer = i.FederatedIssuerURL()
	}
	if o.Lifetime == 0 {
		o.Lifetime = time.Hour
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", "", time.Time{}, fmt.Errorf("entratest: random token id: %w", err)
	}
	jti = hex.EncodeToString(id[:])
	now := time.Now()
	exp := now.Add(o.Lifetime)
	iat := now
	if o.Lifetime < 0 {
		iat = exp.Add(-time.Hour)
	}
	ns, sa, _ := strings.Cut(strings.TrimPrefix(o.Subject, "system:serviceaccount:"), ":")
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"aud": []string{o.Audience},
		"iss": o.Issuer,
		"sub": o.Subject,
		"iat": iat.Unix(),
		"nbf": iat.Unix(),
		"exp": exp.Unix(),
		"jti": jti,
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"serviceaccount": map[string]string{"name": sa},
		},
	})
	t.Header["kid"] = i.kid
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("entratest: sign federated token: %w", err)
	}
	return s, jti, time.Unix(exp.Unix(), 0), nil
}

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

// refusal is an answer of the token endpoint other than a token.
type refusal struct {
	status     int
	code, desc string
}

func (i *Issuer) serveToken(w http.ResponseWriter, r *http.Request, host string) {
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
	id := f.Get("client_id")
	sec, hasSecret := f.Get("client_secret"), f.Has("client_secret")
	if u, p, ok := r.BasicAuth(); ok { // client_secret_basic
		id, sec, hasSecret = u, p, true
	}
	scope := f.Get("scope")
	switch {
	case f.Get("grant_type") != "client_credentials":
		reject(http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: only client_credentials is supported by entratest")
		return
	case id != i.appid:
		reject(http.StatusBadRequest, "unauthorized_client", "AADSTS700016: Application with identifier '"+sanitize(id)+"' was not found in the directory '"+i.tid+"'")
		return
	}
	tokenEndpoint := host + "/" + i.tid + "/oauth2/v2.0/token"
	switch {
	case hasSecret:
		i.app.mu.Lock()
		want := i.app.secret
		i.app.mu.Unlock()
		if want == "" || subtle.ConstantTimeCompare([]byte(sec), []byte(want)) != 1 {
			reject(http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID")
			return
		}
	case f.Has("client_assertion"):
		if t := f.Get("client_assertion_type"); t != ClientAssertionType {
			reject(http.StatusBadRequest, "invalid_request", "AADSTS50027: client_assertion_type must be "+ClientAssertionType)
			return
		}
		if rf := i.checkAssertion(f.Get("client_assertion"), tokenEndpoint); rf != nil {
			reject(rf.status, rf.code, rf.desc)
			return
		}
	default:
		reject(http.StatusUnauthorized, "invalid_client", "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'")
		return
	}
	if !strings.HasSuffix(firstScope(scope), "/.default") {
		reject(http.StatusBadRequest, "invalid_scope", "AADSTS1002012: the scope must end with /.default for the client credentials flow")
		return
	}
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

// ClientCertificate is an application's certificate credential: a self-signed RSA certificate
// and its key, as "az ad sp create-for-rbac --create-cert" makes.
type ClientCertificate struct {
	Cert *x509.Certificate
	Key  *rsa.PrivateKey
}

// NewClientCertificate makes a self-signed certificate valid from notBefore to notAfter (zero: from
// a minute ago, for a day), with a fresh 2048-bit RSA key unless key is given.
func NewClientCertificate(key *rsa.PrivateKey, notBefore, notAfter time.Time) (*ClientCertificate, error) {
	if key == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("entratest: generate RSA key: %w", err)
		}
		key = k
	}
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Minute)
	}
	if notAfter.IsZero() {
		notAfter = notBefore.Add(24 * time.Hour)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("entratest: certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "entratest client", Organization: []string{"entratest"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("entratest: create client certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("entratest: parse client certificate: %w", err)
	}
	return &ClientCertificate{Cert: cert, Key: key}, nil
}

// PEM returns the certificate and its PKCS#8 private key in PEM, the file
// AZURE_CLIENT_CERTIFICATE_PATH or azidentity.ParseCertificates takes.
func (c *ClientCertificate) PEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, fmt.Errorf("entratest: marshal private key: %w", err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), nil
}
