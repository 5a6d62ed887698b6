// Package envvar names the environment variables Service Connector sets for a Redis connection,
// for the packages that read them (provider.FromEnv, entraredis.NewClientFromEnv, the CLI).
package envvar

const (
	Host         = "AZURE_REDIS_HOST"         // the cache's host name, with or without a port
	Port         = "AZURE_REDIS_PORT"         // the port, when Host has none
	ClientID     = "AZURE_REDIS_CLIENTID"     // a user-assigned identity's or a service principal's client ID
	TenantID     = "AZURE_REDIS_TENANTID"     // the service principal's tenant
	ClientSecret = "AZURE_REDIS_CLIENTSECRET" // the service principal's secret
)
