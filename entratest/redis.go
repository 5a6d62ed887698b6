package entratest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisOptions configures StartRedis. Nil or zero fields mean defaults.
type RedisOptions struct {
	// Args are extra configuration directives, one per element, e.g. "appendonly yes" or
	// "save 60 1". Without a "save" directive, snapshots are off (save "").
	Args []string
	Port int // 0: a free port
	// StartTimeout bounds the wait for the server to answer PING; default 10s.
	StartTimeout time.Duration
}

// RedisServer is a redis-server process listening on 127.0.0.1, working in a temporary directory.
type RedisServer struct {
	bin     string
	dir     string
	port    int
	args    []string
	timeout time.Duration
	ownDir  bool // dir was made by RunRedis: Close removes it

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// redisMissing is the failure when redis-server cannot be found.
const redisMissing = "entratest: redis-server not found in PATH: install it " +
	"(Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)"

// StartRedis starts a redis-server on a free 127.0.0.1 port in tb.TempDir() and waits until it
// answers PING. tb.Cleanup stops it. It fails the test (tb.Fatal) when redis-server is missing or
// does not start. RunRedis does the same without a test.
func StartRedis(tb testing.TB, opts *RedisOptions) *RedisServer {
	tb.Helper()
	s, err := runRedis(tb.TempDir(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// RunRedis is StartRedis for a plain program (a local development stack, a demo): it starts a
// redis-server in a new temporary directory and returns an error instead of failing a test. Close
// the server when done: that stops it and removes the directory.
func RunRedis(opts *RedisOptions) (*RedisServer, error) {
	dir, err := os.MkdirTemp("", "entratest-redis-")
	if err != nil {
		return nil, fmt.Errorf("entratest: a directory for redis-server: %w", err)
	}
	s, err := runRedis(dir, opts)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.ownDir = true
	return s, nil
}

// Close stops the server (as Stop) and, for a server from RunRedis, removes its directory.
func (s *RedisServer) Close() error {
	s.Stop()
	if s.ownDir {
		return os.RemoveAll(s.dir)
	}
	return nil
}

func runRedis(dir string, opts *RedisOptions) (*RedisServer, error) {
	var o RedisOptions
	if opts != nil {
		o = *opts
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New(redisMissing)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
	}
	s := &RedisServer{bin: bin, dir: dir, port: o.Port, args: o.Args, timeout: o.StartTimeout}
	// A free port found by listening and closing can be taken by someone else before redis-server
	// binds it; try a few.
	for attempt := 1; ; attempt++ {
		if o.Port == 0 {
			p, err := FreePort()
			if err != nil {
				return nil, err
			}
			s.port = p
		}
		err := s.start()
		if err == nil {
			return s, nil
		}
		if o.Port != 0 || attempt == 3 || !strings.Contains(err.Error(), "in use") {
			return nil, err
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("entratest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns "127.0.0.1:port".
func (s *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the port the server listens on.
func (s *RedisServer) Port() int { return s.port }

// Dir returns the server's working directory (RDB and AOF files, redis.log).
func (s *RedisServer) Dir() string { return s.dir }

func (s *RedisServer) logPath() string { return filepath.Join(s.dir, "redis.log") }

func (s *RedisServer) commandLine() []string {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--logfile", s.logPath(),
		"--daemonize", "no",
	}
	hasSave := false
	for _, a := range s.args {
		f := strings.Fields(a)
		if len(f) == 0 {
			continue
		}
		if strings.EqualFold(f[0], "save") {
			hasSave = true
		}
		args = append(args, "--"+f[0])
		for _, v := range f[1:] {
			args = append(args, strings.Trim(v, `"`))
		}
		if len(f) == 1 {
			args = append(args, "")
		}
	}
	if !hasSave {
		args = append(args, "--save", "")
	}
	return args
}

// start runs the process and waits for PING.
func (s *RedisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("entratest: redis-server is already running")
	}
	// A restart must not read a previous run's log lines as this run's failure.
	_ = os.Remove(s.logPath())
	cmd := exec.Command(s.bin, s.commandLine()...)
	cmd.Dir = s.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("entratest: start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(s.timeout)
	for {
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("entratest: redis-server on port %d exited at start: %s", s.port, s.tail(out.String()))
		default:
		}
		if err := Ping(s.Addr(), 500*time.Millisecond); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("entratest: redis-server on port %d did not answer PING within %s: %s", s.port, s.timeout, s.tail(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tail is the end of the server's output and log, for a failure message.
func (s *RedisServer) tail(out string) string {
	log, _ := os.ReadFile(s.logPath())
	all := strings.TrimSpace(out + "\n" + string(log))
	lines := strings.Split(all, "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, " | ")
}

// Ping sends PING to a Redis server without authentication and reports whether it answered +PONG
// (or NOAUTH, which also proves a live server) within timeout.
func Ping(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("entratest: %s answered PING with %q", addr, strings.TrimSpace(line))
}

// Restart stops the server and starts it again on the same port and directory, so data persisted
// with "appendonly yes" (or a save directive) survives. It fails the test if the server does not
// come back.
func (s *RedisServer) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	// The port was just released; another process is unlikely to take it, but redis-server may
	// briefly see it in use.
	deadline := time.Now().Add(s.timeout)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "in use") || time.Now().After(deadline) {
			tb.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Start starts a stopped server again on the same port and directory.
func (s *RedisServer) Start(tb testing.TB) {
	tb.Helper()
	if err := s.start(); err != nil {
		tb.Fatal(err)
	}
}

// Stop shuts the server down gracefully (SIGTERM: an append-only file is flushed), killing it if
// it has not exited within 10 s. Stopping a stopped server does nothing.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Kill stops the server abruptly (SIGKILL), like a crash: only what was already written to disk
// survives.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd, s.done = nil, nil
}

func (s *RedisServer) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
}
