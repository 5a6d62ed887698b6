package provider_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider"
)

// The examples of the identity constructors run the real azidentity credentials against
// entratest, which stands in for Entra on loopback: its managed-identity endpoint (App Service's
// protocol, through IDENTITY_ENDPOINT and IDENTITY_HEADER) or its token endpoint over TLS. On
// Azure, the options that point them there (entra below) are left out: nil is enough.

// entra is entratest's issuer serving Entra's token endpoint over TLS, and the client options that
// reach it.
type entra struct {
	iss *entratest.Issuer
	co  azcore.ClientOptions
	tr  *http.Transport
}

func newEntra() *entra {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{ObjectID: "11111111-2222-3333-4444-555555555555"})
	if err != nil {
		panic(err)
	}
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
	tr := &http.Transport{TLSClientConfig: ca.ClientTLSConfig()}
	return &entra{iss: iss, tr: tr, co: azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: host},
		Transport: &http.Client{Transport: tr},
	}}
}

func (e *entra) Close() { e.tr.CloseIdleConnections(); _ = e.iss.Close() }

// username fetches p's first token and returns the username it gives go-redis.
func username(p *provider.Provider) string {
	user, _, err := p.CredentialsProviderContext(context.Background())
	if err != nil {
		return err.Error()
	}
	return user
}

// A system-assigned managed identity; a user-assigned one with
// &azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID("<client ID>")} (or
// azidentity.ObjectID, azidentity.ResourceID).
func ExampleNewManagedIdentity() {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{ObjectID: "11111111-2222-3333-4444-555555555555"})
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	restore, err := iss.ExportManagedIdentityEnv() // on Azure, the platform sets these
	if err != nil {
		panic(err)
	}
	defer restore()

	p, err := provider.NewManagedIdentity(nil, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	fmt.Println("username:", username(p))
	// Output: username: 11111111-2222-3333-4444-555555555555
}

// DefaultAzureCredential: environment, workload identity, managed identity, then the developer
// tools' logins. Here it finds entratest's managed-identity endpoint.
func ExampleNewDefault() {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{ObjectID: "11111111-2222-3333-4444-555555555555"})
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	restore, err := iss.ExportManagedIdentityEnv()
	if err != nil {
		panic(err)
	}
	defer restore()

	p, err := provider.NewDefault(nil, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	fmt.Println("username:", username(p))
	// Output: username: 11111111-2222-3333-4444-555555555555
}

// AKS workload identity. In a pod, the webhook sets AZURE_CLIENT_ID, AZURE_TENANT_ID and
// AZURE_FEDERATED_TOKEN_FILE, and provider.NewWorkloadIdentity(nil, nil) is all it takes; here
// entratest mints the service-account token the kubelet would write.
func ExampleNewWorkloadIdentity() {
	e := newEntra()
	defer e.Close()
	e.iss.AddFederatedCredential(entratest.FederatedCredential{Subject: "system:serviceaccount:shop:cart"})
	sat, _, _, err := e.iss.MintFederated(entratest.FederatedTokenOptions{Subject: "system:serviceaccount:shop:cart"})
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "azure-identity-token")
	if err := os.WriteFile(file, []byte(sat), 0o600); err != nil {
		panic(err)
	}

	p, err := provider.NewWorkloadIdentity(&azidentity.WorkloadIdentityCredentialOptions{
		ClientID: e.iss.AppID(), TenantID: e.iss.TenantID(), TokenFilePath: file,
		ClientOptions: e.co, DisableInstanceDiscovery: true, // entratest, not login.microsoftonline.com
	}, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	fmt.Println("username:", username(p))
	// Output: username: 11111111-2222-3333-4444-555555555555
}

// A service principal and its client secret (keep the secret out of code: read it from the
// environment or a secret store).
func ExampleNewClientSecret() {
	e := newEntra()
	defer e.Close()
	e.iss.SetClientSecret("s3cret")

	p, err := provider.NewClientSecret(e.iss.TenantID(), e.iss.AppID(), "s3cret",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: e.co, DisableInstanceDiscovery: true}, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	fmt.Println("username:", username(p))
	// Output: username: 11111111-2222-3333-4444-555555555555
}
