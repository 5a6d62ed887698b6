package entratest

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Azure accepts tokens for https://redis.azure.com and for the GUID scope Microsoft documents as its
// alternative (acca5fbb-.../.default); the gateway does too, and nothing else.
func TestGatewayAudiences(t *testing.T) {
	iss := newTestIssuer(t, nil)
	g := StartGateway(t, iss, startBackend(t, "miniredis"), nil)
	for _, tc := range []struct {
		aud string
		ok  bool
	}{
		{Audience, true},
		{AudienceAppID, true},
		{"https://storage.azure.com", false},
		{"00000000-0000-0000-0000-000000000000", false},
		{"https://redis.azure.com/", false},
	} {
		t.Run(tc.aud, func(t *testing.T) {
			tok, _, err := iss.MintWith(TokenOptions{Lifetime: time.Hour, Audience: tc.aud})
			require.NoError(t, err)
			c := redis.NewClient(&redis.Options{Addr: g.Addr(), Username: iss.ObjectID(), Password: tok, MaxRetries: -1})
			defer c.Close()
			err = c.Ping(context.Background()).Err()
			if tc.ok {
				assert.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "WRONGPASS")
			}
		})
	}
	// The issuer as a credential, asked for the GUID scope.
	at, err := iss.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{AudienceAppID + "/.default"}})
	require.NoError(t, err)
	c := redis.NewClient(&redis.Options{Addr: g.Addr(), Username: iss.ObjectID(), Password: at.Token})
	defer c.Close()
	assert.NoError(t, c.Ping(context.Background()).Err())
}
