package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/envvar"
	"github.com/entraredis/entraredis/internal/link"
	"github.com/entraredis/entraredis/jwtutil"
	"github.com/entraredis/entraredis/provider"
)

// Service Connector's variables for the cache's address (the identity's are in package provider).
const (
	envHost = envvar.Host
	envPort = envvar.Port
)

// Default ports: Azure Cache for Redis (TLS) and Azure Managed Redis.
const (
	portCache   = 6380
	portManaged = 10000
)

type checkConfig struct {
	host     string
	port     int
	cred     credConfig
	username string
	watch    time.Duration
	every    time.Duration
	timeout  time.Duration
	caFile   string
	insecure bool
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", "check [flags]\n\nDiagnoses an Azure Cache for Redis or Azure Managed Redis with Microsoft Entra ID, step by step:\ntoken, TLS connection, AUTH, PING, SET/GET/DEL of a key entraredis:check:<random>, then a go-redis\nclient built by entraredis.NewClient. Each failed step says how to fix it. Defaults come from\nService Connector's variables (AZURE_REDIS_HOST, AZURE_REDIS_CLIENTID, AZURE_REDIS_TENANTID,\nAZURE_REDIS_CLIENTSECRET).", stderr)
	var cc checkConfig
	var kind string
	fs.StringVar(&cc.host, "host", os.Getenv(envHost), "the cache's host name, or host:port (default $"+envHost+")")
	fs.IntVar(&cc.port, "port", 0, "the TLS port (default $"+envPort+", else 10000 for *.redis.azure.net, else 6380)")
	fs.StringVar(&kind, "credential", "", "default|mi|workload|secret|cert|cli (default: secret when $"+envvar.ClientSecret+" is set, mi with a client ID, else default)")
	fs.StringVar(&cc.cred.clientID, "client-id", os.Getenv(envvar.ClientID), "client ID of a user-assigned managed identity or service principal (default $"+envvar.ClientID+")")
	fs.StringVar(&cc.cred.tenantID, "tenant-id", os.Getenv(envvar.TenantID), "tenant ID (default $"+envvar.TenantID+")")
	fs.StringVar(&cc.cred.certPath, "cert", "", "PEM or PFX file with the service principal's certificate and key (--credential cert)")
	fs.StringVar(&cc.username, "username", "", "Redis username (default: the token's oid claim, which is what Azure expects)")
	fs.DurationVar(&cc.watch, "watch", 0, "stay connected this long after the checks, across token refreshes, reporting each re-AUTH")
	fs.DurationVar(&cc.every, "every", time.Second, "with --watch, time between two rounds of commands")
	fs.DurationVar(&cc.timeout, "timeout", 15*time.Second, "time allowed to each step")
	fs.StringVar(&cc.caFile, "ca-file", "", "PEM file of the CA to trust instead of the system's (test endpoints)")
	fs.BoolVar(&cc.insecure, "insecure-skip-verify", false, "do not verify the server's certificate (never against a real cache)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "entraredis check: unexpected argument %q: flags only\n", fs.Arg(0))
		return exitUsage
	}
	cc.cred.kind = credKind(kind)
	cc.cred.getenv = os.Getenv
	if err := cc.resolveAddr(os.Getenv(envPort)); err != nil {
		fmt.Fprintf(stderr, "entraredis check: %v\n", err)
		return exitUsage
	}
	if cc.timeout <= 0 || cc.every <= 0 {
		fmt.Fprintln(stderr, "entraredis check: --timeout and --every must be positive")
		return exitUsage
	}
	tlsCfg, err := cc.tlsConfig()
	if err != nil {
		fmt.Fprintf(stderr, "entraredis check: %v\n", err)
		return exitUsage
	}
	cred, desc, k, err := newCredential(cc.cred)
	if err != nil {
		fmt.Fprintf(stderr, "entraredis check: %v\n", err)
		return exitUsage
	}
	cc.cred.kind = k
	c := &checker{cfg: cc, tls: tlsCfg, out: &syncWriter{w: stdout}}
	return c.run(ctx, cred, desc)
}

// resolveAddr splits host:port and chooses the default port.
func (cc *checkConfig) resolveAddr(envPortValue string) error {
	if cc.host == "" {
		return fmt.Errorf("no host: pass --host <name>.redis.cache.windows.net or set %s", envHost)
	}
	if h, p, err := net.SplitHostPort(cc.host); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("the port in %q is not a number", cc.host)
		}
		cc.host = h
		if cc.port == 0 {
			cc.port = n
		}
	}
	if cc.port == 0 && envPortValue != "" {
		n, err := strconv.Atoi(envPortValue)
		if err != nil {
			return fmt.Errorf("%s=%q is not a port number", envPort, envPortValue)
		}
		cc.port = n
	}
	if cc.port == 0 {
		cc.port = portCache
		if strings.HasSuffix(strings.ToLower(strings.TrimSuffix(cc.host, ".")), ".redis.azure.net") {
			cc.port = portManaged
		}
	}
	if cc.port < 1 || cc.port > 65535 {
		return fmt.Errorf("port %d is out of range", cc.port)
	}
	return nil
}

func (cc *checkConfig) addr() string { return net.JoinHostPort(cc.host, strconv.Itoa(cc.port)) }

func (cc *checkConfig) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cc.host, InsecureSkipVerify: cc.insecure} //nolint:gosec // only on request, with a warning
	if cc.caFile != "" {
		pem, err := os.ReadFile(cc.caFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", cc.caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// checker runs the steps and writes the report.
type checker struct {
	cfg      checkConfig
	tls      *tls.Config
	out      *syncWriter
	failed   bool
	watching atomic.Bool // events are reported while --watch runs
}

// syncWriter serialises the report's lines: watch events arrive from go-redis's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, format, args...)
}

func (c *checker) ok(step, format string, args ...any) {
	c.out.printf("  ok    %-9s %s\n", step, fmt.Sprintf(format, args...))
}

func (c *checker) note(format string, args ...any) {
	c.out.printf("        %-9s %s\n", "", fmt.Sprintf(format, args...))
}

// fail reports a failed step: the error and what to do.
func (c *checker) fail(step string, err error, hints []string) {
	c.failed = true
	c.out.printf("  FAIL  %-9s %s\n", step, errText(err))
	for _, h := range hints {
		c.out.printf("        %-9s fix: %s\n", "", h)
	}
}

func (c *checker) run(ctx context.Context, cred azcore.TokenCredential, desc string) int {
	cfg := c.cfg
	c.out.printf("entraredis check: %s as %s\n", cfg.addr(), desc)
	if cfg.insecure {
		c.out.printf("  warning: --insecure-skip-verify: the server's certificate is not verified\n")
	}
	var refreshes atomic.Int64
	p, err := provider.New(cred, &provider.Options{
		Username:     cfg.username,
		FetchTimeout: cfg.timeout, // the credential's own error then arrives before the step's deadline
		OnEvent: func(e provider.Event) {
			if e.Kind == provider.EventRefreshed {
				refreshes.Add(1)
			}
			if c.watching.Load() {
				c.watchEvent(e)
			}
		},
	})
	if err != nil {
		c.fail("token", err, nil)
		return exitFailed
	}
	defer p.Close()

	user, token, ok := c.stepToken(ctx, p)
	if !ok {
		return c.end()
	}
	conn, ok := c.stepConnect(ctx)
	if !ok {
		return c.end()
	}
	ok = c.stepCommands(conn, user, token)
	_ = conn.Close()
	if !ok {
		return c.end()
	}
	client, h, ok := c.stepClient(ctx, p)
	if !ok {
		return c.end()
	}
	defer h.Close()
	defer client.Close()
	if cfg.watch > 0 {
		c.stepWatch(ctx, p, client, h, &refreshes)
	}
	return c.end()
}

func (c *checker) end() int {
	if c.failed {
		c.out.printf("check failed\n")
		return exitFailed
	}
	c.out.printf("check passed\n")
	return exitOK
}

// stepToken gets a token through the provider, as the application would, and shows its claims.
func (c *checker) stepToken(ctx context.Context, p *provider.Provider) (user, token string, ok bool) {
	// A little longer than the provider's FetchTimeout, so that a slow credential's own error,
	// which says more than "deadline exceeded", is the one reported.
	tctx, cancel := context.WithTimeout(ctx, c.cfg.timeout+2*time.Second)
	defer cancel()
	start := time.Now()
	user, token, err := p.CredentialsProviderContext(tctx)
	if err != nil {
		c.fail("token", err, tokenHints(c.cfg.cred.kind, err))
		return "", "", false
	}
	claims, err := jwtutil.ParseClaims(token)
	if err != nil {
		c.fail("token", err, []string{"the credential returned something that is not a JWT access token: check --credential"})
		return "", "", false
	}
	now := time.Now()
	aud := make([]string, len(claims.Audience))
	for i, a := range claims.Audience {
		aud[i] = printable(a)
	}
	c.ok("token", "oid=%s tid=%s aud=%s expires %s (in %s), %s",
		printable(claims.ObjectID), printable(claims.TenantID), strings.Join(aud, ","),
		claims.ExpiresAt.UTC().Format(time.RFC3339), age(claims.ExpiresAt.Sub(now)), since(start))
	if claims.ObjectID != "" && user != claims.ObjectID {
		c.note("note: the username %s is not the token's oid: Azure expects the oid and will answer WRONGPASS", printable(user))
	}
	for _, n := range claimNotes(claims, now) {
		c.note("note: %s", n)
	}
	return user, token, true
}

// stepConnect opens the TLS connection: TCP first, then the handshake, so that the advice fits.
func (c *checker) stepConnect(ctx context.Context) (net.Conn, bool) {
	addr := c.cfg.addr()
	start := time.Now()
	d := net.Dialer{Timeout: c.cfg.timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		c.fail("connect", err, connectHints(err, false))
		return nil, false
	}
	tc := tls.Client(raw, c.tls)
	hctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s: %w", c.cfg.timeout, err)
		}
		c.fail("connect", fmt.Errorf("TLS handshake with %s: %w", addr, err), connectHints(err, true))
		return nil, false
	}
	st := tc.ConnectionState()
	cert := "none"
	if len(st.PeerCertificates) > 0 {
		pc := st.PeerCertificates[0]
		name := pc.Subject.CommonName
		if name == "" && len(pc.DNSNames) > 0 {
			name = pc.DNSNames[0]
		}
		cert = fmt.Sprintf("%s, valid until %s", name, pc.NotAfter.UTC().Format(time.DateOnly))
	}
	c.ok("connect", "%s to %s, %s; certificate %s", tls.VersionName(st.Version), raw.RemoteAddr(), since(start), cert)
	return tc, true
}

// stepCommands sends AUTH, PING and SET/GET/DEL, one visible exchange each.
func (c *checker) stepCommands(conn net.Conn, user, token string) bool {
	rc := newRespConn(conn, c.cfg.timeout)
	start := time.Now()
	if _, err := rc.do("AUTH", user, token); err != nil {
		hints := replyHints(err)
		if slices.Contains(hints, hintWrongPass) {
			// The library's own diagnosis, as an application's command would get it.
			summary, fixes := link.DiagnoseRefusal(err, user, token)
			c.fail("auth", errors.New(summary), fixes)
			return false
		}
		c.fail("auth", err, hints)
		c.note("the username sent was %s", user)
		return false
	}
	c.ok("auth", "AUTH as %s accepted, %s", user, since(start))

	start = time.Now()
	v, err := rc.do("PING")
	if err != nil {
		c.fail("ping", err, replyHints(err))
		return false
	}
	if v != "PONG" {
		c.fail("ping", fmt.Errorf("unexpected reply %.40q to PING", fmt.Sprint(v)), []string{hintNotRedis})
		return false
	}
	c.ok("ping", "PONG, %s", since(start))

	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := "entraredis:check:" + hex.EncodeToString(rnd[:])
	val := "ok " + time.Now().UTC().Format(time.RFC3339Nano)
	start = time.Now()
	fail := func(cmd string, err error) bool {
		c.fail("data", fmt.Errorf("%s %s: %w", cmd, key, err), replyHints(err))
		_, _ = rc.do("DEL", key) // best effort: leave nothing behind
		return false
	}
	if _, err := rc.do("SET", key, val, "EX", "60"); err != nil {
		return fail("SET", err)
	}
	got, err := rc.do("GET", key)
	if err != nil {
		return fail("GET", err)
	}
	if got != val {
		return fail("GET", errors.New("read back a different value: another client writes this key, or a proxy rewrites replies"))
	}
	n, err := rc.do("DEL", key)
	if err != nil {
		return fail("DEL", err)
	}
	if n != int64(1) {
		return fail("DEL", fmt.Errorf("deleted %v keys, want 1: the key expired or was removed meanwhile", n))
	}
	c.ok("data", "SET, GET, DEL %s, %s", key, since(start))
	_, _ = rc.do("QUIT")
	return true
}

// stepClient builds the client an application would (entraredis.NewClient: go-redis with the
// provider and the hook) and sends a PING through it.
func (c *checker) stepClient(ctx context.Context, p *provider.Provider) (*redis.Client, *hook.Hook, bool) {
	h := hook.New(p, &hook.Options{OnEvent: func(e hook.Event) {
		if c.watching.Load() {
			c.hookEvent(e)
		}
	}})
	client := entraredis.NewClient(h, &redis.Options{
		Addr:         c.cfg.addr(),
		TLSConfig:    c.tls.Clone(),
		DialTimeout:  c.cfg.timeout,
		ReadTimeout:  c.cfg.timeout,
		WriteTimeout: c.cfg.timeout,
		PoolSize:     2,
	})
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		c.fail("client", err, append(replyHints(err), connectHints(err, false)...))
		_ = client.Close()
		_ = h.Close()
		return nil, nil, false
	}
	c.ok("client", "entraredis.NewClient: PING answered, %s (go-redis HELLO 3 AUTH, as an application connects)", since(start))
	return client, h, true
}

// stepWatch sends a PING and a SET/GET every cfg.every for cfg.watch, across token refreshes,
// reporting each refresh and re-AUTH as it happens.
func (c *checker) stepWatch(ctx context.Context, p *provider.Provider, client *redis.Client, h *hook.Hook, refreshes *atomic.Int64) {
	cfg := c.cfg
	if info, ok := p.Token(); ok {
		c.out.printf("  ..    watch     for %s; token expires %s, refresh due %s\n", cfg.watch,
			info.ExpiresOn.UTC().Format(time.TimeOnly), info.RefreshAt.UTC().Format(time.TimeOnly))
	}
	// The guard renews open connections in place (go-redis never sends an AUTH of its own with it
	// on): its stats count the re-AUTHs and the connections.
	hs0 := h.Stats()
	refreshes0 := refreshes.Load()
	c.watching.Store(true)
	start := time.Now()
	end := time.NewTimer(cfg.watch)
	defer end.Stop()
	tick := time.NewTicker(cfg.every)
	defer tick.Stop()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := "entraredis:check:" + hex.EncodeToString(rnd[:])
	rounds, failed := 0, 0
	var lastErr string
	seenReauths, seenDials := hs0.Reauths, hs0.Dials
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end.C:
			break loop
		case <-tick.C:
		}
		rounds++
		rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		err := client.Ping(rctx).Err()
		if err == nil {
			err = client.Set(rctx, key, rounds, time.Minute).Err()
		}
		if err == nil {
			var n int
			if n, err = client.Get(rctx, key).Int(); err == nil && n != rounds {
				err = fmt.Errorf("GET %s returned %d, want %d", key, n, rounds)
			}
		}
		cancel()
		if st := h.Stats(); st.Reauths > seenReauths {
			exp := "a newer token"
			if info, ok := p.Token(); ok {
				exp = "the token expiring " + info.ExpiresOn.UTC().Format(time.TimeOnly)
			}
			c.event("re-AUTH ok: %d open connection(s) renewed in place with %s", st.Reauths-seenReauths, exp)
			seenReauths = st.Reauths
		}
		if st := h.Stats(); st.Dials > seenDials {
			c.event("%d new connection(s) authenticated (HELLO AUTH)", st.Dials-seenDials)
			seenDials = st.Dials
		}
		if err != nil && ctx.Err() == nil {
			failed++
			if msg := err.Error(); msg != lastErr { // one report per distinct error, not per second
				lastErr = msg
				c.event("FAIL round %d: %s", rounds, errText(err))
				for _, hint := range append(replyHints(err), connectHints(err, false)...) {
					c.event("fix: %s", hint)
				}
			}
		}
	}
	c.watching.Store(false)
	dctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	_ = client.Del(dctx, key).Err()
	cancel()
	st := h.Stats()
	reauths, reauthFails := st.Reauths-hs0.Reauths, st.ReauthFailures-hs0.ReauthFailures
	summary := fmt.Sprintf("%s: %d rounds, %d failed; %d token refreshes, %d re-AUTHs (%d failed), %d connections retired, %d reconnections",
		time.Since(start).Round(100*time.Millisecond), rounds, failed, refreshes.Load()-refreshes0, reauths,
		reauthFails, st.ConnsRetired, max(st.Dials, 1)-1) // the first connection is no reconnection
	if failed > 0 || reauthFails > 0 {
		c.fail("watch", errors.New(summary), nil)
		return
	}
	c.ok("watch", "%s", summary)
}

// event prints a timestamped line under the watch step.
func (c *checker) event(format string, args ...any) {
	c.out.printf("        %s  %s\n", time.Now().UTC().Format(time.TimeOnly), fmt.Sprintf(format, args...))
}

func (c *checker) watchEvent(e provider.Event) {
	switch e.Kind {
	case provider.EventRefreshed:
		c.event("token refreshed: the new one expires %s (in %s)", e.ExpiresOn.UTC().Format(time.TimeOnly), time.Until(e.ExpiresOn).Round(time.Second))
	case provider.EventRefreshFailed:
		c.event("token refresh failed (attempt %d; the current token stays in use while valid): %s", e.Attempt, errText(e.Err))
		for _, h := range tokenHints(c.cfg.cred.kind, e.Err) {
			c.event("fix: %s", h)
		}
	case provider.EventRecovered:
		c.event("token refresh recovered after %d failed attempts", e.Attempt)
	case provider.EventExpired:
		c.event("the token expired before a new one arrived: new connections wait for the identity provider")
	}
}

func (c *checker) hookEvent(e hook.Event) {
	switch e.Kind {
	case hook.EventRetry:
		c.event("%s sent again (retry %d) after a %s error: %s", e.Command, e.Attempt, e.Class, errText(e.Err))
	case hook.EventGaveUp:
		if errors.Is(e.Err, hook.ErrTokenRefused) {
			c.event("%s failed: %s", e.Command, errText(e.Err))
			return
		}
		c.event("%s failed after %d retries", e.Command, e.Attempt)
	case hook.EventConnRetired:
		c.event("a connection still on the old token was retired before it expired (%s)", e.ExpiresOn.UTC().Format(time.TimeOnly))
	case hook.EventPubSubReauth:
		c.event("a pub/sub connection was re-authenticated")
	case hook.EventReauthFailed:
		c.event("re-AUTH FAILED on an open connection to %s: the server refused the new token (the connection stays on its current one until it expires)", e.Addr)
		c.event("fix: %s", hintWrongPass)
	}
}

func since(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
