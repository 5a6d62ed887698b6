package entratest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGatewayUsers: a valid token of an oid that is not a Redis user is refused with Redis's
// WRONGPASS (what Azure answers an identity without an access policy); SetUsers and AllowAllUsers
// change that on a running gateway, for new AUTHs. Refusals are counted.
func TestGatewayUsers(t *testing.T) {
	iss := newTestIssuer(t, nil)
	g := StartGateway(t, iss, startBackend(t, "miniredis"), &GatewayOptions{Users: []string{"someone-else"}})
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	c := dialRaw(t, g.Addr())
	assert.Equal(t, replyNoUser, c.roundTrip("AUTH", iss.ObjectID(), tok))
	assert.Equal(t, replyNoUser, c.roundTrip("HELLO", "3", "AUTH", iss.ObjectID(), tok))
	assert.Equal(t, "-NOAUTH Authentication required.\r\n", c.roundTrip("PING"))
	g.SetUsers(iss.ObjectID())
	assert.Equal(t, "+OK\r\n", c.roundTrip("AUTH", iss.ObjectID(), tok))
	g.SetUsers()
	assert.Equal(t, "+PONG\r\n", c.roundTrip("PING"), "an authenticated connection keeps its authentication")
	assert.Equal(t, replyNoUser, dialRaw(t, g.Addr()).roundTrip("AUTH", iss.ObjectID(), tok), "no user at all")
	g.AllowAllUsers()
	assert.Equal(t, "+OK\r\n", dialRaw(t, g.Addr()).roundTrip("AUTH", iss.ObjectID(), tok))
	assert.Equal(t, int64(3), g.Stats().AuthRefused)
}

// TestGatewayClockSkew: a cache clock ahead by more than a token's life finds it expired; one
// behind finds it not valid yet (nbf); a small skew changes nothing.
func TestGatewayClockSkew(t *testing.T) {
	iss := newTestIssuer(t, nil)
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	for _, tc := range []struct {
		skew time.Duration
		want string
	}{
		{2 * time.Hour, replyWrongPass},
		{-10 * time.Minute, replyWrongPass},
		{30 * time.Second, "+OK\r\n"},
	} {
		t.Run(tc.skew.String(), func(t *testing.T) {
			g := StartGateway(t, iss, startBackend(t, "miniredis"), &GatewayOptions{ClockSkew: tc.skew})
			assert.Equal(t, tc.want, dialRaw(t, g.Addr()).roundTrip("AUTH", iss.ObjectID(), tok))
		})
	}
}
