package entraredis

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/internal/envvar"
	"github.com/entraredis/entraredis/provider"
)

// envHost is the variable in which Service Connector puts the cache's host name, e.g.
// "<name>.redis.cache.windows.net", and envPort the port when the host name has none; the
// identity's are read by provider.FromEnv.
const (
	envHost = envvar.Host
	envPort = envvar.Port
)

// The ports Azure listens on for TLS: Azure Cache for Redis, and Azure Managed Redis (and Enterprise).
const (
	portAzureCache   = "6380"
	portManagedRedis = "10000"
)

// ErrMissingEnv is matched (errors.Is) by the error of NewClientFromEnv when AZURE_REDIS_HOST is
// not set (or blank); the error names it. The identity's variables are checked by
// provider.FromEnv, whose errors name the missing one without wrapping ErrMissingEnv.
var ErrMissingEnv = errors.New("entraredis: environment variable not set")

// managedSuffixes are the host name suffixes whose caches listen on portManagedRedis.
var managedSuffixes = []string{
	".redis.azure.net", ".redis.usgovcloudapi.net", ".redis.chinacloudapi.cn",
	".redis.sovcloud-api.fr", ".redis.sovcloud-api.de", ".redis.sovcloud-api.sg",
	".redisenterprise.cache.azure.net", ".redisenterprise.cache.azure.us",
}

// NewClientFromEnv returns a client of the cache that Service Connector (or any deployment that
// sets the same variables) names, and the provider its tokens come from: close both when done.
//
// The address is AZURE_REDIS_HOST, with its port if it has one; otherwise AZURE_REDIS_PORT when set;
// otherwise port 10000 for an Azure Managed Redis host name and 6380 for the others (Azure Cache
// for Redis), as the entraredis command's check does. The identity is chosen
// by provider.FromEnv from AZURE_REDIS_CLIENTID, AZURE_REDIS_TENANTID and AZURE_REDIS_CLIENTSECRET.
// opt (nil: defaults) gives go-redis's other options, as for NewClient; its Addr must be empty.
// popts (nil: defaults) are the provider's.
//
// It does no network I/O: the first command fetches the token and connects.
func NewClientFromEnv(opt *redis.Options, popts *provider.Options) (*redis.Client, *provider.Provider, error) {
	var o redis.Options
	if opt != nil {
		o = *opt
	}
	if o.Addr != "" {
		return nil, nil, fmt.Errorf("entraredis: NewClientFromEnv takes the address from %s, but opt.Addr is %q: leave it empty, or use NewClient", envHost, o.Addr)
	}
	addr, err := envAddr(os.Getenv(envHost), os.Getenv(envPort))
	if err != nil {
		return nil, nil, err
	}
	o.Addr = addr
	p, err := provider.FromEnv(popts)
	if err != nil {
		return nil, nil, fmt.Errorf("entraredis: the identity from Service Connector's variables: %w", err)
	}
	return NewClient(p, &o), p, nil
}

// envAddr turns AZURE_REDIS_HOST's value into host:port; port is AZURE_REDIS_PORT's value, used
// when the host has no port of its own.
func envAddr(v, port string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", fmt.Errorf("%w: %s: connect the app to the cache with Service Connector, or set it to the cache's host name (<name>.redis.cache.windows.net)",
			ErrMissingEnv, envHost)
	}
	if strings.Contains(v, "/") {
		return "", fmt.Errorf("entraredis: %s=%q is not a host name: set it to the cache's host name, with a port if needed (<name>.redis.cache.windows.net:6380)", envHost, v)
	}
	if host, port, err := net.SplitHostPort(v); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("entraredis: %s=%q needs a host name and a port, or a host name alone", envHost, v)
		}
		return v, nil
	}
	host := strings.Trim(v, "[]") // a bare IPv6 address
	if port = strings.TrimSpace(port); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("entraredis: %s=%q is not a port number", envPort, port)
		}
		return net.JoinHostPort(host, port), nil
	}
	port = portAzureCache
	lower := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, s := range managedSuffixes {
		if strings.HasSuffix(lower, s) {
			port = portManagedRedis
			break
		}
	}
	return net.JoinHostPort(host, port), nil
}
