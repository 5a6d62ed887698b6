package certcred_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider/certcred"
)

// A service principal signing in with its certificate file (PEM here; PFX, encrypted or not, the
// same way). entratest serves Entra's token endpoint over TLS and checks the assertion against the
// registered certificate; on Azure the credential options are nil.
func ExampleNewProvider() {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{ObjectID: "11111111-2222-3333-4444-555555555555"})
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	ca, err := entratest.NewTestCA()
	if err != nil {
		panic(err)
	}
	srv, err := ca.ServerTLSConfig()
	if err != nil {
		panic(err)
	}
	host, err := iss.ServeAuthority(srv)
	if err != nil {
		panic(err)
	}
	cc, err := entratest.NewClientCertificate(nil, time.Time{}, time.Time{})
	if err != nil {
		panic(err)
	}
	iss.AddCertificate(cc.Cert) // the app registration's certificate
	pemData, err := cc.PEM()
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "sp.pem")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		panic(err)
	}
	tr := &http.Transport{TLSClientConfig: ca.ClientTLSConfig()}
	defer tr.CloseIdleConnections()

	p, err := certcred.NewProvider(iss.TenantID(), iss.AppID(), path, nil, // nil: the file is not encrypted
		&azidentity.ClientCertificateCredentialOptions{
			ClientOptions: azcore.ClientOptions{
				Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: host},
				Transport: &http.Client{Transport: tr},
			},
			DisableInstanceDiscovery: true, // entratest, not login.microsoftonline.com
		}, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	user, _, err := p.CredentialsProviderContext(context.Background())
	fmt.Println("username:", user, err)
	// Output: username: 11111111-2222-3333-4444-555555555555 <nil>
}
