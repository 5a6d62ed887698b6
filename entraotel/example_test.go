package entraotel_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/entraredis/entraredis/entraotel"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// Prometheus through OpenTelemetry's exporter: the metrics of a provider and hook on a /metrics
// endpoint. entratest stands in for Entra ID and the cache; on Azure, cred is an azidentity
// credential and the address the cache's.
func Example_prometheus() {
	iss, err := entratest.NewIssuer(nil)
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	backend, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer backend.Close()
	gw, err := entratest.NewGateway(iss, backend.Addr(), nil)
	if err != nil {
		panic(err)
	}
	defer gw.Close()

	// The OpenTelemetry SDK with the Prometheus exporter, on a registry of its own.
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		panic(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())

	// entraredis, instrumented.
	m, err := entraotel.New(mp, &entraotel.Options{ServerAddress: "mycache.redis.cache.windows.net"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	p, err := provider.New(m.Credential(iss), m.ProviderOptions(nil))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	h := hook.New(p, nil)
	defer h.Close()
	if err := m.Observe(p, h); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), CredentialsProviderContext: p.CredentialsProviderContext})
	rdb.AddHook(h)
	defer rdb.Close()
	if err := rdb.Set(context.Background(), "greeting", "hello", 0).Err(); err != nil {
		panic(err)
	}

	// What Prometheus scrapes.
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	// Printed without the labels every line has (otel_scope_*, server_address) and with the
	// values that vary from run to run rounded.
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, labels, value, ok := parse(sc.Text())
		switch {
		case !ok || strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_sum"):
		case name == "entraredis_token_time_to_expiry_seconds":
			fmt.Printf("%s %.0fm\n", name, value/60)
		default:
			fmt.Println(name+labels, value)
		}
	}
	// Output:
	// entraredis_command_blocking_splits_total 0
	// entraredis_command_give_ups_total 0
	// entraredis_command_refused_total 0
	// entraredis_command_retries_total{error_type="auth"} 0
	// entraredis_command_retries_total{error_type="connect"} 0
	// entraredis_connection_dials_total 1
	// entraredis_connection_idle_reauths_total 0
	// entraredis_connection_keepalives_total 0
	// entraredis_connection_reauth_failures_total 0
	// entraredis_connection_reauths_total 0
	// entraredis_connection_retired_total 0
	// entraredis_credential_duration_seconds_count 1
	// entraredis_pubsub_move_failures_total 0
	// entraredis_pubsub_moves_total 0
	// entraredis_pubsub_reauths_total 0
	// entraredis_pubsub_reconnects_total 0
	// entraredis_token_blocked 0
	// entraredis_token_rechecks_total 0
	// entraredis_token_refreshes_total 1
	// entraredis_token_time_to_expiry_seconds 60m
}

// parse splits an entraredis_ line of Prometheus's text format into its name, its error_type label
// (if any) and its value.
func parse(line string) (name, labels string, value float64, ok bool) {
	if !strings.HasPrefix(line, "entraredis_") {
		return "", "", 0, false
	}
	i := strings.IndexAny(line, "{ ")
	j := strings.LastIndexByte(line, ' ')
	if i < 0 || j < 0 {
		return "", "", 0, false
	}
	if _, err := fmt.Sscan(line[j+1:], &value); err != nil {
		return "", "", 0, false
	}
	if k := strings.Index(line, `error_type="`); k >= 0 {
		labels = "{" + line[k:k+strings.IndexByte(line[k+len(`error_type="`):], '"')+len(`error_type="`)+1] + "}"
	}
	return line[:i], labels, value, true
}
