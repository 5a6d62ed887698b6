package entratest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions configures StartCluster. Nil or zero fields mean defaults.
type ClusterOptions struct {
	Masters int      // number of master nodes, each with a share of the 16384 slots; default 3
	Args    []string // extra configuration directives for every node, as RedisOptions.Args
	// Gateway configures the gateway in front of each node (TLS, Logger); Addr is ignored.
	Gateway *GatewayOptions
	// ReadyTimeout bounds the wait for cluster_state:ok; default 30s.
	ReadyTimeout time.Duration
}

// Cluster is a Redis Cluster of real redis-server nodes on 127.0.0.1, each behind its own
// Gateway. Nodes announce their gateway's port (cluster-announce-port), so CLUSTER SLOTS and
// MOVED/ASK redirections send clients through the gateways, as Azure's OSS cluster policy does;
// the cluster bus stays node to node.
type Cluster struct {
	nodes    []*RedisServer
	gateways []*Gateway
}

// StartCluster starts a cluster whose nodes accept tokens from iss through their gateways, and
// waits until it is ready. tb.Cleanup stops it. RunCluster does the same without a test.
func StartCluster(tb testing.TB, iss *Issuer, opts *ClusterOptions) *Cluster {
	tb.Helper()
	c, err := runCluster(iss, opts, func() (string, bool, error) { return tb.TempDir(), false, nil })
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// RunCluster is StartCluster for a plain program (a local development stack): it returns an error
// instead of failing a test. Close the cluster when done.
func RunCluster(iss *Issuer, opts *ClusterOptions) (*Cluster, error) {
	return runCluster(iss, opts, func() (string, bool, error) {
		dir, err := os.MkdirTemp("", "entratest-cluster-")
		return dir, true, err
	})
}

// Close closes the gateways and stops the nodes (removing the directories RunCluster made).
func (c *Cluster) Close() error {
	var errs []error
	for _, g := range c.gateways {
		errs = append(errs, g.Close())
	}
	for _, n := range c.nodes {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}

// runCluster starts the nodes in directories from newDir (owned: removed by Close); on failure,
// whatever started is stopped.
func runCluster(iss *Issuer, opts *ClusterOptions, newDir func() (dir string, owned bool, err error)) (_ *Cluster, err error) {
	var o ClusterOptions
	if opts != nil {
		o = *opts
	}
	if o.Masters <= 0 {
		o.Masters = 3
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	var gwOpts GatewayOptions
	if o.Gateway != nil {
		gwOpts = *o.Gateway
	}
	gwOpts.Addr = ""

	c := &Cluster{}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	buses := make([]int, o.Masters)
	for i := range o.Masters {
		// The gateway needs the node's address and the node needs the gateway's port: pick the
		// node's ports first (the gateway dials lazily, per client connection).
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		bus, err := FreePort()
		if err != nil {
			return nil, err
		}
		buses[i] = bus
		g, err := NewGateway(iss, "127.0.0.1:"+strconv.Itoa(port), &gwOpts)
		if err != nil {
			return nil, err
		}
		c.gateways = append(c.gateways, g)
		args := append([]string{
			"cluster-enabled yes",
			"cluster-config-file nodes.conf",
			"cluster-node-timeout 5000",
			"cluster-port " + strconv.Itoa(bus),
			"cluster-announce-ip 127.0.0.1",
			"cluster-announce-port " + strconv.Itoa(g.Port()),
			"cluster-announce-bus-port " + strconv.Itoa(bus),
		}, o.Args...)
		dir, owned, err := newDir()
		if err != nil {
			return nil, fmt.Errorf("entratest: a directory for a cluster node: %w", err)
		}
		n, err := runRedis(dir, &RedisOptions{Port: port, Args: args})
		if err != nil {
			if owned {
				_ = os.RemoveAll(dir)
			}
			return nil, err
		}
		n.ownDir = owned
		c.nodes = append(c.nodes, n)
	}

	ctx := context.Background()
	admin := make([]*redis.Client, o.Masters)
	for i, n := range c.nodes {
		admin[i] = redis.NewClient(&redis.Options{Addr: n.Addr(), Protocol: 2})
		defer admin[i].Close()
	}
	const slots = 16384
	for i := range o.Masters {
		lo, hi := i*slots/o.Masters, (i+1)*slots/o.Masters-1
		if err := admin[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return nil, fmt.Errorf("entratest: cluster ADDSLOTSRANGE %d %d on %s: %w", lo, hi, c.nodes[i].Addr(), err)
		}
	}
	for i := 1; i < o.Masters; i++ {
		if err := admin[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", c.gateways[i].Port(), buses[i]).Err(); err != nil {
			return nil, fmt.Errorf("entratest: CLUSTER MEET: %w", err)
		}
	}
	deadline := time.Now().Add(o.ReadyTimeout)
	for i := range o.Masters {
		for {
			info, err := admin[i].ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(o.Masters)+"\r") {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("entratest: cluster not ready within %s: node %s: %v %s", o.ReadyTimeout, c.nodes[i].Addr(), err, firstLines(info, 4))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Every node must also point clients at the gateways before a client asks for the slots.
	for i := range o.Masters {
		for {
			ok, err := c.slotsViaGateways(ctx, admin[i])
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("entratest: cluster node %s does not announce the gateway ports within %s: %v", c.nodes[i].Addr(), o.ReadyTimeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, nil
}

// slotsViaGateways reports whether a node's CLUSTER SLOTS covers every slot with gateway addresses.
func (c *Cluster) slotsViaGateways(ctx context.Context, admin *redis.Client) (bool, error) {
	slots, err := admin.ClusterSlots(ctx).Result()
	if err != nil {
		return false, err
	}
	ports := map[string]bool{}
	for _, g := range c.gateways {
		ports[g.Addr()] = true
	}
	covered := 0
	for _, s := range slots {
		for _, n := range s.Nodes {
			if !ports[n.Addr] {
				return false, fmt.Errorf("slot range %d-%d announced at %s", s.Start, s.End, n.Addr)
			}
		}
		covered += s.End - s.Start + 1
	}
	return covered == 16384, nil
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " ")
}

// Addrs returns the gateways' addresses: the seed addresses for redis.ClusterOptions.Addrs.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.gateways))
	for i, g := range c.gateways {
		addrs[i] = g.Addr()
	}
	return addrs
}

// Nodes returns the redis-server nodes, in slot order.
func (c *Cluster) Nodes() []*RedisServer { return c.nodes }

// Gateways returns the gateways, in the order of Nodes.
func (c *Cluster) Gateways() []*Gateway { return c.gateways }

// Stats returns the gateways' counters summed.
func (c *Cluster) Stats() GatewayStats {
	var t GatewayStats
	for _, g := range c.gateways {
		s := g.Stats()
		t.Connections += s.Connections
		t.Active += s.Active
		t.AuthAccepted += s.AuthAccepted
		t.AuthRefused += s.AuthRefused
		t.NoAuth += s.NoAuth
		t.ExpiryCloses += s.ExpiryCloses
		t.IdleCloses += s.IdleCloses
		t.BackendDown += s.BackendDown
	}
	return t
}
