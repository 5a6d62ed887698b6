package entratest

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Client assertions: JWTs signed by a registered certificate, or federated tokens from a
// registered issuer, checked as Entra checks them.

// checkAssertion verifies a client assertion as Entra does: one with a certificate thumbprint in its
// header (x5t#S256 or x5t) must be signed by a registered certificate's key and name the
// application as iss and sub and the token endpoint as aud; any other must be a federated token
// matching a federated credential. Both must be within their validity.
func (i *Issuer) checkAssertion(assertion, tokenEndpoint string) *refusal {
	bad := func(status int, code, desc string) *refusal { return &refusal{status: status, code: code, desc: desc} }
	unverified, _, err := jwt.NewParser().ParseUnverified(assertion, jwt.MapClaims{})
	if err != nil {
		return bad(http.StatusBadRequest, "invalid_request", "AADSTS50027: JWT token is invalid or malformed")
	}
	x5tS256, _ := unverified.Header["x5t#S256"].(string)
	x5t, _ := unverified.Header["x5t"].(string)
	now := time.Now()
	var key any
	if x5tS256 != "" || x5t != "" {
		cert := i.app.findCert(x5tS256, x5t)
		switch {
		case cert == nil:
			return bad(http.StatusUnauthorized, "invalid_client", "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found.]")
		case now.After(cert.NotAfter) || now.Before(cert.NotBefore):
			return bad(http.StatusUnauthorized, "invalid_client", "AADSTS700027: Client assertion contains an invalid signature. [Reason - The key used is expired.]")
		}
		key = cert.PublicKey
	} else {
		key = i.PublicKey() // the issuer signs the federated tokens it mints
	}
	// Signature first: nothing an unverified token says is trusted.
	parsed := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(assertion, parsed, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{"RS256", "PS256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		if key != any(i.PublicKey()) {
			return bad(http.StatusUnauthorized, "invalid_client", "AADSTS700027: Client assertion contains an invalid signature. [Reason - The key was not found.]")
		}
		return bad(http.StatusBadRequest, "invalid_client", "AADSTS50013: Assertion failed signature validation. [Reason - The key was not found.]")
	}
	exp, _ := parsed.GetExpirationTime()
	nbf, _ := parsed.GetNotBefore()
	switch {
	case exp == nil:
		return bad(http.StatusBadRequest, "invalid_client", "AADSTS700024: Client assertion is not within its valid time range: it has no exp claim")
	case !now.Before(exp.Time), nbf != nil && now.Before(nbf.Time):
		return bad(http.StatusBadRequest, "invalid_client", fmt.Sprintf("AADSTS700024: Client assertion is not within its valid time range. Current time: %s, expiry time of assertion %s.",
			now.UTC().Format("2006-01-02T15:04:05.0000000Z"), exp.UTC().Format("2006-01-02T15:04:05.0000000Z")))
	}
	iss, _ := parsed.GetIssuer()
	sub, _ := parsed.GetSubject()
	aud, _ := parsed.GetAudience()
	if key != any(i.PublicKey()) {
		switch {
		case iss != i.appid || sub != i.appid:
			return bad(http.StatusUnauthorized, "invalid_client", "AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter")
		case len(aud) != 1 || aud[0] != tokenEndpoint:
			return bad(http.StatusUnauthorized, "invalid_client", "AADSTS700023: Client assertion audience claim does not match Realm issuer")
		}
	} else if rf := i.app.matchFederated(iss, sub, aud); rf != nil {
		return rf
	}
	jti, _ := parsed["jti"].(string)
	i.app.mu.Lock()
	if i.app.assertions == nil {
		i.app.assertions = map[string]int{}
	}
	i.app.assertions[jti]++
	i.app.mu.Unlock()
	return nil
}

// findCert returns the registered certificate with either thumbprint, as the JWT header carries
// it: base64 of the SHA-256 (x5t#S256) or SHA-1 (x5t) digest of the DER. MSAL encodes with the
// standard alphabet, RFC 7515 says base64url: both are accepted.
func (a *authority) findCert(x5tS256, x5t string) *x509.Certificate {
	decode := func(s string) []byte {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(s); err == nil {
				return b
			}
		}
		return nil
	}
	s256, s1 := decode(x5tS256), decode(x5t)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.certs {
		h256 := sha256.Sum256(c.Raw)
		h1 := sha1.Sum(c.Raw) //nolint:gosec // the thumbprint's definition
		if (s256 != nil && subtle.ConstantTimeCompare(s256, h256[:]) == 1) || (s1 != nil && subtle.ConstantTimeCompare(s1, h1[:]) == 1) {
			return c
		}
	}
	return nil
}

// matchFederated finds a federated credential for a token's iss, sub and aud, and otherwise says
// which of them none matched, in Entra's order: issuer, then subject, then audience.
func (a *authority) matchFederated(iss, sub string, aud []string) *refusal {
	a.mu.Lock()
	defer a.mu.Unlock()
	const see = " Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
	var byIssuer []FederatedCredential
	for _, fc := range a.federated {
		if fc.Issuer == iss {
			byIssuer = append(byIssuer, fc)
		}
	}
	if len(byIssuer) == 0 {
		return &refusal{status: http.StatusBadRequest, code: "invalid_client", desc: "AADSTS700211: No matching federated identity record found for presented assertion issuer '" + sanitize(iss) + "'." + see}
	}
	var bySubject []FederatedCredential
	for _, fc := range byIssuer {
		if fc.Subject == sub {
			bySubject = append(bySubject, fc)
		}
	}
	if len(bySubject) == 0 {
		return &refusal{status: http.StatusBadRequest, code: "invalid_client", desc: "AADSTS700213: No matching federated identity record found for presented assertion subject '" + sanitize(sub) + "'." + see}
	}
	for _, fc := range bySubject {
		for _, a := range aud {
			if a == fc.Audience {
				return nil
			}
		}
	}
	return &refusal{status: http.StatusBadRequest, code: "invalid_client", desc: "AADSTS700212: No matching federated identity record found for presented assertion audience '" + sanitize(strings.Join(aud, ",")) + "'." + see}
}
