package resp

import (
	"testing"
)

// Typical go-redis traffic: +OK, a GET's bulk reply, a SET request, and a pipeline of 10.
var (
	benchOK       = []byte("+OK\r\n")
	benchBulk     = []byte("$5\r\nhello\r\n")
	benchSet      = AppendRequest(nil, "set", "key:000001", "hello")
	benchPipeline = func() (req, replies []byte) {
		for range 10 {
			req = AppendRequest(req, "set", "key:000001", "hello")
			replies = append(replies, benchOK...)
		}
		return req, replies
	}
)

func BenchmarkFrameLen(b *testing.B) {
	_, replies := benchPipeline()
	for _, bc := range []struct {
		name string
		in   []byte
	}{{"OK", benchOK}, {"bulk", benchBulk}, {"pipeline10", replies}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.in)))
			for b.Loop() {
				for i := 0; i < len(bc.in); {
					n, err := FrameLen(bc.in[i:])
					if n == 0 || err != nil {
						b.Fatal(n, err)
					}
					i += n
				}
			}
		})
	}
}

func BenchmarkReplyScanner(b *testing.B) {
	_, replies := benchPipeline()
	for _, bc := range []struct {
		name string
		in   []byte
		want int
	}{{"OK", benchOK, 1}, {"bulk", benchBulk, 1}, {"pipeline10", replies, 10}} {
		b.Run(bc.name, func(b *testing.B) {
			var s ReplyScanner
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.in)))
			for b.Loop() {
				if r, _, err := s.Feed(bc.in); r != bc.want || err != nil {
					b.Fatal(r, err)
				}
			}
		})
	}
}

func BenchmarkRequestScanner(b *testing.B) {
	req, _ := benchPipeline()
	for _, bc := range []struct {
		name string
		in   []byte
		want int
	}{{"SET", benchSet, 1}, {"pipeline10", req, 10}} {
		b.Run(bc.name, func(b *testing.B) {
			var s RequestScanner
			n := 0
			visit := func([]byte) { n++ }
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.in)))
			for b.Loop() {
				n = 0
				if err := s.Feed(bc.in, visit); n != bc.want || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

func BenchmarkKindOfName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if KindOf(Name(benchSet)) != Other {
			b.Fatal()
		}
	}
}
