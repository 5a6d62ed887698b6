package entratest_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/entraredis/entraredis/entratest"
)

// Workload identity without a cluster: the issuer mints the service-account token a pod would
// find in AZURE_FEDERATED_TOKEN_FILE, and its token endpoint exchanges it for an access token, as
// Entra does for a federated identity credential. The same authority serves secrets
// (SetClientSecret) and certificates (AddCertificate).
func ExampleIssuer_ServeAuthority() {
	iss, err := entratest.NewIssuer(nil)
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
	iss.AddFederatedCredential(entratest.FederatedCredential{Subject: "system:serviceaccount:shop:cart"})

	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "azure-identity-token")
	sat, _, _, err := iss.MintFederated(entratest.FederatedTokenOptions{Subject: "system:serviceaccount:shop:cart"})
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(file, []byte(sat), 0o600); err != nil {
		panic(err)
	}

	tr := &http.Transport{TLSClientConfig: ca.ClientTLSConfig()}
	defer tr.CloseIdleConnections()
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientID: iss.AppID(), TenantID: iss.TenantID(), TokenFilePath: file,
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: host},
			Transport: &http.Client{Transport: tr},
		},
		DisableInstanceDiscovery: true, // it would ask login.microsoftonline.com about the host
	})
	if err != nil {
		panic(err)
	}
	tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{entratest.Scope}})
	fmt.Println(err == nil && strings.Count(tok.Token, ".") == 2)

	// A service account without a federated credential is refused as Entra refuses it.
	other, _, _, _ := iss.MintFederated(entratest.FederatedTokenOptions{Subject: "system:serviceaccount:shop:other"})
	_ = os.WriteFile(file, []byte(other), 0o600)
	cred2, _ := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientID: iss.AppID(), TenantID: iss.TenantID(), TokenFilePath: file,
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: host},
			Transport: &http.Client{Transport: tr},
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
		DisableInstanceDiscovery: true,
	})
	_, err = cred2.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{entratest.Scope}})
	fmt.Println(strings.Contains(fmt.Sprint(err), "AADSTS700213"))
	// Output:
	// true
	// true
}
