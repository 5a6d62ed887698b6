package resp

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// Run each for a minute:
//	go test ./internal/resp -run '^$' -fuzz FuzzFrameLen -fuzztime 60s -parallel 1

func addFrameSeeds(f *testing.F) {
	for _, tc := range frameCases {
		f.Add([]byte(tc.in), uint64(len(tc.in)))
	}
	f.Add([]byte("+OK\r\n$5\r\nhello\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n|1\r\n+a\r\n+b\r\n:1\r\n"), uint64(7))
}

// cutsOf turns a seed into increasing cut offsets in [1, n): the pieces a stream arrives in.
func cutsOf(seed uint64, n int) []int {
	r := rand.New(rand.NewPCG(seed, seed>>7|1))
	var cuts []int
	for c := 1 + r.IntN(4); c < n; c += 1 + r.IntN(1+r.IntN(16)) {
		cuts = append(cuts, c)
	}
	return cuts
}

// FuzzFrameLen: FrameLen never panics, and agrees with itself on every prefix: nothing before the
// frame's last byte is a frame, and an error appears once, when the line that breaks a rule is
// complete, and stays.
func FuzzFrameLen(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, _ uint64) {
		n, err := FrameLen(b)
		if n < 0 || n > len(b) || err != nil && n != 0 {
			t.Fatalf("FrameLen(%q) = %d, %v", b, n, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("FrameLen(%q): unexpected error %v", b, err)
		}
		if n > 0 {
			if m, err := FrameLen(b[:n]); m != n || err != nil {
				t.Fatalf("FrameLen(%q) = %d, but on its frame %d, %v", b, n, m, err)
			}
		}
		end := n
		if n == 0 {
			end = len(b)
		}
		seenErr := false
		for k := range end {
			m, perr := FrameLen(b[:k])
			if m != 0 {
				t.Fatalf("FrameLen(%q) = %d: prefix %q is a frame", b, n, b[:k])
			}
			if perr != nil {
				seenErr = true
				if !errors.Is(perr, err) {
					t.Fatalf("FrameLen(%q): prefix %q fails with %v, the whole with %v", b, b[:k], perr, err)
				}
			} else if seenErr {
				t.Fatalf("FrameLen(%q): prefix %q succeeds after a shorter one failed", b, b[:k])
			}
		}
		if typ, p := Payload(b[:n]); n > 0 && (typ == 0 || len(p) > n) {
			t.Fatalf("Payload(%q) = %q, %q", b[:n], typ, p)
		}
	})
}

// FuzzReplyScanner: fed in random pieces, the scanner counts the frames FrameLen finds in the
// whole stream, replies and pushes apart, and fails where it fails.
func FuzzReplyScanner(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		wr, wp, wmid, werr := wholeReplies(b)
		cuts := cutsOf(seed, len(b))
		r, p, mid, err := feedReplies(b, cuts)
		if r != wr || p != wp || !errors.Is(err, werr) || err != nil && werr == nil || err == nil && mid != wmid {
			t.Fatalf("%q cut at %v: scanner %d replies, %d pushes, mid %v, %v; FrameLen %d, %d, mid %v, %v",
				b, cuts, r, p, mid, err, wr, wp, wmid, werr)
		}
	})
}

func addRequestSeeds(f *testing.F) {
	f.Add(AppendRequest(AppendRequest(nil, "set", "key", "hello"), "GET", "key"), uint64(3))
	f.Add(AppendRequest(AppendRequest(AppendRequest(nil, "multi"), "incr", "n"), "exec"), uint64(5))
	f.Add(AppendRequest(nil, "hello", "3", "auth", "user", "token"), uint64(1))
	f.Add([]byte("*0\r\n*-1\r\n*1\r\n$0\r\n\r\n"), uint64(2))
	f.Add([]byte("*1\r\n$4\r\nPINGxx*1\r\n$1\n"), uint64(9))
}

// FuzzRequestScanner: fed in random pieces, the scanner names the commands SplitArgs finds in the
// whole stream (and perhaps the next, whose name alone is there), and fails where it fails.
func FuzzRequestScanner(f *testing.F) {
	addRequestSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		want, werr := wholeNames(b)
		cuts := cutsOf(seed, len(b))
		names, _, err := feedNames(b, cuts)
		ok := errors.Is(err, werr) && (err == nil) == (werr == nil) &&
			len(names) >= len(want) && len(names) <= len(want)+1
		for i := 0; ok && i < len(want); i++ {
			ok = names[i] == want[i]
		}
		if !ok {
			t.Fatalf("%q cut at %v: scanner %q, %v; SplitArgs %q, %v", b, cuts, names, err, want, werr)
		}
	})
}

// FuzzSplitArgs: SplitArgs never panics; what it accepts, AppendRequest writes back byte for
// byte (the grammar has one spelling per request); and Name and AuthArgs agree with it.
func FuzzSplitArgs(f *testing.F) {
	addRequestSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, _ uint64) {
		args, n, err := SplitArgs(b)
		if err != nil || n == 0 {
			return
		}
		strs := make([]string, len(args))
		for i, a := range args {
			strs[i] = string(a)
		}
		again := AppendRequest(nil, strs...)
		if len(args) == 0 {
			if !bytes.Equal(b[:n], []byte("*0\r\n")) && !bytes.Equal(b[:n], []byte("*-1\r\n")) {
				t.Fatalf("SplitArgs(%q): empty request of %d bytes", b, n)
			}
			return
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("SplitArgs(%q) = %q, written back as %q", b[:n], strs, again)
		}
		if name := Name(b); !bytes.Equal(name, args[0]) {
			t.Fatalf("Name(%q) = %q, SplitArgs %q", b, name, args[0])
		}
		user, pass, ok := AuthArgs(b)
		if ok && (!bytes.Contains(b[:n], pass) || user != nil && !bytes.Contains(b[:n], user)) {
			t.Fatalf("AuthArgs(%q) = %q, %q", b, user, pass)
		}
	})
}

// FuzzFrameLenFast: FrameLen's one-pass path (frameLen) agrees with the general parser wherever
// it answers.
func FuzzFrameLenFast(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "-ERR x\r\n", ":12\r\n", "$3\r\nabc\r\n", "$0\r\n\r\n", "$-1\r\n",
		"+\r\n", "+a\rb\r\n", "$03\r\nabc\r\n", "$3\r\nab", ":1\n", "$1\r\n\r\n\r\n", "*1\r\n$1\r\na\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := frameLen(b)
		if n == 0 {
			return
		}
		if want, err := value(b, 0, 0); err != nil || want != n {
			t.Fatalf("%q: frameLen %d; value %d %v", b, n, want, err)
		}
	})
}
