package hook

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/internal/resp"
)

// When the cache refuses a token, what helps depends on the cause, and on whether the server has
// ever accepted that token:
//
//   - a token never accepted (the identity is not a Redis user on the cache yet, a wrong
//     audience, a wrong clock) gets one paced refresh; refused again, or when the refresh brings
//     the same token (azidentity hands back its cached token for up to an hour, a managed
//     identity's for a day), it is blocked, like an open circuit breaker: commands fail at once
//     with the diagnosis (ErrTokenRefused) and nothing is dialled for it;
//   - a token accepted before (a revocation, a failover refusing for a moment) gets the paced
//     refresh and one resend every time it is refused; blocked only when that resend is refused
//     too;
//   - a blocked token is re-checked, half-open: one AUTH with the same token at a time, soon after
//     the block and then at growing intervals (at most maxRecheck apart), per provider whatever
//     the number of hooks and clients. The first acceptance seen anywhere (a re-check, a
//     handshake, the guard's AUTH in place) lifts the block for every command: a cause fixed on
//     the cache's side (an access policy takes minutes to apply) ends it without a restart.
//
// A refusal is charged to the token the refused connection used: a handshake refusal is seen by
// ProcessHook (go-redis sends the handshake through the hooks), with its token. A connection on an
// older token refused blames nothing the server has not refused.

// The re-checks of a blocked token: the first firstRecheck after the block, each later one twice
// as far, at most maxRecheck apart; each shortened by up to a quarter at random (a fleet of
// processes must not re-check in step).
const (
	firstRecheck = 250 * time.Millisecond
	maxRecheck   = 15 * time.Second
)

// probeSpan bounds how long a probe holds the other commands back: a probe may be a slow or
// blocking command (BLPOP 0), whose outcome says nothing for a long time.
const probeSpan = time.Second

// olderToken is tokenState.refused for a refusal of a token older than the provider's current one.
const olderToken = ^uint64(0)

// tokenState is what the hooks of one provider know of its tokens: shared by all of them (see
// stateFor), every field atomic or under its own lock; any hook may change any field.
type tokenState struct {
	blocked  atomic.Pointer[refusal] // the token blocked now; nil: none
	forced   atomic.Uint64           // generation+1 of the last token a refusal's refresh brought
	accepted atomic.Uint64           // the newest generation the server accepted (handshake, AUTH, re-check)
	// refused is the last handshake refusal seen: the refused token's generation when it was the
	// provider's current token, olderToken when it was not; 0: none seen (a hook whose refusals
	// come from elsewhere, as in pure-logic tests: the current token is blamed).
	refused      atomic.Uint64
	sawHandshake atomic.Bool // a handshake carrying a token was seen: refused is evidence
	paced        pacer       // the refreshes refusals force
}

// refusal is a blocked token: the provider's generation gen, and the error its commands get.
type refusal struct {
	gen  uint64
	err  *refusedError
	next atomic.Int64 // unix ns: the earliest start of the next re-check of the same token
	busy atomic.Int64 // unix ns: until when a probe in flight holds the others back (its dial goes through)
	n    atomic.Int32 // re-checks done
}

// recheckAfter is the wait before re-check n+1 (n done).
func recheckAfter(n int) time.Duration {
	d := maxRecheck
	if n < 10 {
		d = min(firstRecheck<<n, maxRecheck)
	}
	return d - rand.N(d/4)
}

// states holds the tokenState of each provider, keyed weakly: a closed and dropped provider is not
// kept reachable, and its entry goes at the next lookup.
var states struct {
	mu sync.Mutex
	m  map[weak.Pointer[byte]]*tokenState
}

// stateFor returns the tokenState the hooks of src share (a source that is not a pointer gets
// its own).
func stateFor(src source) *tokenState {
	v := reflect.ValueOf(src)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return &tokenState{}
	}
	key := weak.Make((*byte)(v.UnsafePointer()))
	states.mu.Lock()
	defer states.mu.Unlock()
	if st := states.m[key]; st != nil {
		return st
	}
	if states.m == nil {
		states.m = map[weak.Pointer[byte]]*tokenState{}
	}
	for k := range states.m {
		if k.Value() == nil {
			delete(states.m, k)
		}
	}
	st := &tokenState{}
	states.m[key] = st
	return st
}

// probeKind says what blockedErr lets a command do.
type probeKind int

const (
	noProbe    probeKind = iota
	probeNewer           // the command is let through: its outcome judges a token newer than the blocked one
	probeSame            // re-check the blocked token with an AUTH first
)

// blockedErr returns the error for a command on the current token, generation gen, when it is
// blocked. On a newer token, the first command is let through as its probe, and the others fail
// at once until it is done: they would only dial, in a burst, for a token as likely to be refused.
// On the blocked token, a re-check is due now and then.
func (h *Hook) blockedErr(gen uint64) (*refusal, probeKind, error) {
	r := h.st.blocked.Load()
	if r == nil {
		return nil, noProbe, nil
	}
	now := time.Now().UnixNano()
	kind := probeNewer
	if r.gen == gen {
		kind = probeSame
	}
	if kind == probeNewer || r.next.Load() <= now {
		if b := r.busy.Load(); b <= now && r.busy.CompareAndSwap(b, now+int64(probeSpan)) {
			return r, kind, nil
		}
	}
	h.refusedCmds.Add(1)
	return nil, noProbe, r.err
}

// probing reports whether a probe of r is in flight: its dial may go through.
func (r *refusal) probing() bool { return r.busy.Load() > time.Now().UnixNano() }

// recheck sends AUTH with the blocked token r through send (the client's next hook: a pooled
// connection, or a new one whose handshake carries the token). It reports whether the server
// accepted it, which lifts the block.
func (h *Hook) recheck(ctx context.Context, r *refusal, send func(ctx context.Context, cmd redis.Cmder) error) bool {
	h.rechecks.Add(1)
	user, pass, err := h.src.CredentialsProviderContext(ctx)
	if info, ok := h.src.Token(); err == nil && (!ok || info.Generation != r.gen) {
		err = errNotBlocked // replaced meanwhile: the command goes on as any other
	}
	if err == nil {
		err = send(ctx, redis.NewStatusCmd(ctx, "auth", user, pass))
	}
	if err == errNotBlocked {
		r.busy.Store(0)
		return true
	}
	h.probed(r, err, r.gen)
	return err == nil
}

var errNotBlocked = errors.New("not the blocked token")

// probed takes the outcome of a probe of r: an answer from the server other than an
// authentication error lifts the block; a refusal, or no answer, sets the next re-check. A refusal
// of a newer token has replaced the block already (onRefused). gen is the token the probe
// carried when that is known (a re-check's AUTH), else 0 (a command, maybe sent on a connection
// on another token).
func (h *Hook) probed(r *refusal, err error, gen uint64) {
	if h.st.blocked.Load() != r {
		return
	}
	var re redis.Error
	if err == nil || err == redis.Nil || (errors.As(err, &re) && classify(err) != kindAuth) {
		h.lift(r, "a probe", gen)
		return
	}
	n := r.n.Add(1)
	r.next.Store(time.Now().Add(recheckAfter(int(n))).UnixNano())
	r.busy.Store(0)
}

// lift ends the block r, if it is still the one, after the server accepted token gen (0:
// unknown).
func (h *Hook) lift(r *refusal, by string, gen uint64) {
	h.raiseAccepted(gen)
	if h.st.blocked.CompareAndSwap(r, nil) {
		h.logf(slog.LevelInfo, "entraredis: the cache accepts the token: commands go through again", slog.String("seen_in", by))
	}
}

// raiseAccepted records that the server accepted token gen (0: nothing).
func (h *Hook) raiseAccepted(gen uint64) {
	for a := h.st.accepted.Load(); a < gen && !h.st.accepted.CompareAndSwap(a, gen); a = h.st.accepted.Load() {
	}
}

// sawAuth takes the server's answer to a handshake or AUTH carrying args (go-redis's HELLO ... AUTH
// user pass, AUTH [user] pass) that passed through ProcessHook: the evidence of which token was
// accepted or refused.
func (h *Hook) sawAuth(ctx context.Context, args []any, err error) {
	pass, ok := passOf(args)
	if !ok {
		return
	}
	switch {
	case err == nil:
		h.tokenAccepted(ctx, pass, "a handshake")
	case classify(err) == kindAuth:
		h.st.sawHandshake.Store(true)
		if gen, ok := h.genOf(ctx, pass); ok {
			h.st.refused.Store(gen)
		} else {
			h.st.refused.Store(olderToken)
		}
	}
}

// tokenAccepted records that the server accepted pass (by: where): when it is the provider's
// current token, a block of it ends.
func (h *Hook) tokenAccepted(ctx context.Context, pass, by string) {
	h.st.sawHandshake.Store(true)
	gen, ok := h.genOf(ctx, pass)
	if !ok {
		return
	}
	h.raiseAccepted(gen)
	h.st.refused.CompareAndSwap(gen, 0)
	if r := h.st.blocked.Load(); r != nil && r.gen == gen {
		h.lift(r, by, gen)
	}
}

// acceptedInPlace is the guard's report of an AUTH it sent (req: the request) answered +OK.
func (h *Hook) acceptedInPlace(req []byte) {
	if _, pass, ok := authArgs(req); ok {
		h.tokenAccepted(context.Background(), pass, "a renewal in place")
	}
}

// genOf returns the generation of the provider's current token when pass is it.
func (h *Hook) genOf(ctx context.Context, pass string) (uint64, bool) {
	info, ok := h.src.Token()
	if !ok {
		return 0, false
	}
	_, cur, err := h.src.CredentialsProviderContext(ctx)
	if err != nil || cur != pass {
		return 0, false
	}
	if again, ok := h.src.Token(); !ok || again.Generation != info.Generation {
		return 0, false
	}
	return info.Generation, true
}

// passOf returns the token in a HELLO or AUTH command's arguments.
func passOf(args []any) (string, bool) {
	if len(args) == 0 {
		return "", false
	}
	name, _ := args[0].(string)
	switch {
	case strings.EqualFold(name, "auth") && len(args) >= 2:
		p, ok := args[len(args)-1].(string)
		return p, ok && p != ""
	case strings.EqualFold(name, "hello"):
		for i := 2; i+2 < len(args); i++ {
			if s, _ := args[i].(string); strings.EqualFold(s, "auth") {
				p, ok := args[i+2].(string)
				return p, ok && p != ""
			}
		}
	}
	return "", false
}

// authArgs returns the username and token of an AUTH request.
func authArgs(req []byte) (user, pass string, ok bool) {
	u, p, ok := resp.AuthArgs(req)
	return string(u), string(p), ok
}

// resendAnswered takes the success of a command sent again on token gen after a refusal. Where no
// handshake is seen (a hook whose connections ProcessHook never sees set up, as in pure-logic
// tests), that success is the only evidence that the server accepts gen; otherwise the handshake
// said so already, and the command may have run on a connection on another token.
func (h *Hook) resendAnswered(gen uint64) {
	if !h.st.sawHandshake.Load() {
		h.raiseAccepted(gen)
	}
}
