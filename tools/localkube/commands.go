package main

// Fault injection for tests, driven by lines on stdin (the harness's end of the Erlang port):
//
//	kill-apiserver     SIGKILL kube-apiserver; etcd, the kubelet and every pod keep running
//	start-apiserver    start it again on the same port and etcd, wait for /readyz
//	restart-apiserver  both
//
// Each command is answered by one stdout line, `OK <command> k=v...` or
// `ERROR <command>: <reason>`, after the command has taken effect, so a test waits for the
// answer instead of guessing how long a restart takes.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// readCommands sends each non-empty line of r to cmds and calls eof when r ends.
func readCommands(r io.Reader, cmds chan<- string, eof func()) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			cmds <- line
		}
	}
	eof()
}

// serve runs until ctx ends or a component dies on its own, executing commands meanwhile;
// returns the exit code. A kube-apiserver killed by a command is not a death: the loop stops
// watching it until it is started again.
func (lk *localkube) serve(ctx context.Context, cmds <-chan string, out io.Writer) int {
	for {
		var apiDone <-chan struct{}
		if lk.cp.apiserver != nil {
			apiDone = lk.cp.apiserver.done
		}
		select {
		case <-ctx.Done():
			return 0
		case <-lk.cp.etcd.done:
			logf("etcd exited unexpectedly; last lines of %s:\n%s", lk.cp.etcd.logPath, logTail(lk.cp.etcd.logPath, 20))
			return 1
		case <-apiDone:
			logf("kube-apiserver exited unexpectedly; last lines of %s:\n%s", lk.cp.apiserverLogPath(), logTail(lk.cp.apiserverLogPath(), 20))
			return 1
		case line := <-cmds:
			fmt.Fprintln(out, lk.command(ctx, line))
		}
	}
}

// command executes one command and returns its answer line.
func (lk *localkube) command(ctx context.Context, line string) string {
	t0 := time.Now()
	name := strings.Fields(line)[0]
	fail := func(err error) string {
		logf("%s failed: %v", name, err)
		return fmt.Sprintf("ERROR %s: %s", name, oneLine(err.Error()))
	}
	var pid int
	var err error
	switch line {
	case "kill-apiserver":
		pid, err = lk.cp.killAPIServer()
	case "start-apiserver":
		err = lk.cp.restartAPIServer(ctx)
	case "restart-apiserver":
		if pid, err = lk.cp.killAPIServer(); err == nil {
			err = lk.cp.restartAPIServer(ctx)
		}
	default:
		return fmt.Sprintf("ERROR %s: unknown command (kill-apiserver, start-apiserver, restart-apiserver)", name)
	}
	if err != nil {
		return fail(err)
	}
	ms := time.Since(t0).Milliseconds()
	logf("%s done in %d ms (server %s)", name, ms, lk.cp.server)
	if pid != 0 {
		return fmt.Sprintf("OK %s killed_pid=%d ms=%d", name, pid, ms)
	}
	return fmt.Sprintf("OK %s ms=%d", name, ms)
}
