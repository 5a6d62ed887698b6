package provider

import (
	"fmt"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/entraredis/entraredis/internal/envvar"
)

// Constructors for each kind of identity, as in the Azure samples. Each takes azidentity's own options
// (nil for defaults) and the provider's (nil for defaults), and does no network I/O. A service
// principal with a certificate file: package provider/certcred (kept apart so that no other
// program links certificate parsing).

// NewDefault uses azidentity.DefaultAzureCredential: environment, workload identity, managed identity,
// then the developer tools' logins.
func NewDefault(credOpts *azidentity.DefaultAzureCredentialOptions, opts *Options) (*Provider, error) {
	return newWith(azidentity.NewDefaultAzureCredential(credOpts))(opts)
}

// NewManagedIdentity uses a managed identity: system-assigned when credOpts or credOpts.ID is nil;
// user-assigned with credOpts.ID set to azidentity.ClientID, azidentity.ObjectID or azidentity.ResourceID.
func NewManagedIdentity(credOpts *azidentity.ManagedIdentityCredentialOptions, opts *Options) (*Provider, error) {
	return newWith(azidentity.NewManagedIdentityCredential(credOpts))(opts)
}

// NewWorkloadIdentity uses Kubernetes workload identity (AZURE_CLIENT_ID, AZURE_TENANT_ID and
// AZURE_FEDERATED_TOKEN_FILE, as the AKS webhook sets them, unless credOpts says otherwise).
func NewWorkloadIdentity(credOpts *azidentity.WorkloadIdentityCredentialOptions, opts *Options) (*Provider, error) {
	return newWith(azidentity.NewWorkloadIdentityCredential(credOpts))(opts)
}

// NewClientSecret uses a service principal and its client secret.
func NewClientSecret(tenantID, clientID, secret string, credOpts *azidentity.ClientSecretCredentialOptions, opts *Options) (*Provider, error) {
	return newWith(azidentity.NewClientSecretCredential(tenantID, clientID, secret, credOpts))(opts)
}

// FromEnv chooses the identity from Service Connector's variables, as the Azure samples do: with
// AZURE_REDIS_CLIENTSECRET set, a service principal (AZURE_REDIS_CLIENTID and AZURE_REDIS_TENANTID
// are then required); with AZURE_REDIS_CLIENTID alone, that user-assigned managed identity; with
// none, DefaultAzureCredential.
func FromEnv(opts *Options) (*Provider, error) { return fromEnv(os.Getenv, opts) }

func fromEnv(getenv func(string) string, opts *Options) (*Provider, error) {
	clientID, tenantID, secret := getenv(envvar.ClientID), getenv(envvar.TenantID), getenv(envvar.ClientSecret)
	switch {
	case secret != "":
		for _, v := range [][2]string{{envvar.ClientID, clientID}, {envvar.TenantID, tenantID}} {
			if v[1] == "" {
				return nil, fmt.Errorf("provider: %s is set but %s is empty: a service principal needs both; set it, or unset %s to use a managed identity",
					envvar.ClientSecret, v[0], envvar.ClientSecret)
			}
		}
		return NewClientSecret(tenantID, clientID, secret, nil, opts)
	case clientID != "":
		return NewManagedIdentity(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(clientID)}, opts)
	default:
		return NewDefault(nil, opts)
	}
}

// newWith adapts an azidentity constructor's two results to New.
func newWith[C azcore.TokenCredential](cred C, err error) func(*Options) (*Provider, error) {
	return func(opts *Options) (*Provider, error) {
		if err != nil {
			return nil, fmt.Errorf("provider: creating the credential: %w", err)
		}
		return New(cred, opts)
	}
}
