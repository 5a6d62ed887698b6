package resp_test

import (
	"fmt"

	"github.com/entraredis/entraredis/internal/resp"
)

func Example() {
	// A request, as go-redis writes one, and what the codec reads in it.
	req := resp.AppendRequest(nil, "AUTH", "user", "token")
	user, _, _ := resp.AuthArgs(req)
	fmt.Println(resp.KindOf(resp.Name(req)) == resp.Auth, string(user))

	// Replies arrive in pieces; an attribute belongs to the reply after it, a push is no reply.
	stream := []byte("|1\r\n+ttl\r\n:3\r\n+OK\r\n>2\r\n$7\r\nmessage\r\n$2\r\nhi\r\n$5\r\nhello\r\n")
	n, _ := resp.FrameLen(stream)
	fmt.Printf("first frame: %q\n", stream[:n])

	var s resp.ReplyScanner
	replies, pushes, _ := s.Feed(stream[:20])
	fmt.Println(replies, pushes, s.Mid())
	replies, pushes, _ = s.Feed(stream[20:])
	fmt.Println(replies, pushes, s.Mid())
	// Output:
	// true user
	// first frame: "|1\r\n+ttl\r\n:3\r\n+OK\r\n"
	// 1 0 true
	// 1 1 false
}
