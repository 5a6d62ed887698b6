// Package certcred is the provider for a service principal that signs in with a certificate file,
// in more formats than azidentity reads. It is a package of its own so that programs using a
// managed identity, workload identity, a secret or DefaultAzureCredential link no PKCS#8 or
// PKCS#12 parsing.
package certcred

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/entraredis/entraredis/provider"
)

// NewProvider returns a provider whose tokens come from azidentity.ClientCertificateCredential
// for the service principal clientID in tenantID, with the certificate and private key read from
// certPath by ParseCertificates (PEM or PFX, encrypted or not); password is nil for an unencrypted
// file. credOpts and opts are azidentity's and the provider's options (nil for defaults). It does
// no network I/O.
func NewProvider(tenantID, clientID, certPath string, password []byte, credOpts *azidentity.ClientCertificateCredentialOptions, opts *provider.Options) (*provider.Provider, error) {
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certcred: reading the client certificate: %w", err)
	}
	certs, key, err := ParseCertificates(data, password)
	if err != nil {
		return nil, fmt.Errorf("certcred: %s holds no usable certificate and private key (PEM or PFX): %w", certPath, err)
	}
	cred, err := azidentity.NewClientCertificateCredential(tenantID, clientID, certs, key, credOpts)
	if err != nil {
		return nil, fmt.Errorf("certcred: creating the credential: %w", err)
	}
	return provider.New(cred, opts)
}

// ErrPassword is matched (errors.Is) by the errors of ParseCertificates and NewProvider when the
// private key is encrypted and the password is missing or wrong.
var ErrPassword = errors.New("the private key is encrypted and the password is missing or wrong: pass the password of the certificate file (AZURE_CLIENT_CERTIFICATE_PASSWORD)")

// ParseCertificates reads a service principal's certificates and private key, for
// azidentity.NewClientCertificateCredential. It takes what azidentity.ParseCertificates takes and
// what it cannot read (its documented limits):
//
//   - PEM: CERTIFICATE blocks and a key as PRIVATE KEY (PKCS#8), RSA PRIVATE KEY (PKCS#1) or EC
//     PRIVATE KEY, or encrypted with password: ENCRYPTED PRIVATE KEY (PKCS#8, as "openssl pkcs8
//     -topk8" writes) or OpenSSL's legacy "Proc-Type: 4,ENCRYPTED";
//   - PKCS#12 (PFX), legacy (3DES, SHA-1 MAC) or modern (AES, SHA-256 MAC: OpenSSL 3's and
//     Windows' default), which azidentity cannot read.
//
// password is nil for an unencrypted file.
func ParseCertificates(data, password []byte) ([]*x509.Certificate, crypto.PrivateKey, error) {
	if bytes.Contains(data, []byte("-----BEGIN ")) {
		return parsePEM(data, password)
	}
	key, cert, chain, err := pkcs12.DecodeChain(data, string(password))
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword):
		return nil, nil, fmt.Errorf("PFX: %w", ErrPassword)
	case err != nil:
		return nil, nil, fmt.Errorf("neither PEM nor a readable PFX: %w", err)
	}
	return append([]*x509.Certificate{cert}, chain...), key, nil
}

func parsePEM(data, password []byte) ([]*x509.Certificate, crypto.PrivateKey, error) {
	var (
		certs []*x509.Certificate
		key   crypto.PrivateKey
	)
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var (
			k   crypto.PrivateKey
			err error
		)
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM certificate: %w", err)
			}
			certs = append(certs, c)
			continue
		case "ENCRYPTED PRIVATE KEY":
			if len(password) == 0 {
				return nil, nil, ErrPassword
			}
			k, err = decryptPKCS8(b.Bytes, password)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM %s: %w", b.Type, err)
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			der := b.Bytes
			//lint:ignore SA1019 OpenSSL's legacy PEM encryption is weak, but files that use it exist
			if x509.IsEncryptedPEMBlock(b) { //nolint:staticcheck
				if len(password) == 0 {
					return nil, nil, ErrPassword
				}
				//lint:ignore SA1019 as above
				if der, err = x509.DecryptPEMBlock(b, password); err != nil { //nolint:staticcheck
					return nil, nil, fmt.Errorf("PEM %s: %w", b.Type, ErrPassword)
				}
			}
			k, err = parseKey(b.Type, der)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM %s: %w", b.Type, err)
			}
		default:
			continue
		}
		if key != nil {
			return nil, nil, errors.New("the file holds more than one private key: keep only the certificate's")
		}
		key = k
	}
	switch {
	case len(certs) == 0:
		return nil, nil, errors.New("no CERTIFICATE block in the PEM data")
	case key == nil:
		return nil, nil, errors.New("no private key in the PEM data: the file must hold the certificate and its key")
	}
	return certs, key, nil
}

func parseKey(typ string, der []byte) (crypto.PrivateKey, error) {
	switch typ {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(der)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(der)
	}
	return x509.ParsePKCS8PrivateKey(der)
}
