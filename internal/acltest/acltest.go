// Package acltest makes real redis-servers (on loopback) behave,
// for authentication, like Azure Cache for Redis with Microsoft Entra ID, through their ACL:
//
//   - Env is an azcore.TokenCredential. Each token it hands out is minted by an entratest.Issuer
//     and added to every server as the password of an ACL user named by the token's oid claim.
//   - When a token expires, its password is removed (a reconnection with it gets WRONGPASS, as on
//     Azure) and the connections it authenticated are closed (CLIENT KILL USER), as Azure closes
//     them.
//
// Each token carries its own oid, so that its ACL user holds exactly the connections it
// authenticated (or re-authenticated: AUTH as another user moves a connection): closing the user's
// connections at expiry is then exactly Azure's close, which spares connections already
// re-authenticated with a newer token. (With one oid for all tokens, as a real identity has,
// CLIENT KILL USER would also close those, harsher than Azure: a command in flight on them would
// have an unknown fate.)
//
// It is for this module's tests only; entratest's Gateway is the full emulator.
package acltest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/entratest"
)

// Options configures Start and StartCluster. Zero fields mean defaults.
type Options struct {
	Lifetime time.Duration // of each token; default 2s
	// NoKill keeps the connections of an expired token open (its password is still removed).
	NoKill bool
	// Servers is how many standalone servers Start runs, all accepting the same tokens (a ring's
	// shards); default 1.
	Servers int
}

// Stats counts what an Env did.
type Stats struct {
	Minted      int64 // tokens handed out
	Expired     int64 // tokens whose expiry was enforced
	Revoked     int64 // tokens revoked by Revoke
	ConnsClosed int64 // connections closed at an expiry or a revocation
}

// Env is a set of redis-servers enforcing Entra-like authentication, and the credential whose tokens
// they accept.
type Env struct {
	tb      testing.TB
	iss     *entratest.Issuer
	opts    Options
	servers []*entratest.RedisServer
	admins  []*redis.Client

	mu     sync.Mutex
	closed bool
	timers map[string]*time.Timer // by token
	users  map[string]string      // token -> ACL user
	all    []string               // every token minted
	wg     sync.WaitGroup

	minted, expired, revoked, killed atomic.Int64
}

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
	keyErr  error
)

// Key is one RSA key for all issuers of a test binary: generating one takes a while.
func Key() (*rsa.PrivateKey, error) {
	keyOnce.Do(func() { key, keyErr = rsa.GenerateKey(rand.Reader, 2048) })
	return key, keyErr
}

// adminUser administers the servers, with a random password: clients under test authenticate with
// tokens only.
const adminUser = "default"

// Start runs standalone redis-servers (Options.Servers, default one).
func Start(tb testing.TB, opts *Options) *Env {
	tb.Helper()
	e := newEnv(tb, opts)
	for range max(e.opts.Servers, 1) {
		e.addServer(nil)
	}
	return e
}

func newEnv(tb testing.TB, opts *Options) *Env {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Lifetime <= 0 {
		o.Lifetime = 2 * time.Second
	}
	k, err := Key()
	if err != nil {
		tb.Fatal(err)
	}
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: o.Lifetime, Key: k})
	if err != nil {
		tb.Fatal(err)
	}
	e := &Env{tb: tb, iss: iss, opts: o, timers: map[string]*time.Timer{}, users: map[string]string{}}
	tb.Cleanup(e.close)
	return e
}

var adminPass = func() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

func (e *Env) addServer(args []string) {
	e.tb.Helper()
	args = append(args, "user default on >"+adminPass+" ~* &* +@all")
	s := entratest.StartRedis(e.tb, &entratest.RedisOptions{Args: args})
	e.servers = append(e.servers, s)
	e.admins = append(e.admins, redis.NewClient(&redis.Options{
		Addr: s.Addr(), Username: adminUser, Password: adminPass, Protocol: 2, DisableIdentity: true,
		MaxRetries: -1, PoolSize: 2,
	}))
}

func (e *Env) close() {
	e.mu.Lock()
	e.closed = true
	for tok, t := range e.timers {
		t.Stop()
		delete(e.timers, tok)
	}
	e.mu.Unlock()
	e.wg.Wait()
	for _, a := range e.admins {
		_ = a.Close()
	}
}

// Addr returns the address of the first server.
func (e *Env) Addr() string { return e.servers[0].Addr() }

// Addrs returns the addresses of all servers.
func (e *Env) Addrs() []string {
	out := make([]string, len(e.servers))
	for i, s := range e.servers {
		out[i] = s.Addr()
	}
	return out
}

// Admin returns a client of server i authenticated as the servers' administrator.
func (e *Env) Admin(i int) *redis.Client { return e.admins[i] }

// Issuer returns the issuer minting the tokens.
func (e *Env) Issuer() *entratest.Issuer { return e.iss }

// Stats returns what the Env did so far.
func (e *Env) Stats() Stats {
	return Stats{Minted: e.minted.Load(), Expired: e.expired.Load(), Revoked: e.revoked.Load(), ConnsClosed: e.killed.Load()}
}

// GetToken implements azcore.TokenCredential: a new token, accepted by every server until it
// expires.
func (e *Env) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, exp, err := e.Mint(ctx, e.opts.Lifetime)
	if err != nil {
		return azcore.AccessToken{}, err
	}
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, nil
}

// Mint returns a new token valid for life, registered with every server.
func (e *Env) Mint(ctx context.Context, life time.Duration) (string, time.Time, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	oid := h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	tok, exp, err := e.iss.MintWith(entratest.TokenOptions{Lifetime: life, ObjectID: oid})
	if err != nil {
		return "", time.Time{}, err
	}
	for _, a := range e.admins {
		if err := a.Do(ctx, "acl", "setuser", oid, "on", ">"+tok, "~*", "&*", "+@all").Err(); err != nil {
			return "", time.Time{}, fmt.Errorf("acltest: acl setuser: %w", redactErr(err, tok))
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", time.Time{}, errors.New("acltest: closed")
	}
	e.minted.Add(1)
	e.users[tok] = oid
	e.all = append(e.all, tok)
	e.timers[tok] = time.AfterFunc(time.Until(exp), func() { e.end(tok, true) })
	return tok, exp, nil
}

// Tokens returns every token minted so far, for tests that check none leaks into a log.
func (e *Env) Tokens() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.all...)
}

// Revoke makes the servers reject tok from now on, as if it had been revoked out of band; with
// kill, the connections it authenticated are closed too.
func (e *Env) Revoke(tok string, kill bool) {
	e.mu.Lock()
	if t := e.timers[tok]; t != nil {
		t.Stop()
	}
	e.mu.Unlock()
	e.revoked.Add(1)
	e.remove(tok, kill)
}

// end enforces tok's expiry.
func (e *Env) end(tok string, expired bool) {
	if expired {
		e.expired.Add(1)
	}
	e.remove(tok, !e.opts.NoKill)
}

func (e *Env) remove(tok string, kill bool) {
	e.mu.Lock()
	oid, ok := e.users[tok]
	delete(e.users, tok)
	delete(e.timers, tok)
	if e.closed || !ok {
		e.mu.Unlock()
		return
	}
	e.wg.Add(1)
	e.mu.Unlock()
	defer e.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, a := range e.admins {
		_ = a.Do(ctx, "acl", "setuser", oid, "<"+tok).Err()
		if kill {
			if n, err := a.Do(ctx, "client", "kill", "user", oid).Int64(); err == nil {
				e.killed.Add(n)
			}
		}
		_ = a.Do(ctx, "acl", "deluser", oid).Err()
	}
}

// redactErr keeps a token out of an error message.
func redactErr(err error, tok string) error {
	if msg := err.Error(); strings.Contains(msg, tok) {
		return errors.New(strings.ReplaceAll(msg, tok, "[token]"))
	}
	return err
}

// StartSentinel runs a Sentinel monitoring the Env's first server as master "mymaster" (it logs in
// as the administrator) and returns its address. tb.Cleanup stops it.
func (e *Env) StartSentinel(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatal("acltest: redis-server not found in PATH: install it (Debian/Ubuntu: sudo apt-get install redis-server)")
	}
	port, err := entratest.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nsentinel monitor mymaster 127.0.0.1 %d 1\nsentinel auth-user mymaster %s\nsentinel auth-pass mymaster %s\n",
		port, dir, filepath.Join(dir, "sentinel.log"), e.servers[0].Port(), adminUser, adminPass)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		tb.Fatalf("acltest: start sentinel: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.GetMasterAddrByName(ctx, "mymaster").Result()
		cancel()
		if err == nil {
			return addr
		}
		if time.Now().After(deadline) {
			tb.Fatalf("acltest: sentinel on %s not ready: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
