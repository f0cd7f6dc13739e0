package homeindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/internal/testenv"
)

// A replica in its own process, for tests that SIGKILL replicas: the test
// binary re-executes itself with HOMEINDEX_CHILD=1 and runs only
// TestHomeindexChildProcess, which opens a Node from the environment,
// serves its internal API and blocks until it is killed.

const (
	childEnv       = "HOMEINDEX_CHILD"
	childConfigEnv = "HOMEINDEX_CHILD_CONFIG"
)

// childConfig is what a child replica is told through its environment.
type childConfig struct {
	ID       string `json:"id"`
	Dir      string `json:"dir"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"` // host:port
	Peers    []Peer `json:"peers"`
	Token    string `json:"token"`
}

// TestHomeindexChildProcess is not a test: it is the body of a child
// replica and is skipped unless HOMEINDEX_CHILD=1.
func TestHomeindexChildProcess(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("child replica body; runs only in a process started by a crash test")
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childConfigEnv)), &cfg); err != nil {
		t.Fatalf("child config: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", cfg.ID)
	// Same ports as before the kill: retry while the kernel lets go.
	apiLn, err := listenRetry(cfg.APIAddr)
	if err != nil {
		t.Fatalf("api listen: %v", err)
	}
	raftLn, err := listenRetry(cfg.RaftAddr)
	if err != nil {
		t.Fatalf("raft listen: %v", err)
	}
	node, err := Open(Config{
		ID: cfg.ID, Dir: cfg.Dir, Listener: raftLn, Peers: cfg.Peers, Bootstrap: true, Token: cfg.Token,
		Logger:           logger,
		HeartbeatTimeout: 300 * time.Millisecond,
		ElectionTimeout:  300 * time.Millisecond,
		ApplyTimeout:     3 * time.Second,
	})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	srv := &http.Server{Handler: node.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(apiLn)
	logger.Warn("child replica up", "pid", os.Getpid())

	// The first leader registers the dev policy; after a restart the
	// policy is already in the log and a second SetPolicy is stale.
	go func() {
		for {
			if node.IsLeader() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				err := node.SetPolicy(ctx, 1, dev.Policy)
				cancel()
				if err == nil || errors.Is(err, ErrStalePolicy) {
					return
				}
				logger.Warn("set policy", "err", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	// If the test process dies without killing us (a panic, a test
	// timeout), we are re-parented: exit rather than linger on the ports.
	go func() {
		parent := os.Getppid()
		for range time.Tick(200 * time.Millisecond) {
			if os.Getppid() != parent {
				logger.Warn("parent test process is gone; exiting")
				os.Exit(3)
			}
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Close()
	node.Close()
}

// childProc is one child replica, restartable on the same directory and
// addresses.
type childProc struct {
	cfg     childConfig
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *childProc) start(t testing.TB) {
	t.Helper()
	cfgJSON, _ := json.Marshal(p.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHomeindexChildProcess$", "-test.timeout=0", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1", childConfigEnv+"="+string(cfgJSON))
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start child %s: %v", p.cfg.ID, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *childProc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// startChildren starts n child replicas on fresh loopback ports and makes
// sure they are killed when the test ends, whatever happens.
func startChildren(t *testing.T, n int, token string) []*childProc {
	t.Helper()
	var peers []Peer
	addrs := freeLoopbackAddrs(t, 2*n)
	for i := range n {
		peers = append(peers, Peer{ID: fmt.Sprintf("p%d", i+1), RaftAddr: addrs[2*i], APIAddr: "http://" + addrs[2*i+1]})
	}
	logDir := t.TempDir()
	procs := make([]*childProc, n)
	for i, p := range peers {
		procs[i] = &childProc{
			cfg:     childConfig{ID: p.ID, Dir: t.TempDir(), RaftAddr: p.RaftAddr, APIAddr: strings.TrimPrefix(p.APIAddr, "http://"), Peers: peers, Token: token},
			logPath: filepath.Join(logDir, p.ID+".log"),
		}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				if b, err := os.ReadFile(p.logPath); err == nil {
					t.Logf("--- %s log (last 4 KiB) ---\n%s", p.cfg.ID, tail(b, 4<<10))
				}
			}
		}
	})
	for _, p := range procs {
		p.start(t)
	}
	return procs
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// childStatusJSON is the part of GET /internal/index/status the tests use.
type childStatusJSON struct {
	ID       string `json:"id"`
	Leader   string `json:"leader"`
	CaughtUp bool   `json:"caught_up"`
}

// childStatus asks a child replica for its status over the internal API.
func childStatus(ctx context.Context, api, token string) (childStatusJSON, error) {
	var s childStatusJSON
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/internal/index/status", nil)
	if err != nil {
		return s, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status: HTTP %d", resp.StatusCode)
	}
	err = json.NewDecoder(resp.Body).Decode(&s)
	return s, err
}

// waitChildrenReady waits until every child answers its status with a
// leader.
func waitChildrenReady(t *testing.T, procs []*childProc, token string, d time.Duration) {
	t.Helper()
	for _, p := range procs {
		api := "http://" + p.cfg.APIAddr
		testenv.WaitFor(t, d, p.cfg.ID+" to report a leader", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			s, err := childStatus(ctx, api, token)
			return err == nil && s.Leader != ""
		})
	}
}
