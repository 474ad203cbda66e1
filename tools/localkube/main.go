// Command localkube runs a local Kubernetes control plane for tests: etcd, kube-apiserver and a
// simulated kubelet that runs pods as local OS processes.
//
//	localkube up --etcd BIN --apiserver BIN [--state-dir DIR] [--image NAME=PATH]...
//	             [--kubelet-log FILE] [--node-name sim-node] [--apiserver-arg ARG]...
//	             [--startup-timeout 90s] [--exit-on-stdin-eof=true]
//	localkube dry-run|create [--kubeconfig FILE] [--context NAME] [--namespace NS] FILE...
//
// On success it prints exactly one line to stdout:
//
//	READY kubeconfig=<abs path> server=https://127.0.0.1:<port> state_dir=<dir> kubelet_log=<abs path>
//
// and on failure `FAILED <reason>` (exit status 1). It runs until stdin reaches EOF, SIGTERM or
// SIGINT, then stops everything it started and exits 0. Lines on stdin are fault-injection
// commands for tests (see commands.go), each answered by one line on stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logf writes a diagnostic line to stderr (stdout is reserved for the READY/FAILED line).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[localkube] "+format+"\n", args...)
}

type imageFlag map[string]string

func (f imageFlag) String() string {
	var parts []string
	for k, v := range f {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (f imageFlag) Set(s string) error {
	name, path, ok := strings.Cut(s, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("want NAME=PATH, got %q", s)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("image %s: %w", name, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("image %s: %s is not an executable file", name, abs)
	}
	f[name] = abs
	return nil
}

type listFlag []string

func (f *listFlag) String() string     { return strings.Join(*f, " ") }
func (f *listFlag) Set(s string) error { *f = append(*f, s); return nil }

type upConfig struct {
	etcdBin, apiserverBin string
	stateDir              string
	kubeletLog            string
	nodeName              string
	images                imageFlag
	apiserverArgs         listFlag
	startupTimeout        time.Duration
	exitOnStdinEOF        bool
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: localkube up --etcd BIN --apiserver BIN [flags]

Starts etcd, kube-apiserver and a simulated kubelet on 127.0.0.1. Prints one line to stdout:
  READY kubeconfig=<path> server=https://127.0.0.1:<port> state_dir=<dir> kubelet_log=<path>
or FAILED <reason>. Runs until stdin reaches EOF, SIGINT or SIGTERM.

Run "localkube up -h" for the flags.

       localkube dry-run [--kubeconfig FILE] [--namespace NS] FILE...
       localkube create  [--kubeconfig FILE] [--namespace NS] FILE...

Send every object of the YAML files to the API server (dry-run: ?dryRun=All, nothing stored).
Prints "ok Kind/name" or "FAILED Kind/name: message" per object. See "localkube dry-run -h".
`)
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "up":
		os.Exit(runUp(os.Args[2:]))
	case "dry-run", "create":
		os.Exit(runManifests(os.Args[1], os.Args[2:], os.Stdout, os.Stderr))
	case "__watchdog":
		os.Exit(runWatchdog())
	case "-h", "--help", "help":
		usage(os.Stdout)
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
}

func parseUp(args []string) (*upConfig, error) {
	cfg := &upConfig{images: imageFlag{}}
	fs := flag.NewFlagSet("localkube up", flag.ContinueOnError)
	fs.StringVar(&cfg.etcdBin, "etcd", "", "path of the etcd binary (required)")
	fs.StringVar(&cfg.apiserverBin, "apiserver", "", "path of the kube-apiserver binary (required)")
	fs.StringVar(&cfg.stateDir, "state-dir", "", "directory for certificates, logs, etcd data and pod logs (default: a fresh temp dir, removed at exit)")
	fs.StringVar(&cfg.kubeletLog, "kubelet-log", "", "simulated kubelet event log (default <state-dir>/kubelet.log)")
	fs.StringVar(&cfg.nodeName, "node-name", "sim-node", "name of the simulated node")
	fs.Var(cfg.images, "image", "NAME=PATH: run image NAME (exact reference) with the executable PATH as entrypoint (repeatable)")
	fs.Var(&cfg.apiserverArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--v=2 (repeatable)")
	fs.DurationVar(&cfg.startupTimeout, "startup-timeout", 90*time.Second, "how long to wait for kube-apiserver to become ready")
	fs.BoolVar(&cfg.exitOnStdinEOF, "exit-on-stdin-eof", true, "stop when stdin reaches EOF (set false when stdin is /dev/null)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for flagName, p := range map[string]*string{"--etcd": &cfg.etcdBin, "--apiserver": &cfg.apiserverBin} {
		if *p == "" {
			return nil, fmt.Errorf("%s is required", flagName)
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() {
			return nil, fmt.Errorf("%s: %s is not a file", flagName, abs)
		}
		*p = abs
	}
	return cfg, nil
}

// stopper records the first reason to stop and cancels a context with it.
type stopper struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelCauseFunc
	reason string
}

func (s *stopper) stop(reason string) {
	s.once.Do(func() {
		s.reason = reason
		s.cancel(errors.New(reason))
	})
}

func runUp(args []string) int {
	t0 := time.Now()
	cfg, err := parseUp(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Printf("FAILED %s\n", oneLine(err.Error()))
		return 2
	}
	// A closed stdout/stderr (the test VM went away) must not kill us before we clean up.
	signal.Ignore(syscall.SIGPIPE)

	st := &stopper{}
	st.ctx, st.cancel = context.WithCancelCause(context.Background())
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		st.stop("received " + s.String())
		<-sigc
		logf("second signal: exiting at once")
		os.Exit(130)
	}()
	if cfg.exitOnStdinEOF && stdinIsDevNull() {
		logf("stdin is /dev/null: not treating its EOF as a stop request (stop with SIGTERM or SIGINT)")
		cfg.exitOnStdinEOF = false
	}
	commands := make(chan string, 16)
	if cfg.exitOnStdinEOF {
		go readCommands(os.Stdin, commands, func() { st.stop("stdin closed") })
	}

	wd, err := startWatchdog()
	if err != nil {
		logf("cannot start the watchdog (cleanup after a SIGKILL will be incomplete): %v", err)
	}
	lk := &localkube{cfg: cfg, wd: wd}
	ready, err := lk.start(st.ctx)
	if err != nil && st.ctx.Err() != nil {
		fmt.Printf("FAILED interrupted during startup: %s\n", st.reason)
		lk.shutdown()
		return 1
	}
	if err != nil {
		fmt.Printf("FAILED %s\n", oneLine(err.Error()))
		var se *startupError
		if errors.As(err, &se) && se.logPath != "" {
			fmt.Fprintf(os.Stderr, "[localkube] %s failed; last lines of %s:\n%s\n", se.component, se.logPath, logTail(se.logPath, 30))
		}
		lk.shutdown()
		return 1
	}
	fmt.Printf("READY kubeconfig=%s server=%s state_dir=%s kubelet_log=%s\n", ready.kubeconfig, ready.server, ready.stateDir, ready.kubeletLog)
	logf("ready in %.1fs: export KUBECONFIG=%s", time.Since(t0).Seconds(), ready.kubeconfig)

	code := lk.serve(st.ctx, commands, os.Stdout)
	if st.reason != "" {
		logf("stopping: %s", st.reason)
	}
	lk.shutdown()
	logf("stopped")
	return code
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

type readyInfo struct{ kubeconfig, server, stateDir, kubeletLog string }

// localkube is everything `up` starts.
type localkube struct {
	cfg         *upConfig
	stateDir    string
	ownStateDir bool
	cp          *controlPlane
	kubelet     *kubelet
	heartbeat   context.CancelFunc
	kubeletLog  *os.File
	wd          *watchdog
}

func (lk *localkube) start(ctx context.Context) (*readyInfo, error) {
	cfg := lk.cfg
	if cfg.stateDir == "" {
		dir, err := os.MkdirTemp("", "localkube-")
		if err != nil {
			return nil, err
		}
		lk.stateDir, lk.ownStateDir = dir, true
		lk.wd.removeOnDeath(dir)
	} else {
		dir, err := filepath.Abs(cfg.stateDir)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		lk.stateDir = dir
		// A reused state dir starts from scratch: no pods survive a restart.
		for _, sub := range []string{"etcd-data", "pods", "pki", "apiserver-certs", "kubeconfig"} {
			_ = os.RemoveAll(filepath.Join(dir, sub))
		}
	}
	kubeletLogPath := cfg.kubeletLog
	if kubeletLogPath == "" {
		kubeletLogPath = filepath.Join(lk.stateDir, "kubelet.log")
	}
	kubeletLogPath, err := filepath.Abs(kubeletLogPath)
	if err != nil {
		return nil, err
	}
	pki, err := generatePKI(filepath.Join(lk.stateDir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("generating certificates: %w", err)
	}
	lk.cp = &controlPlane{cfg: cfg, stateDir: lk.stateDir, pki: pki, wd: lk.wd}
	t0 := time.Now()
	if err := lk.cp.startEtcd(ctx); err != nil {
		return nil, err
	}
	logf("etcd healthy in %.1fs at %s", time.Since(t0).Seconds(), lk.cp.etcdURL)
	t0 = time.Now()
	if err := lk.cp.startAPIServer(ctx); err != nil {
		return nil, err
	}
	logf("kube-apiserver ready in %.1fs at %s", time.Since(t0).Seconds(), lk.cp.server)
	if err := lk.cp.writeKubeconfig(); err != nil {
		return nil, fmt.Errorf("writing kubeconfig: %w", err)
	}
	if err := lk.cp.waitForSystemNamespaces(ctx); err != nil {
		return nil, &startupError{"kube-apiserver", lk.cp.apiserverLogPath(), err}
	}
	version := "v0.0.0"
	if v, err := lk.cp.client.Discovery().ServerVersion(); err == nil {
		version = v.GitVersion
	}

	na := &nodeAgent{client: lk.cp.client, name: cfg.nodeName, version: version + "-sim"}
	if err := na.register(ctx); err != nil {
		return nil, fmt.Errorf("registering node %s: %w", cfg.nodeName, err)
	}
	hbCtx, hbCancel := context.WithCancel(context.Background())
	lk.heartbeat = hbCancel
	go na.heartbeat(hbCtx)

	if err := os.MkdirAll(filepath.Dir(kubeletLogPath), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(kubeletLogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kubelet log: %w", err)
	}
	lk.kubeletLog = f
	serviceEnv := map[string]string{
		"KUBERNETES_SERVICE_HOST":       "127.0.0.1",
		"KUBERNETES_SERVICE_PORT":       strconv.Itoa(lk.cp.apiPort),
		"KUBERNETES_SERVICE_PORT_HTTPS": strconv.Itoa(lk.cp.apiPort),
		"KUBERNETES_PORT":               fmt.Sprintf("tcp://127.0.0.1:%d", lk.cp.apiPort),
	}
	lk.kubelet = newKubelet(lk.cp.client, na.node, cfg.images, lk.stateDir, &eventLog{w: f}, serviceEnv)
	lk.kubelet.wd = lk.wd
	if err := lk.kubelet.start(); err != nil {
		return nil, fmt.Errorf("simulated kubelet: %w", err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted: %v", context.Cause(ctx))
	}
	return &readyInfo{kubeconfig: lk.cp.kubeconfig, server: lk.cp.server, stateDir: lk.stateDir, kubeletLog: kubeletLogPath}, nil
}

// shutdown stops the kubelet (killing every pod process), the apiserver and etcd, and removes a
// temporary state dir.
func (lk *localkube) shutdown() {
	if lk.heartbeat != nil {
		lk.heartbeat()
	}
	if lk.kubelet != nil {
		lk.kubelet.stop()
	}
	if lk.cp != nil {
		lk.cp.stop()
	}
	if lk.kubeletLog != nil {
		lk.kubeletLog.Close()
	}
	if lk.ownStateDir && lk.stateDir != "" {
		if err := os.RemoveAll(lk.stateDir); err != nil {
			logf("removing %s: %v", lk.stateDir, err)
		}
	}
	lk.wd.release()
}

func signalIgnore() {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGQUIT)
}

// stdinIsDevNull reports whether stdin is /dev/null (where EOF comes at once and means nothing).
func stdinIsDevNull() bool {
	var in, null syscall.Stat_t
	if syscall.Fstat(0, &in) != nil || syscall.Stat(os.DevNull, &null) != nil {
		return false
	}
	return in.Mode&syscall.S_IFMT == syscall.S_IFCHR && in.Rdev == null.Rdev
}
