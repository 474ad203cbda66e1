package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The watchdog is a small helper process (`localkube __watchdog`) that cleans up if localkube
// itself dies without doing so (SIGKILL, a crash). localkube keeps the write end of a pipe that is
// the watchdog's stdin and tells it, one line per event:
//
//	pgid N     a process group to kill if localkube dies (etcd, kube-apiserver, each container)
//	done N     that group is gone
//	rmdir DIR  a directory to remove if localkube dies (its temporary state dir)
//	bye        clean shutdown: forget everything and exit
//
// On EOF without "bye" it SIGKILLs every registered group and removes the directories.
// Pdeathsig covers direct children only; the watchdog also catches their descendants.

type watchdog struct {
	mu   sync.Mutex
	w    io.WriteCloser
	cmd  *exec.Cmd
	dead bool
}

func startWatchdog() (*watchdog, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "__watchdog")
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	// Its own process group: a Ctrl-C aimed at localkube's group must not take it down first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &watchdog{w: w, cmd: cmd}, nil
}

func (wd *watchdog) send(format string, args ...any) {
	if wd == nil {
		return
	}
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.dead {
		return
	}
	if _, err := fmt.Fprintf(wd.w, format+"\n", args...); err != nil {
		wd.dead = true
	}
}

func (wd *watchdog) watchGroup(pgid int) { wd.send("pgid %d", pgid) }
func (wd *watchdog) groupDone(pgid int)  { wd.send("done %d", pgid) }
func (wd *watchdog) removeOnDeath(dir string) {
	if !strings.ContainsAny(dir, "\n") {
		wd.send("rmdir %s", dir)
	}
}

// release ends the watchdog after a clean shutdown.
func (wd *watchdog) release() {
	if wd == nil {
		return
	}
	wd.send("bye")
	wd.mu.Lock()
	_ = wd.w.Close()
	wd.dead = true
	wd.mu.Unlock()
	done := make(chan struct{})
	go func() { _ = wd.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = wd.cmd.Process.Kill()
	}
}

// runWatchdog is the watchdog process's main.
func runWatchdog() int {
	// Ignore the signals a terminal or a harness may send to everything; EOF is our only trigger.
	signalIgnore()
	groups := map[int]bool{}
	var dirs []string
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "pgid", "done":
			n, err := strconv.Atoi(arg)
			if err != nil || n <= 1 {
				continue
			}
			if cmd == "pgid" {
				groups[n] = true
			} else {
				delete(groups, n)
			}
		case "rmdir":
			dirs = append(dirs, arg)
		case "bye":
			return 0
		}
	}
	if len(groups) == 0 && len(dirs) == 0 {
		return 0
	}
	fmt.Fprintf(os.Stderr, "[localkube-watchdog] localkube died without cleaning up: killing %d process group(s)\n", len(groups))
	for pg := range groups {
		_ = syscall.Kill(-pg, syscall.SIGKILL)
	}
	time.Sleep(300 * time.Millisecond)
	for pg := range groups {
		_ = syscall.Kill(-pg, syscall.SIGKILL)
	}
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
	return 0
}
