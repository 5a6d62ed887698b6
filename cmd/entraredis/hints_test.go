package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/entraredis/entraredis/provider"
)

// Failures that cannot be reproduced on loopback (DNS, a cache without Entra authentication...) are
// checked here on the errors they produce; the others are reproduced end to end in
// TestCheckFailureHints and, for each credential against entratest's Entra, TestCheckEveryCredential.

func TestTokenHints(t *testing.T) {
	tests := []struct {
		name string
		kind credKind
		err  error
		want []string
	}{
		{"no oid", credMI, fmt.Errorf("x: %w", provider.ErrNoUsername), []string{hintNoOID}},
		{"bad secret", credSecret, errors.New("ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret provided."), []string{hintBadSecret}},
		{"app not found", credSecret, errors.New("AADSTS700016: Application with identifier 'x' was not found in the directory"), []string{hintAppNotFound}},
		{"tenant not found", credCert, errors.New("AADSTS90002: Tenant 'x' not found."), []string{hintTenant}},
		{"federation mismatch", credWorkload, errors.New("AADSTS70021: No matching federated identity record found for presented assertion."), []string{hintFederation}},
		{"federated audience", credWorkload, errors.New("AADSTS700212: No matching federated identity record found for presented assertion audience 'api://x'."), []string{hintFederation}},
		{"certificate not registered", credCert, errors.New("AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."), []string{hintCertRejected}},
		{"assertion expired", credWorkload, errors.New("AADSTS700024: Client assertion is not within its valid time range."), []string{hintAssertionTime}},
		{"App Service unknown identity", credMI, errors.New(`RESPONSE 400: {"message":"No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.","statusCode":400}`), []string{hintMINotFound}},
		{"workload not configured", credWorkload, errors.New("WorkloadIdentityCredential: no client ID specified. Check pod configuration or set ClientID in the options"), []string{hintWorkload}},
		{"IMDS probe timed out", credMI, errors.New("ManagedIdentityCredential: managed identity timed out. See https://aka.ms/azsdk/go/identity/troubleshoot#dac"), []string{hintIMDS}},
		{"IMDS network error", credMI, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}, []string{hintIMDS}},
		{"IMDS unknown identity", credMI, errors.New("ManagedIdentityCredential authentication failed. the requested identity isn't assigned to this resource"), []string{hintMINotFound}},
		{"IMDS identity not found (400 body)", credMI, errors.New(`RESPONSE 400: {"error":"invalid_request","error_description":"Identity not found"}`), []string{hintMINotFound}},
		{"default chain, CLI not logged in", credDefault, errors.New("DefaultAzureCredential: failed to acquire a token.\nAzureCLICredential: ERROR: Please run 'az login' to setup account."), []string{hintCLINotLoggedIn, hintDefaultChain}},
		{"default chain, nothing", credDefault, errors.New("DefaultAzureCredential: failed to acquire a token."), []string{hintDefaultChain}},
		{"slow identity provider", credSecret, fmt.Errorf("provider: no valid token: %w", context.DeadlineExceeded), []string{hintTokenTimeout}},
		{"unknown", credSecret, errors.New("something else"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tokenHints(tt.kind, tt.err))
		})
	}
}

func TestConnectHints(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name      string
		err       error
		handshake bool
		want      []string
	}{
		{"DNS", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "x.redis.cache.windows.net", IsNotFound: true}}, false, []string{hintDNS}},
		{"TCP timeout", timeout, false, []string{hintConnectTimeout}},
		{"TLS timeout", fmt.Errorf("handshake: %w", context.DeadlineExceeded), true, []string{hintTLSTimeout}},
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false, []string{hintRefused}},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true, []string{hintNotTLS}},
		{"unknown CA", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true, []string{hintUnknownCA}},
		{"host name", &tls.CertificateVerificationError{Err: x509.HostnameError{Host: "10.0.0.4", Certificate: &x509.Certificate{}}}, true, []string{hintHostname}},
		{"expired", x509.CertificateInvalidError{Reason: x509.Expired}, true, []string{hintCertTime}},
		{"reset in handshake", os.NewSyscallError("read", syscall.ECONNRESET), true, []string{hintTLSClosed}},
		{"EOF in handshake", io.EOF, true, []string{hintTLSClosed}},
		{"TLS alert", errors.New("remote error: tls: protocol version not supported"), true, []string{hintTLSClosed}},
		{"other", errors.New("something else"), false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, connectHints(tt.err, tt.handshake))
		})
	}
}

// redisErr is shaped like go-redis's proto.RedisError.
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

func TestReplyHints(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"NOPERM", &replyError{msg: "NOPERM User x has no permissions to run the 'set' command"}, []string{hintNoPerm}},
		{"NOPERM via go-redis", fmt.Errorf("wrapped: %w", redisErr("NOPERM this user has no permissions to access one of the keys used as arguments")), []string{hintNoPerm}},
		{"Azure WRONGPASS", &replyError{msg: "ERR WRONGPASS invalid username-password pair"}, []string{hintWrongPass}},
		{"Redis WRONGPASS", redisErr("WRONGPASS invalid username-password pair or user is disabled."), []string{hintWrongPass}},
		{"invalid password", &replyError{msg: "ERR invalid password"}, []string{hintWrongPass}},
		{"Entra not enabled", &replyError{msg: "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"}, []string{hintNoPassword}},
		{"NOAUTH", &replyError{msg: "NOAUTH Authentication required."}, []string{hintNoAuth}},
		{"not Redis", fmt.Errorf("x: %w", errProtocol), []string{hintNotRedis}},
		{"reply timeout", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, []string{hintReplyTimeout}},
		{"closed", io.EOF, []string{hintClosed}},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, []string{hintClosed}},
		{"other reply", &replyError{msg: "ERR unknown command"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, replyHints(tt.err))
		})
	}
}
