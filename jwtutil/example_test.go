package jwtutil_test

import (
	"encoding/base64"
	"fmt"

	"github.com/entraredis/entraredis/jwtutil"
)

func ExampleParseClaims() {
	enc := base64.RawURLEncoding.EncodeToString
	token := enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc([]byte(`{"oid":"6f3d2c1b-0a9e-4d8c-b7a6-5f4e3d2c1b0a","aud":"https://redis.azure.com","exp":1700003600}`)) + "." +
		enc([]byte("signature, checked by the server"))

	c, err := jwtutil.ParseClaims(token)
	if err != nil {
		fmt.Println(err)
		return
	}
	user, err := c.RequireObjectID()
	fmt.Println(user, err)
	fmt.Println(c.Audience, c.ExpiresAt)

	_, err = jwtutil.ParseClaims("not-a-jwt")
	fmt.Println(err)
	// Output:
	// 6f3d2c1b-0a9e-4d8c-b7a6-5f4e3d2c1b0a <nil>
	// [https://redis.azure.com] 2023-11-14 23:13:20 +0000 UTC
	// jwtutil: malformed token: has 1 segments, want 3
}
