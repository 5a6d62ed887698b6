package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/entraredis/entraredis/internal/envvar"
	"github.com/entraredis/entraredis/jwtutil"
	"github.com/entraredis/entraredis/provider"
)

// The advice check prints under a failed step. Each is plain words: what is wrong and what to do.
const (
	hintCLINotLoggedIn = "the Azure CLI is not logged in: run \"az login\" (and \"az account set --subscription ...\"), or choose another --credential"
	hintCLIMissing     = "the Azure CLI (az) is not installed or not on PATH: install it and run \"az login\", or choose another --credential"
	hintMINotFound     = "user-assigned managed identity not found: the client ID is wrong (it is the identity's client ID, not its object ID) or that identity is not attached to this VM, App Service or container; check --client-id / " + envvar.ClientID
	hintIMDS           = "the managed identity endpoint (IMDS, 169.254.169.254, or App Service's IDENTITY_ENDPOINT) does not answer: this is not an Azure resource with a managed identity enabled; on a development machine run \"az login\" and use --credential cli, or use secret, cert or workload"
	hintWorkload       = "workload identity is not set up here: it needs AZURE_CLIENT_ID (or --client-id), AZURE_TENANT_ID (or --tenant-id) and AZURE_FEDERATED_TOKEN_FILE (a readable service account token file), which the AKS workload identity webhook sets in a pod labelled azure.workload.identity/use=true whose service account is annotated azure.workload.identity/client-id"
	hintBadSecret      = "the client secret is wrong or has expired: create a new one for the app registration and update " + envvar.ClientSecret
	hintAppNotFound    = "no application with this client ID in this tenant: check --client-id and --tenant-id (" + envvar.ClientID + ", " + envvar.TenantID + ")"
	hintTenant         = "the tenant is not found: check --tenant-id / " + envvar.TenantID
	hintFederation     = "the federated credential does not match this service account: check the app's federated identity credential (issuer, subject system:serviceaccount:<namespace>:<name>)"
	hintCertRejected   = "Entra does not accept this certificate (AADSTS700027): it is not the one uploaded to the app registration, or it has expired; upload this certificate's public part (Certificates & secrets) or point --cert at the registered one"
	hintAssertionTime  = "the client assertion is outside its validity (AADSTS700024): with workload identity the token in AZURE_FEDERATED_TOKEN_FILE has expired (the kubelet refreshes the projected token: check the pod's service-account token volume); otherwise check this machine's clock"
	hintDefaultChain   = "no credential of DefaultAzureCredential's chain worked (see each one's error above): on Azure, enable a managed identity; on a development machine, run \"az login\"; or choose one with --credential"
	hintTokenTimeout   = "the identity provider did not answer in time: check outbound access to login.microsoftonline.com (or the managed identity endpoint), or raise --timeout"
	hintNoOID          = "the token has no oid claim, so the username (the identity's object ID) is unknown: pass --username with the identity's object ID"

	hintDNS            = "the host name does not resolve: check --host / AZURE_REDIS_HOST (<name>.redis.cache.windows.net or <name>.<region>.redis.azure.net); behind a private endpoint it resolves only inside the virtual network (privatelink DNS zone)"
	hintRefused        = "nothing listens on this port: use 6380 for Azure Cache for Redis and 10000 for Azure Managed Redis (TLS); the non-TLS port 6379 is disabled by default"
	hintConnectTimeout = "no answer within the timeout: a firewall or network security group drops the traffic, the cache's firewall rules exclude this address, or public access is disabled (private endpoint: run this from inside the virtual network); also check the port, 6380 or 10000"
	hintTLSTimeout     = "the port accepted the connection but no TLS handshake completed in time: check that it is the cache's TLS port (6380, or 10000 for Azure Managed Redis) and that no proxy or firewall holds the connection"
	hintNotTLS         = "the server answered without TLS: Azure requires TLS; use port 6380 (Azure Cache for Redis) or 10000 (Azure Managed Redis), not a plain-text port"
	hintUnknownCA      = "the server's certificate is not signed by a CA this machine trusts: update the system's CA certificates (ca-certificates), add the CA of a TLS-inspecting proxy, or, for a test endpoint, pass --ca-file"
	hintHostname       = "the certificate is not for this host name: connect with the cache's own name (not an IP address or a custom CNAME)"
	hintCertTime       = "the certificate is expired or not yet valid for this machine: check the machine's clock"
	hintTLSClosed      = "the server closed the connection during the TLS handshake: TLS 1.2 or later is required, and a firewall may reset TLS connections"

	hintWrongPass    = "the cache refused the token (WRONGPASS): the username must be the identity's object ID (its oid claim, not the client ID); the token must be for https://redis.azure.com and not expired; and Microsoft Entra authentication must be enabled on the cache with an access policy assignment for this identity"
	hintNoPassword   = "the cache does not expect a token: enable Microsoft Entra authentication on it (Azure portal: the cache's Authentication blade), then assign a data access policy to this identity"
	hintNoPerm       = "the identity is authenticated but lacks rights (NOPERM): assign it a data access policy that allows this command and key pattern (\"Data Contributor\" or a custom policy), via the cache's Data Access Configuration or \"az redis access-policy-assignment create\" (Azure Managed Redis: \"az redisenterprise database access-policy-assignment create\")"
	hintNoAuth       = "the server still asks for authentication (NOAUTH): the AUTH step did not take effect; retry, and check that nothing between this machine and the cache rewrites traffic"
	hintClosed       = "the server closed the connection: an expired token, the cache's connection limit or a firewall idle timeout"
	hintReplyTimeout = "the server did not reply in time: the cache may be overloaded (check server load and CPU) or the network drops packets; raise --timeout to tell the two apart"
	hintNotRedis     = "the reply is not Redis's protocol: this port is not a Redis endpoint"
)

// Needles in credential errors; azidentity's texts are not contractual, hence tolerant matching.
var (
	cliMissing     = []string{"executable not found", "azure cli not found"} // newer azidentity; v1.9 (go.mod's floor)
	cliNotLoggedIn = []string{"az login", "please run 'az login'", "aadsts700082", "refresh token has expired", "no subscription found"}
	miNotFound     = []string{"isn't assigned to this resource", "is not assigned to this resource", "identity not found", "not assigned to this resource",
		"no user assigned or delegated managed identity found"} // App Service's answer
	workloadUnset = []string{"no client id", "no tenant id", "token file", "azure_federated_token_file", "assertion file", "no such file"}
	unreachable   = []string{"connection refused", "no route to host", "network is unreachable", "i/o timeout", "timed out", "deadline exceeded", "169.254.169.254", "no response from the imds", "connect: "}
)

func containsAny(s string, needles []string) bool {
	for _, n := range needles {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}

// tokenHints explains a failure to get a token with a credential of kind.
func tokenHints(kind credKind, err error) []string {
	if errors.Is(err, provider.ErrNoUsername) || errors.Is(err, jwtutil.ErrNoObjectID) {
		return []string{hintNoOID}
	}
	msg := strings.ToLower(err.Error())
	var hints []string
	add := func(h string) {
		for _, x := range hints {
			if x == h {
				return
			}
		}
		hints = append(hints, h)
	}
	mi := kind == credMI || (kind == credDefault && strings.Contains(msg, "managedidentitycredential"))
	switch {
	case strings.Contains(msg, "aadsts7000215") || strings.Contains(msg, "invalid client secret"):
		add(hintBadSecret)
	case strings.Contains(msg, "aadsts700016"):
		add(hintAppNotFound)
	case strings.Contains(msg, "aadsts90002") || strings.Contains(msg, "aadsts900023"):
		add(hintTenant)
	case strings.Contains(msg, "aadsts70021") || strings.Contains(msg, "aadsts700211") || strings.Contains(msg, "aadsts700212") || strings.Contains(msg, "aadsts700213"):
		add(hintFederation)
	case strings.Contains(msg, "aadsts700027"):
		add(hintCertRejected)
	case strings.Contains(msg, "aadsts700024"):
		add(hintAssertionTime)
	}
	if (kind == credCLI || kind == credDefault) && containsAny(msg, cliNotLoggedIn) {
		add(hintCLINotLoggedIn)
	}
	if kind == credCLI && containsAny(msg, cliMissing) {
		add(hintCLIMissing)
	}
	if kind == credWorkload && containsAny(msg, workloadUnset) {
		add(hintWorkload)
	}
	if mi && containsAny(msg, miNotFound) {
		add(hintMINotFound)
	} else if kind == credMI && (containsAny(msg, unreachable) || errors.Is(err, context.DeadlineExceeded) || isNetError(err)) {
		add(hintIMDS)
	}
	if kind == credDefault {
		add(hintDefaultChain)
	}
	if len(hints) == 0 && errors.Is(err, context.DeadlineExceeded) {
		add(hintTokenTimeout)
	}
	return hints
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// connectHints explains a failure to open the TLS connection; handshake says whether TCP had
// connected.
func connectHints(err error, handshake bool) []string {
	var (
		dnsErr  *net.DNSError
		recErr  tls.RecordHeaderError
		caErr   x509.UnknownAuthorityError
		hostErr x509.HostnameError
		certErr x509.CertificateInvalidError
		ne      net.Error
	)
	switch {
	case errors.As(err, &dnsErr):
		return []string{hintDNS}
	case errors.Is(err, syscall.ECONNREFUSED):
		return []string{hintRefused}
	case errors.As(err, &recErr):
		return []string{hintNotTLS}
	case errors.As(err, &caErr):
		return []string{hintUnknownCA}
	case errors.As(err, &hostErr):
		return []string{hintHostname}
	case errors.As(err, &certErr) && certErr.Reason == x509.Expired:
		return []string{hintCertTime}
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		if handshake {
			return []string{hintTLSTimeout}
		}
		return []string{hintConnectTimeout}
	case handshake && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return []string{hintTLSClosed}
	case handshake && strings.Contains(err.Error(), "tls:"):
		return []string{hintTLSClosed}
	}
	return nil
}

// replyHints explains a failed command: AUTH, PING or a data command.
func replyHints(err error) []string {
	var re interface {
		error
		RedisError()
	}
	if errors.As(err, &re) {
		msg := strings.ToUpper(re.Error())
		switch {
		case strings.HasPrefix(msg, "NOPERM") || strings.HasPrefix(msg, "ERR NOPERM"):
			return []string{hintNoPerm}
		case strings.Contains(msg, "WRONGPASS") || strings.Contains(msg, "INVALID USERNAME-PASSWORD") || strings.Contains(msg, "INVALID PASSWORD"):
			return []string{hintWrongPass}
		case strings.Contains(msg, "WITHOUT ANY PASSWORD CONFIGURED") || strings.Contains(msg, "NO PASSWORD IS SET"):
			return []string{hintNoPassword}
		case strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "ERR NOAUTH"):
			return []string{hintNoAuth}
		}
		return nil
	}
	var ne net.Error
	switch {
	case errors.Is(err, errProtocol):
		return []string{hintNotRedis}
	case errors.As(err, &ne) && ne.Timeout():
		return []string{hintReplyTimeout}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed):
		return []string{hintClosed}
	}
	return nil
}

// errText formats an error for the report on one or more indented lines.
func errText(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "\n"+strings.Repeat(" ", 18))
}
