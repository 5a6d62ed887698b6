package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/entraredis/entraredis/internal/envvar"
	"github.com/entraredis/entraredis/provider/certcred"
)

// credKind is a --credential value.
type credKind string

const (
	credAuto     credKind = "" // chosen from Service Connector's variables, as provider.FromEnv does
	credDefault  credKind = "default"
	credMI       credKind = "mi"
	credWorkload credKind = "workload"
	credSecret   credKind = "secret"
	credCert     credKind = "cert"
	credCLI      credKind = "cli"
)

// credConfig is what selects and configures a credential.
type credConfig struct {
	kind     credKind
	clientID string
	tenantID string
	certPath string
	getenv   func(string) string
}

// errCredUsage reports a credential configuration that cannot work; its text says what to set.
var errCredUsage = errors.New("credential configuration")

// newCredential builds the credential and describes it in words for the report. It does no I/O
// beyond reading a certificate file.
func newCredential(cc credConfig) (azcore.TokenCredential, string, credKind, error) {
	kind := cc.kind
	secret := cc.getenv(envvar.ClientSecret)
	if secret == "" {
		secret = cc.getenv("AZURE_CLIENT_SECRET")
	}
	if kind == credAuto {
		switch {
		case secret != "":
			kind = credSecret
		case cc.clientID != "":
			kind = credMI
		default:
			kind = credDefault
		}
	}
	need := func(what, flagName, env string, v string) error {
		if v == "" {
			return fmt.Errorf("%w: --credential %s needs %s: pass --%s or set %s", errCredUsage, kind, what, flagName, env)
		}
		return nil
	}
	var (
		cred azcore.TokenCredential
		desc string
		err  error
		co   azcore.ClientOptions
		// An authority other than the public cloud's (AZURE_AUTHORITY_HOST, which azidentity honours:
		// a sovereign cloud, Azure Stack, a local emulator) is taken as given: instance discovery
		// would ask login.microsoftonline.com to vouch for it, which fails off the public cloud.
		noDiscovery bool
	)
	if h := cc.getenv("AZURE_AUTHORITY_HOST"); h != "" {
		co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: h}
		noDiscovery = true
	}
	switch kind {
	case credDefault:
		desc = "DefaultAzureCredential (environment, workload identity, managed identity, Azure CLI, ...)"
		if cc.clientID != "" {
			// DefaultAzureCredential takes a user-assigned identity only from AZURE_CLIENT_ID.
			desc += "; --client-id is not used by it: pass --credential mi, or set AZURE_CLIENT_ID"
		}
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{TenantID: cc.tenantID, ClientOptions: co, DisableInstanceDiscovery: noDiscovery})
	case credMI:
		o := &azidentity.ManagedIdentityCredentialOptions{}
		desc = "managed identity (system-assigned)"
		if cc.clientID != "" {
			o.ID = azidentity.ClientID(cc.clientID)
			desc = "managed identity (user-assigned, client ID " + cc.clientID + ")"
		}
		cred, err = azidentity.NewManagedIdentityCredential(o)
	case credWorkload:
		desc = "workload identity (AKS: AZURE_FEDERATED_TOKEN_FILE)"
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientID: cc.clientID, TenantID: cc.tenantID, ClientOptions: co, DisableInstanceDiscovery: noDiscovery,
		})
		if err != nil {
			err = fmt.Errorf("%w; %s", err, hintWorkload)
		}
	case credSecret:
		if err = errors.Join(need("a tenant ID", "tenant-id", envvar.TenantID, cc.tenantID),
			need("a client ID", "client-id", envvar.ClientID, cc.clientID)); err != nil {
			return nil, "", kind, err
		}
		if secret == "" {
			return nil, "", kind, fmt.Errorf("%w: --credential secret reads the secret from %s (or AZURE_CLIENT_SECRET), which is empty; it is never taken as a flag so that it stays out of shell history", errCredUsage, envvar.ClientSecret)
		}
		desc = "service principal with a client secret (client ID " + cc.clientID + ")"
		cred, err = azidentity.NewClientSecretCredential(cc.tenantID, cc.clientID, secret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: noDiscovery})
	case credCert:
		if err = errors.Join(need("a tenant ID", "tenant-id", envvar.TenantID, cc.tenantID),
			need("a client ID", "client-id", envvar.ClientID, cc.clientID),
			need("a certificate file", "cert", "AZURE_CLIENT_CERTIFICATE_PATH", cc.certPath)); err != nil {
			return nil, "", kind, err
		}
		data, rerr := os.ReadFile(cc.certPath)
		if rerr != nil {
			return nil, "", kind, fmt.Errorf("%w: reading the certificate: %w", errCredUsage, rerr)
		}
		var pw []byte
		if s := cc.getenv("AZURE_CLIENT_CERTIFICATE_PASSWORD"); s != "" {
			pw = []byte(s)
		}
		certs, key, perr := certcred.ParseCertificates(data, pw)
		if perr != nil {
			return nil, "", kind, fmt.Errorf("%w: %s holds no usable certificate and private key (PEM or PFX; a PFX password goes in AZURE_CLIENT_CERTIFICATE_PASSWORD): %w", errCredUsage, cc.certPath, perr)
		}
		desc = "service principal with a certificate (client ID " + cc.clientID + ")"
		cred, err = azidentity.NewClientCertificateCredential(cc.tenantID, cc.clientID, certs, key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: noDiscovery})
	case credCLI:
		desc = "Azure CLI (az login)"
		cred, err = azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{TenantID: cc.tenantID})
	default:
		return nil, "", kind, fmt.Errorf("%w: unknown --credential %q: use default, mi, workload, secret, cert or cli", errCredUsage, string(kind))
	}
	if err != nil {
		// azidentity's own text names ClientID or TokenFilePath options a user of this command
		// has no way to set; say which variables and flags instead.
		if hints := tokenHints(kind, err); len(hints) > 0 && kind == credWorkload {
			return nil, "", kind, fmt.Errorf("%w: %w\n  fix: %s", errCredUsage, err, strings.Join(hints, "\n  fix: "))
		}
		return nil, "", kind, fmt.Errorf("%w: %w", errCredUsage, err)
	}
	if noDiscovery && kind != credMI && kind != credCLI {
		desc += "; authority " + co.Cloud.ActiveDirectoryAuthorityHost + " (AZURE_AUTHORITY_HOST, instance discovery off)"
	}
	return cred, desc, kind, nil
}
