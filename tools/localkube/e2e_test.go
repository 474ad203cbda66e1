package main

// End-to-end test of `localkube up` against real etcd and kube-apiserver binaries. Skipped unless
// LOCALKUBE_E2E=1. Binaries: LOCALKUBE_CONTROL_PLANE_DIR (holding etcd and kube-apiserver, as
// printed by tools/control-plane/build.sh) or LOCALKUBE_ETCD + LOCALKUBE_APISERVER.
//
//	LOCALKUBE_E2E=1 LOCALKUBE_CONTROL_PLANE_DIR=$(tools/control-plane/build.sh) \
//	  go test -run E2E -v ./...

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

type e2eEnv struct {
	t        *testing.T
	client   kubernetes.Interface
	ready    map[string]string
	scratch  string
	mu       sync.Mutex
	pids     map[int]string // pod process pid -> cmdline, to check they are gone later
	nsSerial int
}

func controlPlaneBinaries(t *testing.T) (string, string) {
	if dir := os.Getenv("LOCALKUBE_CONTROL_PLANE_DIR"); dir != "" {
		return filepath.Join(dir, "etcd"), filepath.Join(dir, "kube-apiserver")
	}
	etcd, api := os.Getenv("LOCALKUBE_ETCD"), os.Getenv("LOCALKUBE_APISERVER")
	if etcd == "" || api == "" {
		t.Fatal("set LOCALKUBE_CONTROL_PLANE_DIR, or LOCALKUBE_ETCD and LOCALKUBE_APISERVER")
	}
	return etcd, api
}

func buildLocalkube(t *testing.T) string {
	if bin := os.Getenv("LOCALKUBE_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "localkube")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// parseReady parses `READY k=v k=v ...`.
func parseReady(line string) (map[string]string, error) {
	fields := strings.Fields(line)
	if len(fields) == 0 || fields[0] != "READY" {
		return nil, fmt.Errorf("not a READY line: %q", line)
	}
	kv := map[string]string{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("bad field %q", f)
		}
		kv[k] = v
	}
	return kv, nil
}

// descendants lists the pids of all processes below root (by walking /proc).
func descendants(root int) map[int]string {
	parent := map[int]int{}
	cmd := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		rest := s[strings.LastIndexByte(s, ')')+2:]
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parent[pid] = ppid
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cmd[pid] = strings.ReplaceAll(string(cl), "\x00", " ")
	}
	out := map[int]string{}
	for pid := range parent {
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == root {
				out[pid] = cmd[pid]
				break
			}
		}
	}
	return out
}

func alive(pid int, cmdline string) bool {
	cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if s := string(stat); strings.Contains(s, ") Z ") {
		return false
	}
	return strings.ReplaceAll(string(cl), "\x00", " ") == cmdline
}

type instance struct {
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	ready      map[string]string
	client     kubernetes.Interface
	kubeletLog string
	lines      <-chan string // stdout after the READY line: answers to commands
}

// startLocalkube runs `localkube up` the way a test harness does (stdin a pipe, stdout read for
// the READY line) and returns once it is ready.
func startLocalkube(t *testing.T, bin string, extra ...string) *instance {
	etcd, api := controlPlaneBinaries(t)
	scratch := t.TempDir()
	kubeletLog := filepath.Join(scratch, "kubelet.log")
	start := time.Now()
	args := append([]string{"up", "--etcd", etcd, "--apiserver", api,
		"--image", "demo:1=/bin/sleep", "--image", "shell:1=/bin/sh", "--kubelet-log", kubeletLog}, extra...)
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderrPath := filepath.Join(scratch, "localkube.stderr")
	stderr, _ := os.Create(stderrPath)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("no READY line after 2 minutes")
	}
	ready, err := parseReady(line)
	if err != nil {
		_ = cmd.Process.Kill()
		stderrData, _ := os.ReadFile(stderrPath)
		t.Fatalf("%v\nstderr:\n%s", err, stderrData)
	}
	t.Logf("READY after %s: %s", time.Since(start).Round(time.Millisecond), line)
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(kubeletLog)
			t.Logf("kubelet log:\n%s", data)
			data, _ = os.ReadFile(stderrPath)
			t.Logf("localkube stderr:\n%s", data)
		}
	})
	if ready["kubelet_log"] != kubeletLog {
		t.Errorf("kubelet_log = %q", ready["kubelet_log"])
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", ready["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	return &instance{cmd: cmd, stdin: stdin, ready: ready, client: kubernetes.NewForConfigOrDie(cfg), kubeletLog: kubeletLog, lines: lines}
}

func TestE2E(t *testing.T) {
	if os.Getenv("LOCALKUBE_E2E") != "1" {
		t.Skip("set LOCALKUBE_E2E=1 (and LOCALKUBE_CONTROL_PLANE_DIR) to run")
	}
	bin := buildLocalkube(t)
	lk := startLocalkube(t, bin)
	e := &e2eEnv{t: t, client: lk.client, ready: lk.ready, scratch: t.TempDir(), pids: map[int]string{}}

	t.Run("node", e.testNode)
	t.Run("serviceaccount token and RBAC", e.testTokenRBAC)
	t.Run("running pod: env, IP, graceful delete", e.testRunningPod)
	t.Run("grace period then SIGKILL", e.testGraceKill)
	t.Run("start delay shows ContainerCreating", e.testStartDelay)
	t.Run("exit codes", e.testExitCodes)
	t.Run("crash and oom labels", e.testCrashOOM)
	t.Run("image pull failure", e.testImagePull)
	t.Run("unschedulable", e.testUnschedulable)
	t.Run("config errors", e.testConfigErrors)
	t.Run("start error", e.testStartError)
	t.Run("pod bound elsewhere is ignored", e.testElsewhere)
	t.Run("immediate delete kills processes", e.testForceDelete)
	t.Run("50 concurrent pods", e.testConcurrent)
	t.Run("pods left running", e.testLeaveRunning)

	// Shut down by closing stdin, as the Erlang port does.
	tree := descendants(lk.cmd.Process.Pid)
	t.Logf("processes under localkube before stop: %d", len(tree))
	stopStart := time.Now()
	lk.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- lk.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("localkube exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = lk.cmd.Process.Kill()
		t.Fatal("localkube did not stop within 30s of stdin EOF")
	}
	t.Logf("stopped %s after stdin EOF", time.Since(stopStart).Round(time.Millisecond))
	for pid, cl := range tree {
		if alive(pid, cl) {
			t.Errorf("stray process after exit: %d %s", pid, cl)
		}
	}
	for pid, cl := range e.pids {
		if alive(pid, cl) {
			t.Errorf("stray pod process after exit: %d %s", pid, cl)
		}
	}
	if _, err := os.Stat(lk.ready["state_dir"]); !os.IsNotExist(err) {
		t.Errorf("temp state dir %s still exists (%v)", lk.ready["state_dir"], err)
	}
}

// TestE2EKill9: when localkube is killed with SIGKILL (no chance to clean up), its watchdog and
// parent-death signals still take down etcd, the apiserver and every pod process (with their
// children), and the temporary state dir goes away.
func TestE2EKill9(t *testing.T) {
	if os.Getenv("LOCALKUBE_E2E") != "1" {
		t.Skip("set LOCALKUBE_E2E=1 (and LOCALKUBE_CONTROL_PLANE_DIR) to run")
	}
	bin := buildLocalkube(t)
	lk := startLocalkube(t, bin)
	e := &e2eEnv{t: t, client: lk.client, ready: lk.ready, scratch: t.TempDir(), pids: map[int]string{}}
	e.testLeaveRunning(t)
	tree := descendants(lk.cmd.Process.Pid)
	t.Logf("processes under localkube before SIGKILL: %d", len(tree))
	_ = lk.cmd.Process.Kill()
	_ = lk.cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for pid, cl := range tree {
			if alive(pid, cl) {
				left = append(left, fmt.Sprintf("%d %s", pid, cl))
			}
		}
		_, statErr := os.Stat(lk.ready["state_dir"])
		if len(left) == 0 && os.IsNotExist(statErr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after SIGKILL: stray processes %v; state dir stat: %v", left, statErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestE2EAPIServerRestart: `restart-apiserver` on stdin SIGKILLs kube-apiserver and starts it
// again on the same port and etcd; stored objects survive, the kubelet's watch resumes (a pod
// created after the restart runs) and an unknown command gets an error line.
func TestE2EAPIServerRestart(t *testing.T) {
	if os.Getenv("LOCALKUBE_E2E") != "1" {
		t.Skip("set LOCALKUBE_E2E=1 (and LOCALKUBE_CONTROL_PLANE_DIR) to run")
	}
	bin := buildLocalkube(t)
	lk := startLocalkube(t, bin)
	e := &e2eEnv{t: t, client: lk.client, ready: lk.ready, scratch: t.TempDir(), pids: map[int]string{}}
	ns := e.namespace(t)
	e.create(t, ns, simplePod("before", "demo:1", "300"))
	before := e.waitPod(t, ns, "before", 30*time.Second, "Running", phaseIs(v1.PodRunning))

	command := func(cmd string) string {
		t.Helper()
		if _, err := io.WriteString(lk.stdin, cmd+"\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case line := <-lk.lines:
			return line
		case <-time.After(2 * time.Minute):
			t.Fatalf("no answer to %s", cmd)
			return ""
		}
	}
	if got := command("bogus"); !strings.HasPrefix(got, "ERROR bogus: unknown command") {
		t.Errorf("bogus: %q", got)
	}
	for i := range 2 {
		got := command("restart-apiserver")
		if !strings.HasPrefix(got, "OK restart-apiserver killed_pid=") {
			t.Fatalf("restart %d: %q", i, got)
		}
		pod, err := e.client.CoreV1().Pods(ns).Get(context.Background(), "before", metav1.GetOptions{})
		if err != nil || pod.UID != before.UID || pod.Status.Phase != v1.PodRunning {
			t.Fatalf("after restart %d: pod %v, err %v", i, pod, err)
		}
		name := fmt.Sprintf("after-%d", i)
		e.create(t, ns, simplePod(name, "demo:1", "300"))
		e.waitPod(t, ns, name, 30*time.Second, "Running", phaseIs(v1.PodRunning))
	}
	if got := command("kill-apiserver"); !strings.HasPrefix(got, "OK kill-apiserver") {
		t.Fatalf("kill: %q", got)
	}
	if _, err := e.client.CoreV1().Pods(ns).Get(context.Background(), "before", metav1.GetOptions{}); err == nil {
		t.Fatal("the API server answered while killed")
	}
	if got := command("kill-apiserver"); !strings.HasPrefix(got, "ERROR kill-apiserver: kube-apiserver is not running") {
		t.Errorf("second kill: %q", got)
	}
	if got := command("start-apiserver"); !strings.HasPrefix(got, "OK start-apiserver ms=") {
		t.Fatalf("start: %q", got)
	}
	e.create(t, ns, simplePod("after-start", "demo:1", "300"))
	e.waitPod(t, ns, "after-start", 30*time.Second, "Running", phaseIs(v1.PodRunning))
}

// --- helpers --------------------------------------------------------------------------------

func (e *e2eEnv) namespace(t *testing.T) string {
	e.mu.Lock()
	e.nsSerial++
	name := fmt.Sprintf("e2e-%d", e.nsSerial)
	e.mu.Unlock()
	ctx := context.Background()
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CoreV1().ServiceAccounts(name).Create(ctx, &v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

func simplePod(name, image string, args ...string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Spec: v1.PodSpec{
			RestartPolicy:                 v1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers:                    []v1.Container{{Name: "main", Image: image, Args: args}},
		},
	}
}

func (e *e2eEnv) create(t *testing.T, ns string, pod *v1.Pod) *v1.Pod {
	t.Helper()
	p, err := e.client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitPod polls until cond holds (returns the pod) or fails after timeout.
func (e *e2eEnv) waitPod(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *v1.Pod
	for time.Now().Before(deadline) {
		p, err := e.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		} else if !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("pod %s/%s: %s not reached within %s; status: %+v", ns, name, what, timeout, last.Status)
	}
	t.Fatalf("pod %s/%s: %s not reached within %s (pod not found)", ns, name, what, timeout)
	return nil
}

func (e *e2eEnv) waitGone(t *testing.T, ns, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, err := e.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pod %s/%s still exists after %s", ns, name, timeout)
}

func (e *e2eEnv) delete(t *testing.T, ns, name string, grace *int64) {
	t.Helper()
	err := e.client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: grace, PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

func phaseIs(ph v1.PodPhase) func(*v1.Pod) bool {
	return func(p *v1.Pod) bool { return p.Status.Phase == ph }
}

func waitingReason(p *v1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
		return ""
	}
	return p.Status.ContainerStatuses[0].State.Waiting.Reason
}

func podPID(t *testing.T, p *v1.Pod) int {
	t.Helper()
	id := p.Status.ContainerStatuses[0].ContainerID
	pid, err := strconv.Atoi(strings.TrimPrefix(id, "sim://"))
	if err != nil {
		t.Fatalf("containerID %q", id)
	}
	return pid
}

func (e *e2eEnv) remember(pid int) {
	cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	e.mu.Lock()
	e.pids[pid] = strings.ReplaceAll(string(cl), "\x00", " ")
	e.mu.Unlock()
}

func waitFile(t *testing.T, path string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && len(data) > 0 && strings.HasSuffix(string(data), "\n") {
			return string(data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not written within %s", path, timeout)
	return ""
}

func waitDead(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			return
		}
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("process %d still alive after %s", pid, timeout)
}

// --- scenarios ------------------------------------------------------------------------------

func (e *e2eEnv) testNode(t *testing.T) {
	n, err := e.client.CoreV1().Nodes().Get(context.Background(), "sim-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["kubernetes.io/hostname"] != "sim-node" || n.Labels["kubernetes.io/os"] != "linux" {
		t.Errorf("labels %v", n.Labels)
	}
	readyOK := false
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
			readyOK = true
		}
	}
	if !readyOK || len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != "127.0.0.1" {
		t.Errorf("status %+v", n.Status)
	}
	if _, err := e.client.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), "sim-node", metav1.GetOptions{}); err != nil {
		t.Errorf("lease: %v", err)
	}
}

func (e *e2eEnv) testRunningPod(t *testing.T) {
	ns := e.namespace(t)
	ctx := context.Background()
	_, err := e.client.CoreV1().Secrets(ns).Create(ctx, &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		StringData: map[string]string{"cookie": "s3cret", "user": "bob"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.client.CoreV1().ConfigMaps(ns).Create(ctx, &v1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"MODE": "test"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(e.scratch, "env-"+ns)
	pod := simplePod("runner", "shell:1", "-c", "env > $(ENV_FILE).tmp && mv $(ENV_FILE).tmp $(ENV_FILE); exec sleep 1000")
	pod.Labels["app"] = "flame"
	c := &pod.Spec.Containers[0]
	c.EnvFrom = []v1.EnvFromSource{
		{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}},
		{Prefix: "S_", SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}}},
	}
	c.Env = []v1.EnvVar{
		{Name: "ENV_FILE", Value: envFile},
		{Name: "POD_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "APP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
		{Name: "COOKIE", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}, Key: "cookie"}}},
		{Name: "RELEASE_NODE", Value: "runner@$(POD_IP)"},
		{Name: "ESCAPED", Value: "$$(POD_IP)"},
	}
	e.create(t, ns, pod)
	p := e.waitPod(t, ns, "runner", 20*time.Second, "Running", phaseIs(v1.PodRunning))
	if !strings.HasPrefix(p.Status.PodIP, "127.0.") || p.Status.HostIP != "127.0.0.1" || p.Spec.NodeName != "sim-node" {
		t.Errorf("podIP %q hostIP %q node %q", p.Status.PodIP, p.Status.HostIP, p.Spec.NodeName)
	}
	cs := p.Status.ContainerStatuses[0]
	if !cs.Ready || cs.State.Running == nil || cs.Started == nil || !*cs.Started || cs.ImageID == "" {
		t.Errorf("container status %+v", cs)
	}
	ready := false
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady && c.Status == v1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		t.Errorf("Ready condition missing: %+v", p.Status.Conditions)
	}
	env := map[string]string{}
	for _, l := range strings.Split(waitFile(t, envFile, 10*time.Second), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	want := map[string]string{
		"POD_IP": p.Status.PodIP, "POD_NAME": "runner", "APP": "flame", "COOKIE": "s3cret",
		"RELEASE_NODE": "runner@" + p.Status.PodIP, "ESCAPED": "$(POD_IP)", "MODE": "test",
		"S_cookie": "s3cret", "S_user": "bob", "HOSTNAME": "runner", "KUBERNETES_SERVICE_HOST": "127.0.0.1",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if env["PATH"] == "" {
		t.Error("PATH not inherited")
	}
	pid := podPID(t, p)
	e.remember(pid)
	logPath := filepath.Join(e.ready["state_dir"], "pods", ns+"_runner", "main.log")
	if _, err := os.Stat(logPath); err != nil {
		t.Errorf("container log: %v", err)
	}
	t0 := time.Now()
	e.delete(t, ns, "runner", nil)
	e.waitGone(t, ns, "runner", 10*time.Second)
	waitDead(t, pid, 2*time.Second)
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("graceful delete of a SIGTERM-obeying process took %s", d)
	}
}

func (e *e2eEnv) testGraceKill(t *testing.T) {
	ns := e.namespace(t)
	pod := simplePod("stubborn", "shell:1", "-c", "trap '' TERM; sleep 1000 & wait; sleep 1000")
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](2)
	e.create(t, ns, pod)
	p := e.waitPod(t, ns, "stubborn", 20*time.Second, "Running", phaseIs(v1.PodRunning))
	pid := podPID(t, p)
	e.remember(pid)
	time.Sleep(200 * time.Millisecond) // let the shell install its trap
	t0 := time.Now()
	e.delete(t, ns, "stubborn", nil)
	e.waitGone(t, ns, "stubborn", 10*time.Second)
	d := time.Since(t0)
	if d < 1900*time.Millisecond {
		t.Errorf("pod gone after %s, before its 2s grace period", d)
	}
	waitDead(t, pid, 2*time.Second)
}

func (e *e2eEnv) testStartDelay(t *testing.T) {
	ns := e.namespace(t)
	pod := simplePod("slow", "demo:1", "1000")
	pod.Labels[labelStartDelayMs] = "1500"
	e.create(t, ns, pod)
	p := e.waitPod(t, ns, "slow", 10*time.Second, "ContainerCreating", func(p *v1.Pod) bool {
		return waitingReason(p) == "ContainerCreating"
	})
	if p.Status.Phase != v1.PodPending || p.Status.PodIP == "" {
		t.Errorf("phase %s podIP %q", p.Status.Phase, p.Status.PodIP)
	}
	p = e.waitPod(t, ns, "slow", 10*time.Second, "Running", phaseIs(v1.PodRunning))
	e.remember(podPID(t, p))
	e.delete(t, ns, "slow", ptr.To[int64](1))
	e.waitGone(t, ns, "slow", 10*time.Second)
}

func (e *e2eEnv) testExitCodes(t *testing.T) {
	ns := e.namespace(t)
	e.create(t, ns, simplePod("ok", "shell:1", "-c", "exit 0"))
	e.create(t, ns, simplePod("bad", "shell:1", "-c", "exit 7"))
	p := e.waitPod(t, ns, "ok", 20*time.Second, "Succeeded", phaseIs(v1.PodSucceeded))
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
		t.Errorf("ok: %+v", p.Status.ContainerStatuses[0].State)
	}
	p = e.waitPod(t, ns, "bad", 20*time.Second, "Failed", phaseIs(v1.PodFailed))
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 7 || term.Reason != "Error" {
		t.Errorf("bad: %+v", p.Status.ContainerStatuses[0].State)
	}
	for _, n := range []string{"ok", "bad"} {
		e.delete(t, ns, n, nil)
		e.waitGone(t, ns, n, 5*time.Second)
	}
}

func (e *e2eEnv) testCrashOOM(t *testing.T) {
	ns := e.namespace(t)
	crash := simplePod("crash", "demo:1", "1000")
	crash.Labels[labelFail] = failCrash
	crash.Labels[labelExitCode] = "3"
	oom := simplePod("oom", "demo:1", "1000")
	oom.Labels[labelFail] = failOOM
	e.create(t, ns, crash)
	e.create(t, ns, oom)
	p := e.waitPod(t, ns, "crash", 20*time.Second, "Failed", phaseIs(v1.PodFailed))
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 3 || term.Reason != "Error" {
		t.Errorf("crash: %+v", p.Status.ContainerStatuses[0].State)
	}
	p = e.waitPod(t, ns, "oom", 20*time.Second, "Failed", phaseIs(v1.PodFailed))
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 137 || term.Reason != "OOMKilled" {
		t.Errorf("oom: %+v", p.Status.ContainerStatuses[0].State)
	}
	for _, n := range []string{"crash", "oom"} {
		e.delete(t, ns, n, nil)
		e.waitGone(t, ns, n, 5*time.Second)
	}
}

func (e *e2eEnv) testImagePull(t *testing.T) {
	ns := e.namespace(t)
	e.create(t, ns, simplePod("noimage", "nosuch:1"))
	forced := simplePod("forced", "demo:1", "1000")
	forced.Labels[labelFail] = failImagePull
	e.create(t, ns, forced)
	p := e.waitPod(t, ns, "noimage", 10*time.Second, "ErrImagePull", func(p *v1.Pod) bool { return waitingReason(p) == "ErrImagePull" })
	if msg := p.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, `"docker.io/library/nosuch:1"`) {
		t.Errorf("message %q", msg)
	}
	p = e.waitPod(t, ns, "noimage", 10*time.Second, "ImagePullBackOff", func(p *v1.Pod) bool { return waitingReason(p) == "ImagePullBackOff" })
	if msg := p.Status.ContainerStatuses[0].State.Waiting.Message; msg != `Back-off pulling image "nosuch:1"` {
		t.Errorf("message %q", msg)
	}
	if p.Status.Phase != v1.PodPending {
		t.Errorf("phase %s", p.Status.Phase)
	}
	e.waitPod(t, ns, "forced", 10*time.Second, "ImagePullBackOff", func(p *v1.Pod) bool { return waitingReason(p) == "ImagePullBackOff" })
	for _, n := range []string{"noimage", "forced"} {
		e.delete(t, ns, n, nil)
		e.waitGone(t, ns, n, 5*time.Second)
	}
}

func (e *e2eEnv) testUnschedulable(t *testing.T) {
	ns := e.namespace(t)
	byLabel := simplePod("bylabel", "demo:1", "1000")
	byLabel.Labels[labelFail] = failUnschedulable
	bySelector := simplePod("byselector", "demo:1", "1000")
	bySelector.Spec.NodeSelector = map[string]string{"disktype": "ssd"}
	e.create(t, ns, byLabel)
	e.create(t, ns, bySelector)
	unsched := func(p *v1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodScheduled && c.Status == v1.ConditionFalse && c.Reason == "Unschedulable" {
				return true
			}
		}
		return false
	}
	msg := func(p *v1.Pod) string {
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodScheduled {
				return c.Message
			}
		}
		return ""
	}
	p := e.waitPod(t, ns, "bylabel", 10*time.Second, "Unschedulable", unsched)
	if !strings.Contains(msg(p), "Insufficient cpu") || p.Spec.NodeName != "" || p.Status.Phase != v1.PodPending {
		t.Errorf("bylabel: %q node %q phase %s", msg(p), p.Spec.NodeName, p.Status.Phase)
	}
	p = e.waitPod(t, ns, "byselector", 10*time.Second, "Unschedulable", unsched)
	if !strings.Contains(msg(p), "didn't match Pod's node affinity/selector") {
		t.Errorf("byselector: %q", msg(p))
	}
	for _, n := range []string{"bylabel", "byselector"} {
		e.delete(t, ns, n, nil)
		e.waitGone(t, ns, n, 5*time.Second)
	}
}

func (e *e2eEnv) testConfigErrors(t *testing.T) {
	ns := e.namespace(t)
	missing := simplePod("missing", "demo:1", "1000")
	missing.Spec.Containers[0].Env = []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}, Key: "k"}}}}
	labelled := simplePod("labelled", "demo:1", "1000")
	labelled.Labels[labelFail] = failConfigError
	e.create(t, ns, missing)
	e.create(t, ns, labelled)
	isCfgErr := func(p *v1.Pod) bool { return waitingReason(p) == "CreateContainerConfigError" }
	p := e.waitPod(t, ns, "missing", 10*time.Second, "CreateContainerConfigError", isCfgErr)
	if m := p.Status.ContainerStatuses[0].State.Waiting.Message; m != `secret "nope" not found` {
		t.Errorf("message %q", m)
	}
	e.waitPod(t, ns, "labelled", 10*time.Second, "CreateContainerConfigError", isCfgErr)
	for _, n := range []string{"missing", "labelled"} {
		e.delete(t, ns, n, nil)
		e.waitGone(t, ns, n, 5*time.Second)
	}
}

func (e *e2eEnv) testStartError(t *testing.T) {
	ns := e.namespace(t)
	pod := simplePod("nocmd", "demo:1")
	pod.Spec.Containers[0].Command = []string{"surely-not-a-command-xyz"}
	e.create(t, ns, pod)
	p := e.waitPod(t, ns, "nocmd", 10*time.Second, "Failed", phaseIs(v1.PodFailed))
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.Reason != "StartError" || term.ExitCode != 128 {
		t.Errorf("state %+v", p.Status.ContainerStatuses[0].State)
	}
	e.delete(t, ns, "nocmd", nil)
	e.waitGone(t, ns, "nocmd", 5*time.Second)
}

func (e *e2eEnv) testElsewhere(t *testing.T) {
	ns := e.namespace(t)
	pod := simplePod("parent", "demo:1", "1000")
	pod.Spec.NodeName = "elsewhere"
	e.create(t, ns, pod)
	time.Sleep(1500 * time.Millisecond)
	p, err := e.client.CoreV1().Pods(ns).Get(context.Background(), "parent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.PodIP != "" || len(p.Status.ContainerStatuses) > 0 || p.Status.Phase != v1.PodPending {
		t.Errorf("pod bound elsewhere was touched: %+v", p.Status)
	}
	// Deleting it is up to the test (no kubelet finishes it): force it.
	e.delete(t, ns, "parent", ptr.To[int64](0))
	e.waitGone(t, ns, "parent", 5*time.Second)
}

func (e *e2eEnv) testForceDelete(t *testing.T) {
	ns := e.namespace(t)
	e.create(t, ns, simplePod("victim", "demo:1", "1000"))
	p := e.waitPod(t, ns, "victim", 20*time.Second, "Running", phaseIs(v1.PodRunning))
	pid := podPID(t, p)
	e.remember(pid)
	e.delete(t, ns, "victim", ptr.To[int64](0))
	e.waitGone(t, ns, "victim", 5*time.Second)
	waitDead(t, pid, 3*time.Second)
}

func (e *e2eEnv) testConcurrent(t *testing.T) {
	ns := e.namespace(t)
	const n = 50
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.create(t, ns, simplePod(fmt.Sprintf("c%02d", i), "demo:1", "1000"))
		}()
	}
	wg.Wait()
	ips := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("c%02d", i)
		p := e.waitPod(t, ns, name, 60*time.Second, "Running", phaseIs(v1.PodRunning))
		if other, dup := ips[p.Status.PodIP]; dup {
			t.Errorf("%s and %s share IP %s", name, other, p.Status.PodIP)
		}
		ips[p.Status.PodIP] = name
		e.remember(podPID(t, p))
	}
	t.Logf("%d pods Running %s after the first create", n, time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	err := e.client.CoreV1().Pods(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e.waitGone(t, ns, fmt.Sprintf("c%02d", i), 30*time.Second)
	}
	t.Logf("%d pods deleted in %s", n, time.Since(t1).Round(time.Millisecond))
}

// testLeaveRunning starts pods that are still running when localkube stops: one with child
// processes, one still in ContainerCreating, one terminating with a long grace period.
func (e *e2eEnv) testLeaveRunning(t *testing.T) {
	ns := e.namespace(t)
	e.create(t, ns, simplePod("family", "shell:1", "-c", "sleep 1001 & sleep 1002 & wait"))
	stubborn := simplePod("stubborn", "shell:1", "-c", "trap '' TERM; sleep 1003 & wait; sleep 1004")
	stubborn.Spec.TerminationGracePeriodSeconds = ptr.To[int64](600)
	e.create(t, ns, stubborn)
	slow := simplePod("slow", "demo:1", "1000")
	slow.Labels[labelStartDelayMs] = "60000"
	e.create(t, ns, slow)
	for _, n := range []string{"family", "stubborn"} {
		p := e.waitPod(t, ns, n, 20*time.Second, "Running", phaseIs(v1.PodRunning))
		e.remember(podPID(t, p))
	}
	e.waitPod(t, ns, "slow", 20*time.Second, "ContainerCreating", func(p *v1.Pod) bool { return waitingReason(p) == "ContainerCreating" })
	time.Sleep(300 * time.Millisecond)
	e.delete(t, ns, "stubborn", nil)
	time.Sleep(200 * time.Millisecond)
}

// testTokenRBAC: TokenRequest works and RBAC is enforced for a ServiceAccount token.
func (e *e2eEnv) testTokenRBAC(t *testing.T) {
	ns := e.namespace(t)
	ctx := context.Background()
	if _, err := e.client.CoreV1().ServiceAccounts(ns).Create(ctx, &v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "flame"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := e.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "flame", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.ready["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	saCfg := &rest.Config{Host: cfg.Host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData}}
	sa := kubernetes.NewForConfigOrDie(saCfg)
	if _, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("before RBAC: want Forbidden, got %v", err)
	}
	if _, err := e.client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pods"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "flame", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after RBAC: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := sa.CoreV1().Pods(ns).Create(ctx, simplePod("x", "demo:1"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("create without the verb: want Forbidden, got %v", err)
	}
}
