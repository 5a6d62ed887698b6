package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/entraredis/entraredis/entraotel"
)

// demoMetrics is entraotel on the OpenTelemetry SDK with a manual reader: what an exporter
// (Prometheus, OTLP) would send, printed at the end of the demo.
type demoMetrics struct {
	m      *entraotel.Metrics
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newDemoMetrics(serverAddress string) (*demoMetrics, error) {
	dm := &demoMetrics{reader: sdkmetric.NewManualReader()}
	dm.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(dm.reader))
	var err error
	if dm.m, err = entraotel.New(dm.mp, &entraotel.Options{ServerAddress: serverAddress}); err != nil {
		_ = dm.mp.Shutdown(context.Background())
		return nil, err
	}
	return dm, nil
}

func (dm *demoMetrics) close() {
	_ = dm.m.Close()
	_ = dm.mp.Shutdown(context.Background())
}

// print writes every data point of every instrument, one line each, sorted by name, with the
// attributes that are not on every line (error.type).
func (dm *demoMetrics) print(w io.Writer) error {
	var rm metricdata.ResourceMetrics
	if err := dm.reader.Collect(context.Background(), &rm); err != nil {
		return fmt.Errorf("collecting the metrics: %w", err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, metricLine(m.Name, dp.Attributes, fmt.Sprintf("%d %s", dp.Value, m.Unit)))
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, metricLine(m.Name, dp.Attributes, fmt.Sprintf("%.1f %s", dp.Value, m.Unit)))
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					v := fmt.Sprintf("%d calls", dp.Count)
					if dp.Count > 0 {
						v += fmt.Sprintf(", mean %s", seconds(dp.Sum/float64(dp.Count)))
						if mx, ok := dp.Max.Value(); ok {
							v += ", max " + seconds(mx)
						}
					}
					lines = append(lines, metricLine(m.Name, dp.Attributes, v))
				}
			}
		}
	}
	slices.Sort(lines)
	fmt.Fprintln(w, "metrics (OpenTelemetry, package entraotel; what an exporter would send):")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	return nil
}

func metricLine(name string, attrs attribute.Set, value string) string {
	if v, ok := attrs.Value(entraotel.AttrErrorType); ok {
		name += "{error.type=" + v.Emit() + "}"
	}
	return fmt.Sprintf("  %-52s %s", name, value)
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(10 * time.Microsecond).String()
}
