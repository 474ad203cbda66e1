package main

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

const (
	hostIP              = "127.0.0.1"
	imagePullBackOffAt  = time.Second            // ErrImagePull -> ImagePullBackOff
	simulatedExitAfter  = 150 * time.Millisecond // fail=crash / fail=oom: time spent "running"
	retryAfter          = 500 * time.Millisecond // API write retry
	defaultGracePeriod  = 30
	shutdownWaitForExit = 3 * time.Second
)

type stage int

const (
	stageNew      stage = iota // not yet set up on the node
	stageCreating              // waiting for the start delay
	stageStarted               // containers started (or failed to start)
	stageAborted               // never starts: image pull failure, config error, deleted early
)

type ctrPhase int

const (
	ctrWaiting ctrPhase = iota
	ctrRunning
	ctrTerminated
)

type ctr struct {
	name, image string
	imageID     string
	phase       ctrPhase
	reason      string // waiting or terminated reason
	message     string
	exitCode    int32
	startedAt   time.Time
	finishedAt  time.Time
	containerID string
	pid         int       // real process (0 for a simulated one)
	alive       bool      // started, exit not yet seen
	backoffAt   time.Time // ErrImagePull turns into ImagePullBackOff at this time
}

type containerExit struct {
	idx      int
	code     int32
	reason   string
	signaled string
	at       time.Time
}

type condState struct {
	status v1.ConditionStatus
	since  time.Time
}

// podWorker owns one pod (one UID) from first sight until it disappears from the API. Event
// handlers only store the latest object and poke the worker; all work happens in run().
type podWorker struct {
	k        *kubelet
	uid      types.UID
	key      string
	ns, name string

	mu     sync.Mutex
	latest *v1.Pod
	gone   bool
	notify chan struct{}
	exits  chan containerExit

	// Owned by run().
	b             podBehaviour
	bindDone      bool
	bindRetryAt   time.Time
	unschedMsg    string
	unschedRetry  time.Time
	initialized   bool
	ip            string
	startTime     time.Time
	stage         stage
	startAt       time.Time
	ctrs          []*ctr
	conds         map[v1.PodConditionType]condState
	termSent      bool
	killAt        time.Time
	killSent      bool
	deleteIssued  bool
	deleteRetryAt time.Time
	dirty         bool
	statusRetryAt time.Time
	wake          time.Time
	logDir        string
	finished      bool
	phaseLogged   v1.PodPhase
}

func newPodWorker(k *kubelet, pod *v1.Pod) *podWorker {
	return &podWorker{
		k: k, uid: pod.UID, key: pod.Namespace + "/" + pod.Name, ns: pod.Namespace, name: pod.Name,
		notify: make(chan struct{}, 1),
		exits:  make(chan containerExit, len(pod.Spec.Containers)+1),
		conds:  map[v1.PodConditionType]condState{},
	}
}

func (w *podWorker) logf(format string, args ...any) {
	w.k.elog.printf("pod "+w.key+": "+format, args...)
}

func (w *podWorker) update(pod *v1.Pod) {
	w.mu.Lock()
	w.latest = pod
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) markGone() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) snapshot() (*v1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.gone
}

func (w *podWorker) wakeAt(t time.Time) {
	if w.wake.IsZero() || t.Before(w.wake) {
		w.wake = t
	}
}

func (w *podWorker) run() {
	defer w.k.wg.Done()
	var timer *time.Timer
	for {
		w.step()
		if w.finished {
			return
		}
		var timerC <-chan time.Time
		if !w.wake.IsZero() {
			d := max(time.Until(w.wake), 0)
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			timerC = timer.C
		}
		select {
		case <-w.notify:
		case ex := <-w.exits:
			w.onExit(ex)
		case <-timerC:
		case <-w.k.ctx.Done():
			w.shutdown()
			return
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// shutdown: localkube is exiting. Kill every process, do not touch the API.
func (w *podWorker) shutdown() {
	if w.aliveCount() == 0 {
		return
	}
	w.signalAll(syscall.SIGKILL)
	deadline := time.After(shutdownWaitForExit)
	for w.aliveReal() > 0 {
		select {
		case ex := <-w.exits:
			w.ctrs[ex.idx].alive = false
		case <-deadline:
			return
		}
	}
}

func (w *podWorker) step() {
	pod, gone := w.snapshot()
	now := time.Now()
	w.wake = time.Time{}
	if gone {
		w.onGone()
		return
	}
	if pod == nil {
		return
	}
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != w.k.nodeName {
		w.logf("bound to node %s by someone else; ignoring it", pod.Spec.NodeName)
		w.k.removeWorker(w.uid)
		w.finished = true
		return
	}
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp == nil {
			w.stepUnbound(pod, now)
		}
		return
	}
	if !w.initialized && pod.DeletionTimestamp == nil {
		w.initialize(pod, now)
		w.flush(pod, now) // Pending with ContainerCreating (or the failure) comes first
	}
	if pod.DeletionTimestamp != nil {
		w.stepDeleting(pod, now)
	} else if w.stage == stageCreating {
		if now.Before(w.startAt) {
			w.wakeAt(w.startAt)
		} else if !w.startGateOpen() {
			// No event tells a process that a file appeared: look again shortly.
			w.wakeAt(now.Add(50 * time.Millisecond))
		} else {
			w.startContainers(pod, now)
		}
	}
	w.progressBackoff(now)
	w.flush(pod, now)
}

// --- scheduling ---------------------------------------------------------------------------

func (w *podWorker) stepUnbound(pod *v1.Pod, now time.Time) {
	b := parseBehaviour(pod)
	if msg := unschedulableReason(pod, w.k.node, b); msg != "" {
		if w.unschedMsg == msg {
			return
		}
		if now.Before(w.unschedRetry) {
			w.wakeAt(w.unschedRetry)
			return
		}
		if err := w.patchUnschedulable(pod, msg, now); err != nil {
			w.logf("reporting Unschedulable failed: %v", err)
			w.unschedRetry = now.Add(retryAfter)
			w.wakeAt(w.unschedRetry)
			return
		}
		w.unschedMsg = msg
		w.logf("unschedulable: %s", msg)
		return
	}
	if w.bindDone {
		return
	}
	if now.Before(w.bindRetryAt) {
		w.wakeAt(w.bindRetryAt)
		return
	}
	err := w.k.client.CoreV1().Pods(w.ns).Bind(w.k.ctx, &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: w.ns, UID: w.uid},
		Target:     v1.ObjectReference{Kind: "Node", Name: w.k.nodeName},
	}, metav1.CreateOptions{})
	switch {
	case err == nil:
		w.bindDone = true
		w.logf("bound to %s", w.k.nodeName)
	case apierrors.IsNotFound(err):
		// Deleted meanwhile: the delete event follows.
	case apierrors.IsConflict(err):
		w.bindDone = true
		w.logf("binding refused: %v", err)
	default:
		if w.k.ctx.Err() == nil {
			w.logf("binding failed, retrying: %v", err)
		}
		w.bindRetryAt = now.Add(retryAfter)
		w.wakeAt(w.bindRetryAt)
	}
}

func (w *podWorker) patchUnschedulable(pod *v1.Pod, msg string, now time.Time) error {
	st := v1.PodStatus{
		Phase: v1.PodPending,
		Conditions: []v1.PodCondition{{
			Type: v1.PodScheduled, Status: v1.ConditionFalse, Reason: v1.PodReasonUnschedulable,
			Message: msg, LastTransitionTime: metav1.NewTime(now),
		}},
	}
	return w.patchStatus(st)
}

// --- setting up and starting --------------------------------------------------------------

func (w *podWorker) initialize(pod *v1.Pod, now time.Time) {
	w.initialized = true
	w.b = parseBehaviour(pod)
	for _, warn := range w.b.warnings {
		w.logf("%s", warn)
	}
	w.startTime = now
	w.logDir = w.k.podLogDir(pod)
	if err := os.MkdirAll(w.logDir, 0o755); err != nil {
		w.logf("cannot create %s: %v", w.logDir, err)
	}
	for _, c := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, &ctr{name: c.Name, image: c.Image, phase: ctrWaiting, reason: "ContainerCreating"})
	}
	if p := pod.Spec.RestartPolicy; p != v1.RestartPolicyNever && p != "" {
		w.logf("restartPolicy %s is treated as Never by the simulated kubelet", p)
	}
	if n := len(pod.Spec.InitContainers); n > 0 {
		w.logf("%d init container(s) ignored by the simulated kubelet", n)
	}
	ip, err := hostIP, error(nil)
	if !pod.Spec.HostNetwork {
		ip, err = w.k.ips.allocate()
	}
	if err != nil {
		w.logf("cannot allocate a pod IP: %v", err)
		for _, c := range w.ctrs {
			c.message = "failed to set up sandbox: " + err.Error()
		}
		w.stage = stageAborted
		w.dirty = true
		return
	}
	w.ip = ip
	if pod.Spec.HostNetwork {
		w.logf("sandbox ready: hostNetwork, podIP %s", ip)
	} else {
		w.logf("sandbox ready: podIP %s", ip)
	}
	switch w.b.fail {
	case failImagePull:
		for _, c := range w.ctrs {
			w.setPullError(c, now, " [injected by label "+labelFail+"="+failImagePull+"]")
		}
		w.stage = stageAborted
	case failConfigError:
		for _, c := range w.ctrs {
			c.reason = "CreateContainerConfigError"
			c.message = `secret "sim-kubelet-config-error" not found [injected by label ` + labelFail + "=" + failConfigError + "]"
			w.logf("container %s: CreateContainerConfigError: %s", c.name, c.message)
		}
		w.stage = stageAborted
	default:
		w.stage = stageCreating
		w.startAt = now.Add(w.b.startDelay)
		if w.b.startDelay > 0 {
			w.logf("start delayed by %s (label %s)", w.b.startDelay, labelStartDelayMs)
		}
		if w.b.startGate != "" {
			w.logf("start waits for file %s (annotation %s)", w.b.startGate, annotationStartWhenFile)
		}
	}
	w.dirty = true
}

// startGateOpen reports whether the start-when-file annotation, if any, is satisfied.
func (w *podWorker) startGateOpen() bool {
	if w.b.startGate == "" {
		return true
	}
	_, err := os.Stat(w.b.startGate)
	return err == nil
}

func (w *podWorker) setPullError(c *ctr, now time.Time, suffix string) {
	c.phase = ctrWaiting
	c.reason = "ErrImagePull"
	c.message = imagePullMessage(c.image) + suffix
	c.backoffAt = now.Add(imagePullBackOffAt)
	w.logf("container %s: ErrImagePull: %s", c.name, c.message)
}

func (w *podWorker) progressBackoff(now time.Time) {
	for _, c := range w.ctrs {
		if c.backoffAt.IsZero() || c.phase != ctrWaiting {
			continue
		}
		if now.Before(c.backoffAt) {
			w.wakeAt(c.backoffAt)
			continue
		}
		c.backoffAt = time.Time{}
		c.reason = "ImagePullBackOff"
		c.message = imageBackOffMessage(c.image)
		w.logf("container %s: ImagePullBackOff", c.name)
		w.dirty = true
	}
}

func (w *podWorker) startContainers(pod *v1.Pod, now time.Time) {
	w.stage = stageStarted
	w.dirty = true
	ectx := podEnvContext{
		podIP: w.ip, podIPs: []string{w.ip}, hostIP: hostIP, hostIPs: []string{hostIP},
		serviceEnv: w.k.serviceEnv,
		logf:       w.logf,
	}
	src := apiObjects{ctx: w.k.ctx, client: w.k.client}
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		c := w.ctrs[i]
		entry, known := w.k.images[spec.Image]
		if !known {
			w.setPullError(c, now, "")
			continue
		}
		c.imageID = fmt.Sprintf("%s@sha256:%x", strings.SplitN(normalizeImage(spec.Image), ":", 2)[0], sha256.Sum256([]byte(spec.Image+"="+entry)))
		if w.b.fail == failCrash || w.b.fail == failOOM {
			w.startSimulated(i, c, now)
			continue
		}
		kenv, err := containerEnv(pod, spec, ectx, src)
		if err != nil {
			var ce *configError
			if !errors.As(err, &ce) {
				ce = &configError{err.Error()}
			}
			c.reason = "CreateContainerConfigError"
			c.message = ce.msg
			w.logf("container %s: CreateContainerConfigError: %s", c.name, c.message)
			continue
		}
		env := processEnv(os.LookupEnv, pod.Name, kenv)
		mapping := mappingFor(kenv.values)
		var argv []string
		if len(spec.Command) > 0 {
			for _, a := range spec.Command {
				argv = append(argv, expand(a, mapping))
			}
		} else {
			argv = append(argv, entry)
		}
		for _, a := range spec.Args {
			argv = append(argv, expand(a, mapping))
		}
		w.startProcess(i, c, spec, argv, env, now)
	}
}

// startSimulated: fail=crash / fail=oom. The container is reported running, then terminated
// shortly after, without running anything.
func (w *podWorker) startSimulated(i int, c *ctr, now time.Time) {
	c.phase = ctrRunning
	c.reason, c.message = "", ""
	c.startedAt = now
	c.alive = true
	c.containerID = fmt.Sprintf("sim://%s-%d", w.uid, i)
	ex := containerExit{idx: i, code: w.b.exitCode, reason: "Error"}
	if w.b.fail == failOOM {
		ex.code, ex.reason = 137, "OOMKilled"
	} else if ex.code == 0 {
		ex.reason = "Completed"
	}
	w.logf("container %s: started (simulated %s, exit code %d)", c.name, w.b.fail, ex.code)
	time.AfterFunc(simulatedExitAfter, func() {
		ex.at = time.Now()
		w.exits <- ex
	})
}

func (w *podWorker) startProcess(i int, c *ctr, spec *v1.Container, argv []string, env *envList, now time.Time) {
	fail := func(msg string) {
		c.phase = ctrTerminated
		c.reason = "StartError"
		c.exitCode = 128
		c.message = msg
		c.finishedAt = now
		w.logf("container %s: StartError: %s", c.name, msg)
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		pathEnv, _ := env.get("PATH")
		p, err := lookPathIn(path, pathEnv)
		if err != nil {
			fail("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: " + err.Error())
			return
		}
		path = p
	}
	dir := spec.WorkingDir
	if dir == "" {
		dir = w.logDir
	}
	logPath := filepath.Join(w.logDir, spec.Name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail("cannot open container log: " + err.Error())
		return
	}
	defer out.Close()
	cmd := &exec.Cmd{
		Path: path, Args: argv, Env: env.environ(), Dir: dir, Stdout: out, Stderr: out,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	if err := cmd.Start(); err != nil {
		fail("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: " + err.Error())
		return
	}
	pid := cmd.Process.Pid
	c.phase = ctrRunning
	c.reason, c.message = "", ""
	c.startedAt = now
	c.pid = pid
	c.alive = true
	c.containerID = fmt.Sprintf("sim://%d", pid)
	w.logf("container %s: started pid %d: %s (log %s)", c.name, pid, strings.Join(argv, " "), logPath)
	w.k.wd.watchGroup(pid)
	go func() {
		_ = cmd.Wait()
		// A container ends when its main process does: take the rest of the group with it.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		w.k.wd.groupDone(pid)
		ex := containerExit{idx: i, at: time.Now()}
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled():
			ex.code = 128 + int32(ws.Signal())
			ex.signaled = ws.Signal().String()
		default:
			ex.code = int32(ws.ExitStatus())
		}
		if ex.code == 0 {
			ex.reason = "Completed"
		} else {
			ex.reason = "Error"
		}
		w.exits <- ex
	}()
}

func (w *podWorker) onExit(ex containerExit) {
	c := w.ctrs[ex.idx]
	c.alive = false
	c.phase = ctrTerminated
	c.exitCode = ex.code
	c.reason = ex.reason
	c.finishedAt = ex.at
	w.dirty = true
	how := ""
	if ex.signaled != "" {
		how = " (" + ex.signaled + ")"
	}
	w.logf("container %s: exited with code %d%s, reason %s", c.name, ex.code, how, ex.reason)
}

func (w *podWorker) aliveCount() int {
	n := 0
	for _, c := range w.ctrs {
		if c.alive {
			n++
		}
	}
	return n
}

func (w *podWorker) aliveReal() int {
	n := 0
	for _, c := range w.ctrs {
		if c.alive && c.pid > 0 {
			n++
		}
	}
	return n
}

func (w *podWorker) signalAll(sig syscall.Signal) {
	for _, c := range w.ctrs {
		if c.alive && c.pid > 0 {
			_ = syscall.Kill(-c.pid, sig)
		}
	}
}

// --- deletion -------------------------------------------------------------------------------

func (w *podWorker) stepDeleting(pod *v1.Pod, now time.Time) {
	if w.stage == stageCreating || w.stage == stageNew {
		w.stage = stageAborted
		w.logf("deleted before its containers started")
	}
	if w.aliveCount() > 0 {
		if !w.termSent {
			grace := int64(defaultGracePeriod)
			if pod.DeletionGracePeriodSeconds != nil {
				grace = *pod.DeletionGracePeriodSeconds
			}
			w.termSent = true
			w.killAt = now.Add(time.Duration(grace) * time.Second)
			w.logf("deletion requested: SIGTERM to %d container(s), grace period %ds", w.aliveReal(), grace)
			w.signalAll(syscall.SIGTERM)
		}
		if !w.killSent && !now.Before(w.killAt) {
			w.killSent = true
			w.logf("grace period over: SIGKILL")
			w.signalAll(syscall.SIGKILL)
		}
		if !w.killSent {
			w.wakeAt(w.killAt)
		}
		return
	}
	if w.deleteIssued {
		return
	}
	if now.Before(w.deleteRetryAt) {
		w.wakeAt(w.deleteRetryAt)
		return
	}
	if w.dirty {
		// Best effort: let watchers see how the containers ended before the pod goes away.
		w.flush(pod, now)
	}
	err := w.k.client.CoreV1().Pods(w.ns).Delete(w.k.ctx, w.name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &w.uid},
	})
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsConflict(err):
		w.deleteIssued = true
		w.logf("finished: deleted with grace period 0")
	default:
		if w.k.ctx.Err() == nil {
			w.logf("final delete failed, retrying: %v", err)
		}
		w.deleteRetryAt = now.Add(retryAfter)
		w.wakeAt(w.deleteRetryAt)
	}
}

func (w *podWorker) onGone() {
	if n := w.aliveCount(); n > 0 {
		w.logf("removed from the API while %d container(s) still ran: SIGKILL", n)
		w.signalAll(syscall.SIGKILL)
	}
	if w.ip != "" && w.ip != hostIP {
		w.k.ips.release(w.ip)
	}
	w.logf("removed from the API")
	w.k.removeWorker(w.uid)
	w.finished = true
}

// --- status -----------------------------------------------------------------------------------

func (w *podWorker) flush(pod *v1.Pod, now time.Time) {
	if !w.dirty || w.deleteIssued || !w.initialized {
		return
	}
	if now.Before(w.statusRetryAt) {
		w.wakeAt(w.statusRetryAt)
		return
	}
	st := w.buildStatus(pod, now)
	if err := w.patchStatus(st); err != nil {
		if apierrors.IsNotFound(err) {
			w.dirty = false
			return
		}
		if w.k.ctx.Err() == nil {
			w.logf("status update failed, retrying: %v", err)
		}
		w.statusRetryAt = now.Add(retryAfter)
		w.wakeAt(w.statusRetryAt)
		return
	}
	w.dirty = false
	if st.Phase != w.phaseLogged {
		w.phaseLogged = st.Phase
		w.logf("phase %s", st.Phase)
	}
}

// patchStatus writes status with a strategic merge patch: conditions merge by type, container
// statuses are replaced as a whole, and the UID in the patch acts as a precondition.
func (w *podWorker) patchStatus(st v1.PodStatus) error {
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": w.uid},
		"status":   st,
	})
	if err != nil {
		return err
	}
	_, err = w.k.client.CoreV1().Pods(w.ns).Patch(w.k.ctx, w.name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	return err
}

func (w *podWorker) phase() v1.PodPhase {
	running, waiting, failed, terminated := 0, 0, 0, 0
	for _, c := range w.ctrs {
		switch c.phase {
		case ctrRunning:
			running++
		case ctrWaiting:
			waiting++
		case ctrTerminated:
			terminated++
			if c.exitCode != 0 {
				failed++
			}
		}
	}
	switch {
	case running > 0:
		return v1.PodRunning
	case waiting > 0 || len(w.ctrs) == 0:
		return v1.PodPending
	case failed > 0:
		return v1.PodFailed
	default:
		return v1.PodSucceeded
	}
}

func (w *podWorker) cond(typ v1.PodConditionType, status v1.ConditionStatus, reason, msg string, now time.Time) v1.PodCondition {
	cs, ok := w.conds[typ]
	if !ok || cs.status != status {
		cs = condState{status: status, since: now}
		w.conds[typ] = cs
	}
	return v1.PodCondition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(cs.since)}
}

func (w *podWorker) buildStatus(pod *v1.Pod, now time.Time) v1.PodStatus {
	phase := w.phase()
	st := v1.PodStatus{
		Phase:              phase,
		ObservedGeneration: pod.Generation,
		HostIP:             hostIP,
		HostIPs:            []v1.HostIP{{IP: hostIP}},
		StartTime:          ptr.To(metav1.NewTime(w.startTime)),
	}
	if w.ip != "" {
		st.PodIP = w.ip
		st.PodIPs = []v1.PodIP{{IP: w.ip}}
	}
	var unready []string
	for _, c := range w.ctrs {
		cs := v1.ContainerStatus{Name: c.name, Image: c.image, ImageID: c.imageID, ContainerID: c.containerID}
		switch c.phase {
		case ctrWaiting:
			cs.State.Waiting = &v1.ContainerStateWaiting{Reason: c.reason, Message: c.message}
			cs.Started = ptr.To(false)
		case ctrRunning:
			cs.State.Running = &v1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
			cs.Ready = true
			cs.Started = ptr.To(true)
		case ctrTerminated:
			cs.State.Terminated = &v1.ContainerStateTerminated{
				ExitCode: c.exitCode, Reason: c.reason, Message: c.message,
				StartedAt: metav1.NewTime(c.startedAt), FinishedAt: metav1.NewTime(c.finishedAt),
				ContainerID: c.containerID,
			}
			cs.Started = ptr.To(false)
		}
		if !cs.Ready {
			unready = append(unready, c.name)
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	readyStatus, readyReason, readyMsg := v1.ConditionTrue, "", ""
	if len(unready) > 0 {
		readyStatus = v1.ConditionFalse
		readyReason = "ContainersNotReady"
		readyMsg = fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
		if phase == v1.PodSucceeded {
			readyReason, readyMsg = "PodCompleted", ""
		}
	}
	sandbox := v1.ConditionTrue
	if w.ip == "" || phase == v1.PodSucceeded || phase == v1.PodFailed {
		sandbox = v1.ConditionFalse
	}
	st.Conditions = []v1.PodCondition{
		w.cond(v1.PodReadyToStartContainers, sandbox, "", "", now),
		w.cond(v1.PodInitialized, v1.ConditionTrue, "", "", now),
		w.cond(v1.PodReady, readyStatus, readyReason, readyMsg, now),
		w.cond(v1.ContainersReady, readyStatus, readyReason, readyMsg, now),
		w.cond(v1.PodScheduled, v1.ConditionTrue, "", "", now),
	}
	return st
}
