package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

type demoConfig struct {
	duration    time.Duration
	lifetime    time.Duration
	workers     int
	redisServer string
	plain       bool
	every       time.Duration // progress interval
	outage      time.Duration
	metrics     bool // print the OpenTelemetry metrics at the end
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "demo [flags]\n\nRuns a concurrent workload through entraredis.NewClient against a local Entra emulator: an\nentratest issuer minting short-lived tokens and an entratest gateway that enforces them as Azure\ndoes (AUTH with a valid token, username = oid, connection closed when its token expires), in front\nof an in-process miniredis or a real redis-server. Nothing to install, no Azure account.\nExit status 1 if any command failed or a counter disagrees with the acknowledged INCRs.", stderr)
	var cfg demoConfig
	fs.DurationVar(&cfg.duration, "duration", 30*time.Second, "how long the workload runs (Ctrl-C ends it early, with the summary)")
	fs.DurationVar(&cfg.lifetime, "lifetime", 5*time.Second, "lifetime of each token (Azure: 60-90 minutes; managed-identity tokens often 24 hours)")
	fs.IntVar(&cfg.workers, "workers", 8, "concurrent workers, each running INCR on its own counter and SET/GET")
	fs.StringVar(&cfg.redisServer, "redis-server", "", "path of a redis-server binary to use instead of the in-process miniredis")
	fs.BoolVar(&cfg.plain, "plain", false, "plain TCP between client and gateway instead of TLS (Azure: TLS only)")
	fs.DurationVar(&cfg.every, "progress", time.Second, "interval of the progress line")
	fs.BoolVar(&cfg.metrics, "metrics", false, "instrument the client with package entraotel and print the OpenTelemetry metrics it collected")
	fs.DurationVar(&cfg.outage, "outage", 0, "make the identity provider fail every token request for this long, from a third of the run:\nwhile the current token lives nothing shows; past its expiry the hook retires connections just\nbefore it (the server closes none) and commands fail at once, for want of a token to dial with,\nuntil the identity provider is back")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "entraredis demo: unexpected argument %q: flags only\n", fs.Arg(0))
		return exitUsage
	case cfg.duration <= 0 || cfg.every <= 0 || cfg.outage < 0:
		fmt.Fprintln(stderr, "entraredis demo: --duration and --progress must be positive, --outage not negative")
		return exitUsage
	case cfg.lifetime < 500*time.Millisecond:
		fmt.Fprintln(stderr, "entraredis demo: --lifetime must be at least 500ms: the gateway's expiry and the refresh need some room")
		return exitUsage
	case cfg.workers < 1 || cfg.workers > 1024:
		fmt.Fprintln(stderr, "entraredis demo: --workers must be between 1 and 1024")
		return exitUsage
	}
	d, err := startDemo(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "entraredis demo: %v\n", err)
		return exitFailed
	}
	defer d.close()
	return d.run(ctx, stdout)
}

// demo is the running emulator, client and counters.
type demo struct {
	cfg     demoConfig
	backend string // what is behind the gateway, in words
	stop    func() // of the backend

	iss    *entratest.Issuer
	gw     *entratest.Gateway
	p      *provider.Provider
	h      *hook.Hook
	client *redis.Client
	otel   *demoMetrics // nil without --metrics

	ops, errs, rotations, refreshFails, retired atomic.Int64
	lastErr                                     atomic.Pointer[string]
	outageStarted                               atomic.Bool
}

func startDemo(cfg demoConfig) (_ *demo, err error) {
	d := &demo{cfg: cfg}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	var backendAddr string
	if cfg.redisServer != "" {
		backendAddr, d.stop, err = startRedisServer(cfg.redisServer)
		if err != nil {
			return nil, err
		}
		d.backend = "redis-server " + backendAddr
	} else {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return nil, fmt.Errorf("start miniredis: %w", err)
		}
		d.stop, backendAddr, d.backend = mr.Close, mr.Addr(), "miniredis (in-process)"
	}
	if d.iss, err = entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: cfg.lifetime}); err != nil {
		return nil, err
	}
	gwOpts := &entratest.GatewayOptions{}
	var clientTLS *tls.Config
	if !cfg.plain {
		ca, err := entratest.NewTestCA()
		if err != nil {
			return nil, err
		}
		if gwOpts.TLS, err = ca.ServerTLSConfig(); err != nil {
			return nil, err
		}
		clientTLS = ca.ClientTLSConfig()
	}
	if d.gw, err = entratest.NewGateway(d.iss, backendAddr, gwOpts); err != nil {
		return nil, err
	}
	var cred azcore.TokenCredential = d.iss
	popts := &provider.Options{}
	if cfg.metrics {
		if d.otel, err = newDemoMetrics("127.0.0.1"); err != nil {
			return nil, err
		}
		cred = d.otel.m.Credential(cred)
		popts = d.otel.m.ProviderOptions(popts)
	}
	first := true
	chained := popts.OnEvent
	popts.OnEvent = func(e provider.Event) {
		if chained != nil {
			chained(e)
		}
		if e.Kind == provider.EventRefreshed {
			if first { // the first token is not a rotation; events come one at a time
				first = false
				return
			}
			d.rotations.Add(1)
		}
		if e.Kind == provider.EventRefreshFailed {
			d.refreshFails.Add(1)
		}
	}
	if d.p, err = provider.New(cred, popts); err != nil {
		return nil, err
	}
	d.h = hook.New(d.p, &hook.Options{OnEvent: func(e hook.Event) {
		if e.Kind == hook.EventConnRetired {
			d.retired.Add(1)
		}
	}})
	if d.otel != nil {
		if err := d.otel.m.Observe(d.p, d.h); err != nil {
			return nil, err
		}
	}
	d.client = entraredis.NewClient(d.h, &redis.Options{
		Addr:      d.gw.Addr(),
		TLSConfig: clientTLS,
		PoolSize:  cfg.workers,
	})
	return d, nil
}

func (d *demo) close() {
	if d.client != nil {
		_ = d.client.Close()
	}
	if d.h != nil {
		_ = d.h.Close()
	}
	if d.p != nil {
		_ = d.p.Close()
	}
	if d.otel != nil {
		d.otel.close()
	}
	if d.gw != nil {
		_ = d.gw.Close()
	}
	if d.iss != nil {
		_ = d.iss.Close()
	}
	if d.stop != nil {
		d.stop()
	}
}

// workerResult is what one worker's counter must hold.
type workerResult struct {
	key          string
	acked, unack int64 // INCRs acknowledged, and failed ones (which may or may not have run)
}

func (d *demo) run(ctx context.Context, stdout io.Writer) int {
	cfg := d.cfg
	tty := isTerminal(stdout)
	transport := "TLS"
	if cfg.plain {
		transport = "plain TCP"
	}
	fmt.Fprintf(stdout, "entraredis demo: %d workers for %s; tokens live %s; gateway (%s) in front of %s\n",
		cfg.workers, cfg.duration, cfg.lifetime, transport, d.backend)

	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	results := make([]workerResult, cfg.workers)
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		results[i].key = fmt.Sprintf("entraredis:demo:%s:counter:%d", run, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.worker(&stop, &results[i], fmt.Sprintf("entraredis:demo:%s:value:%d", run, i))
		}()
	}

	timer := time.NewTimer(cfg.duration)
	defer timer.Stop()
	if cfg.outage > 0 {
		t := time.AfterFunc(cfg.duration/3, func() {
			d.iss.FailFor(cfg.outage, http.StatusServiceUnavailable)
			d.outageStarted.Store(true)
		})
		defer t.Stop()
	}
	tick := time.NewTicker(cfg.every)
	defer tick.Stop()
	interrupted := false
	lastOps, lastAt := int64(0), start
loop:
	for {
		select {
		case <-ctx.Done():
			interrupted = true
			break loop
		case <-timer.C:
			break loop
		case now := <-tick.C:
			ops := d.ops.Load()
			rate := float64(ops-lastOps) / now.Sub(lastAt).Seconds()
			lastOps, lastAt = ops, now
			line := d.progress(now.Sub(start), rate)
			if tty {
				fmt.Fprintf(stdout, "\r%s\x1b[K", line)
			} else {
				fmt.Fprintln(stdout, line)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	if tty {
		fmt.Fprint(stdout, "\r\x1b[K")
	}
	if interrupted {
		fmt.Fprintln(stdout, "interrupted: stopping the workload")
	}
	return d.summary(stdout, elapsed, results)
}

// worker runs INCR, SET and GET until stop. Commands get their own deadline rather than the
// command's context: Ctrl-C stops the loop between commands instead of failing one in flight.
func (d *demo) worker(stop *atomic.Bool, r *workerResult, valueKey string) {
	const opTimeout = 10 * time.Second
	for n := int64(1); !stop.Load(); n++ {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		if _, err := d.client.Incr(ctx, r.key).Result(); err != nil {
			r.unack++
			d.fail(err)
		} else {
			r.acked++
			d.ops.Add(1)
		}
		want := strconv.FormatInt(n, 10)
		if err := d.client.Set(ctx, valueKey, want, 0).Err(); err != nil {
			d.fail(err)
		} else {
			d.ops.Add(1)
			switch got, err := d.client.Get(ctx, valueKey).Result(); {
			case err != nil:
				d.fail(err)
			case got != want:
				d.fail(fmt.Errorf("GET %s returned %q after SET %q", valueKey, got, want))
			default:
				d.ops.Add(1)
			}
		}
		cancel()
	}
}

func (d *demo) fail(err error) {
	d.errs.Add(1)
	msg := err.Error()
	d.lastErr.Store(&msg)
}

func (d *demo) progress(elapsed time.Duration, rate float64) string {
	gs := d.gw.Stats()
	ok, _ := d.reauthCounts()
	return fmt.Sprintf("%5.1fs  %8.0f ops/s  errors %d  rotations %d  re-AUTHs %d  retired %d  closes at expiry %d",
		elapsed.Seconds(), rate, d.errs.Load(), d.rotations.Load(), ok, d.retired.Load(), gs.ExpiryCloses)
}

// reauthCounts returns the hook's renewals in place: its guard writes AUTH on open connections
// (the demo keeps the guard on, so go-redis's own streaming re-AUTH is not used).
func (d *demo) reauthCounts() (ok, failed int64) {
	hs := d.h.Stats()
	return int64(hs.Reauths), int64(hs.ReauthFailures)
}

// summary checks the counters and prints the totals; it returns the exit status.
func (d *demo) summary(w io.Writer, elapsed time.Duration, results []workerResult) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	matched := 0
	var mismatches []string
	for _, r := range results {
		got, err := d.client.Get(ctx, r.key).Int64()
		// Past an outage commands fail at once until the provider's next paced attempt gets a
		// token: the check waits for it (the outage may even outlast the run).
		for errors.Is(err, provider.ErrTokenUnavailable) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			got, err = d.client.Get(ctx, r.key).Int64()
		}
		if errors.Is(err, redis.Nil) {
			got, err = 0, nil
		}
		switch {
		case err != nil:
			mismatches = append(mismatches, fmt.Sprintf("%s: reading it failed: %v", r.key, err))
		case got != r.acked:
			mismatches = append(mismatches, fmt.Sprintf("%s = %d, but %d INCRs were acknowledged (%d failed)", r.key, got, r.acked, r.unack))
		default:
			matched++
		}
	}
	ops, errs := d.ops.Load(), d.errs.Load()
	hs, gs := d.h.Stats(), d.gw.Stats()
	var b bytes.Buffer
	row := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "  %-17s %s\n", name, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(&b, "summary after %s:\n", elapsed.Round(100*time.Millisecond))
	row("commands", "%d ok, %d failed (%.0f/s)", ops, errs, float64(ops)/elapsed.Seconds())
	row("token rotations", "%d (a new token from the issuer, %s lifetime)", d.rotations.Load(), d.cfg.lifetime)
	if d.cfg.outage > 0 {
		what := "did not start: the run was shorter"
		if d.outageStarted.Load() {
			what = fmt.Sprintf("%s from %s", d.cfg.outage, (d.cfg.duration / 3).Round(100*time.Millisecond))
		}
		row("IdP outage", "%s; %d token requests failed", what, d.refreshFails.Load())
	}
	reOK, reFailed := d.reauthCounts()
	row("re-AUTHs", "%d ok, %d failed (open connections moved to the new token in place)", reOK, reFailed)
	row("retired", "%d (connections closed by the hook just before their token expired)", d.retired.Load())
	row("closes at expiry", "%d (connections the server closed because their token expired)", gs.ExpiryCloses)
	row("hook retries", "%d (%d after an authentication error)", hs.Retries, hs.AuthRetries)
	row("connections", "%d opened, %d AUTHs accepted, %d refused by the gateway", gs.Connections, gs.AuthAccepted, gs.AuthRefused)
	row("counters", "%d/%d equal to the acknowledged INCRs", matched, len(results))
	for _, m := range mismatches {
		row("", "MISMATCH %s", m)
	}
	if p := d.lastErr.Load(); p != nil {
		row("last error", "%s", *p)
	}
	if d.otel != nil {
		if err := d.otel.print(&b); err != nil {
			row("metrics", "%v", err)
		}
	}
	code := exitOK
	if errs > 0 || len(mismatches) > 0 {
		code = exitFailed
		b.WriteString("FAIL\n")
	} else {
		b.WriteString("PASS\n")
	}
	_, _ = w.Write(b.Bytes())
	return code
}

// isTerminal reports whether w is a terminal (a character device), where the progress line
// rewrites itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startRedisServer runs bin on a free loopback port, without persistence, in a temporary
// directory, and waits until it answers.
func startRedisServer(bin string) (addr string, stop func(), err error) {
	port, err := entratest.FreePort()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "entraredis-demo-")
	if err != nil {
		return "", nil, err
	}
	addr = "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--daemonize", "no")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, fmt.Errorf("start %s: %w (is --redis-server the path of a redis-server binary? apt-get install redis-server)", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	stop = func() {
		_ = cmd.Process.Kill()
		<-done
		_ = os.RemoveAll(dir)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			_ = os.RemoveAll(dir)
			return "", nil, fmt.Errorf("%s exited at start: %s", bin, strings.TrimSpace(out.String()))
		default:
		}
		if entratest.Ping(addr, 500*time.Millisecond) == nil {
			return addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("%s did not answer on %s within 10s: %s", bin, addr, strings.TrimSpace(out.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
