package entratest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The App Service managed-identity protocol, as azidentity v1.15 (through MSAL) speaks it: a GET to
// IDENTITY_ENDPOINT with the secret of IDENTITY_HEADER in X-IDENTITY-HEADER, api-version
// 2019-08-01, resource, and optionally one of client_id, object_id or mi_res_id.
const (
	miPath       = "/msi/token"
	miAPIVersion = "2019-08-01"
	miHeader     = "X-IDENTITY-HEADER"
)

// ServeManagedIdentity starts (once; later calls return the same values) an HTTP endpoint on
// 127.0.0.1 that answers token requests with the App Service managed-identity protocol. Point
// IDENTITY_ENDPOINT at endpoint and IDENTITY_HEADER at header (SetManagedIdentityEnv does it) and
// the real azidentity.ManagedIdentityCredential gets its tokens from the issuer. Close stops it.
//
// The endpoint checks what App Service checks: 401 without the right header, 400 for a wrong
// api-version or a missing resource. Without a selector it answers for the system-assigned
// identity (the issuer's AppID and ObjectID); with client_id, object_id (or principal_id) or
// mi_res_id, for that identity: the system-assigned one or one added with AddManagedIdentity, each
// token with that identity's oid and appid. An identity not assigned gets App Service's 400 "No
// User Assigned or Delegated Managed Identity found". Injected faults answer with their status
// (429 with Retry-After).
//
// Beware of a cache shared by the whole process: azidentity (MSAL) keeps managed-identity tokens
// in a package-level cache keyed by identity and resource, not by endpoint, and serves a cached
// token until 5 minutes before it expires. Tokens living longer than 5 minutes thus leak from one
// test's issuer to another test in the same binary; keep lifetimes under 5 minutes (each call is
// then a request to this endpoint) or use a distinct user-assigned ID per issuer.
func (i *Issuer) ServeManagedIdentity() (endpoint, header string, err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed.Load() {
		return "", "", ErrClosed
	}
	if i.miEndpoint != "" {
		return i.miEndpoint, i.miHeader, nil
	}
	var secret [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", "", fmt.Errorf("entratest: random identity header: %w", err)
	}
	mux := http.NewServeMux()
	hdr := hex.EncodeToString(secret[:])
	mux.HandleFunc(miPath, func(w http.ResponseWriter, r *http.Request) { i.serveMI(w, r, hdr) })
	addr, closeFn, err := serveHTTP(mux, nil)
	if err != nil {
		return "", "", err
	}
	i.closers = append(i.closers, closeFn)
	i.miEndpoint, i.miHeader = "http://"+addr+miPath, hdr
	return i.miEndpoint, i.miHeader, nil
}

// SetManagedIdentityEnv starts the managed-identity endpoint and sets, for the rest of the test
// (tb.Setenv), the environment under which azidentity.ManagedIdentityCredential uses it. Variables
// that would select another managed-identity source are cleared. Like tb.Setenv, it cannot be used
// in parallel tests.
func (i *Issuer) SetManagedIdentityEnv(tb testing.TB) {
	tb.Helper()
	endpoint, header, err := i.ServeManagedIdentity()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Setenv("IDENTITY_ENDPOINT", endpoint)
	tb.Setenv("IDENTITY_HEADER", header)
	for _, v := range []string{"IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"} {
		tb.Setenv(v, "")
	}
}

// serveHTTP serves h on a fresh 127.0.0.1 port (TLS when cfg is not nil) until the returned close
// function is called, which returns once the server and every handler have finished, so that no
// goroutine outlives Close.
func serveHTTP(h http.Handler, cfg *tls.Config) (addr string, closeFn func() error, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("entratest: listen: %w", err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	// Handlers are counted under a lock rather than with a WaitGroup, whose Add must not race its
	// Wait: a request can still reach a handler while the server closes.
	var (
		mu      sync.Mutex
		idle    = sync.NewCond(&mu)
		running int
		closing bool
	)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if closing {
				mu.Unlock()
				http.Error(w, "entratest: closing", http.StatusServiceUnavailable)
				return
			}
			running++
			mu.Unlock()
			defer func() {
				mu.Lock()
				running--
				idle.Broadcast()
				mu.Unlock()
			}()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // silent by default, like the rest of the package
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	return l.Addr().String(), func() error {
		mu.Lock()
		closing = true
		mu.Unlock()
		// Close cancels the contexts of running handlers (their connections close), so the
		// wait is short.
		err := srv.Close()
		<-done
		mu.Lock()
		for running > 0 {
			idle.Wait()
		}
		mu.Unlock()
		return err
	}, nil
}

// oauthError writes an error body shaped like Entra's.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// writeFault answers an injected fault.
func writeFault(w http.ResponseWriter, fe *FaultError) {
	if fe.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((fe.RetryAfter+time.Second-1)/time.Second)))
	}
	oauthError(w, fe.StatusCode, "temporarily_unavailable", "entratest: injected failure")
}

func (i *Issuer) serveMI(w http.ResponseWriter, r *http.Request, secret string) {
	reject := func(status int, code, desc string) {
		i.rejected.Add(1)
		oauthError(w, status, code, desc)
	}
	if r.Method != http.MethodGet {
		reject(http.StatusMethodNotAllowed, "invalid_request", "use GET")
		return
	}
	if r.Header.Get(miHeader) != secret {
		reject(http.StatusUnauthorized, "unauthorized", "missing or wrong "+miHeader+" header")
		return
	}
	q := r.URL.Query()
	if v := q.Get("api-version"); v != miAPIVersion {
		reject(http.StatusBadRequest, "invalid_request", "api-version must be "+miAPIVersion)
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		reject(http.StatusBadRequest, "invalid_request", "resource is required")
		return
	}
	selectors := 0
	for _, k := range []string{"client_id", "object_id", "principal_id", "mi_res_id"} {
		if q.Has(k) {
			selectors++
		}
	}
	if selectors > 1 {
		reject(http.StatusBadRequest, "invalid_request", "at most one of client_id, object_id, principal_id, mi_res_id")
		return
	}
	id, ok := i.findIdentity(q)
	if !ok {
		// App Service's answer; its body is not OAuth's.
		i.rejected.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"statusCode":    http.StatusBadRequest,
			"message":       "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
			"correlationId": newCorrelationID(),
		})
		return
	}
	tok, exp, err := i.issueFor(r.Context(), resource, id)
	var fe *FaultError
	switch {
	case errors.As(err, &fe):
		writeFault(w, fe)
		return
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return // the client has gone
	case err != nil:
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    id.ClientID,
	})
}

// ManagedIdentity is a user-assigned managed identity attached to the emulated resource.
type ManagedIdentity struct {
	ClientID   string // its application (client) ID: the appid claim
	ObjectID   string // its object (principal) ID: the oid claim, the Redis username
	ResourceID string // its ARM resource ID, /subscriptions/.../userAssignedIdentities/<name>
}

// AddManagedIdentity attaches a user-assigned identity: the managed-identity endpoint then answers
// requests naming it by client ID, object ID or resource ID with tokens carrying its oid.
func (i *Issuer) AddManagedIdentity(mi ManagedIdentity) {
	i.app.mu.Lock()
	i.app.identities = append(i.app.identities, mi)
	i.app.mu.Unlock()
}

// findIdentity resolves a request's selector: none is the system-assigned identity.
func (i *Issuer) findIdentity(q url.Values) (ManagedIdentity, bool) {
	self := ManagedIdentity{ClientID: i.appid, ObjectID: i.oid}
	objectID := q.Get("object_id")
	if q.Has("principal_id") {
		objectID = q.Get("principal_id")
	}
	match := func(mi ManagedIdentity) bool {
		switch {
		case q.Has("client_id"):
			return mi.ClientID != "" && strings.EqualFold(mi.ClientID, q.Get("client_id"))
		case q.Has("object_id"), q.Has("principal_id"):
			return mi.ObjectID != "" && strings.EqualFold(mi.ObjectID, objectID)
		case q.Has("mi_res_id"):
			return mi.ResourceID != "" && strings.EqualFold(mi.ResourceID, q.Get("mi_res_id"))
		}
		return false
	}
	if !q.Has("client_id") && !q.Has("object_id") && !q.Has("principal_id") && !q.Has("mi_res_id") {
		return self, true
	}
	if match(self) {
		return self, true
	}
	i.app.mu.Lock()
	defer i.app.mu.Unlock()
	for _, mi := range i.app.identities {
		if match(mi) {
			return mi, true
		}
	}
	return ManagedIdentity{}, false
}

func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
