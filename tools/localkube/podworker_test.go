package main

import (
	"io"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The pod worker's state machine without an API server: container phases, the pod phase and
// conditions derived from them, image pull back-off and container exits.

func testWorker(containers ...string) (*podWorker, *v1.Pod) {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1", Generation: 2}}
	for _, name := range containers {
		pod.Spec.Containers = append(pod.Spec.Containers, v1.Container{Name: name, Image: name + ":1"})
	}
	k := &kubelet{elog: &eventLog{w: io.Discard}}
	w := newPodWorker(k, pod)
	for _, c := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, &ctr{name: c.Name, image: c.Image})
	}
	return w, pod
}

func condition(st v1.PodStatus, typ v1.PodConditionType) v1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return v1.PodCondition{}
}

func TestPodPhaseFromContainers(t *testing.T) {
	cases := []struct {
		name   string
		phases []ctrPhase
		codes  []int32
		want   v1.PodPhase
	}{
		{"no containers yet", nil, nil, v1.PodPending},
		{"all waiting", []ctrPhase{ctrWaiting, ctrWaiting}, []int32{0, 0}, v1.PodPending},
		{"one running wins over a failed one", []ctrPhase{ctrRunning, ctrTerminated}, []int32{0, 1}, v1.PodRunning},
		{"one still waiting keeps it pending", []ctrPhase{ctrWaiting, ctrTerminated}, []int32{0, 0}, v1.PodPending},
		{"any non-zero exit fails it", []ctrPhase{ctrTerminated, ctrTerminated}, []int32{0, 137}, v1.PodFailed},
		{"all exited 0", []ctrPhase{ctrTerminated, ctrTerminated}, []int32{0, 0}, v1.PodSucceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := testWorker()
			for i, p := range tc.phases {
				w.ctrs = append(w.ctrs, &ctr{name: string(rune('a' + i)), phase: p, exitCode: tc.codes[i]})
			}
			if got := w.phase(); got != tc.want {
				t.Fatalf("phase = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestBuildStatusRunningPodIsReady(t *testing.T) {
	w, pod := testWorker("app")
	now := time.Unix(1000, 0)
	w.ip = "127.0.0.9"
	w.startTime = now
	w.ctrs[0].phase = ctrRunning
	w.ctrs[0].startedAt = now

	st := w.buildStatus(pod, now)
	if st.Phase != v1.PodRunning || st.PodIP != "127.0.0.9" || st.ObservedGeneration != 2 {
		t.Fatalf("status = %+v", st)
	}
	if c := condition(st, v1.PodReady); c.Status != v1.ConditionTrue {
		t.Fatalf("Ready = %+v", c)
	}
	cs := st.ContainerStatuses[0]
	if cs.State.Running == nil || !cs.Ready || cs.Started == nil || !*cs.Started {
		t.Fatalf("container status = %+v", cs)
	}
}

func TestBuildStatusNamesUnreadyContainers(t *testing.T) {
	w, pod := testWorker("app", "sidecar")
	now := time.Unix(1000, 0)
	w.ip = "127.0.0.9"
	w.ctrs[0].phase = ctrRunning
	w.ctrs[1].phase = ctrWaiting
	w.ctrs[1].reason = "ContainerCreating"

	st := w.buildStatus(pod, now)
	ready := condition(st, v1.PodReady)
	if ready.Status != v1.ConditionFalse || ready.Reason != "ContainersNotReady" ||
		ready.Message != "containers with unready status: [sidecar]" {
		t.Fatalf("Ready = %+v", ready)
	}
	if w := st.ContainerStatuses[1].State.Waiting; w == nil || w.Reason != "ContainerCreating" {
		t.Fatalf("sidecar state = %+v", st.ContainerStatuses[1].State)
	}
}

func TestConditionTransitionTimeMovesOnlyOnChange(t *testing.T) {
	w, pod := testWorker("app")
	t0, t1, t2 := time.Unix(1000, 0), time.Unix(1001, 0), time.Unix(1002, 0)
	w.ip = "127.0.0.9"

	first := condition(w.buildStatus(pod, t0), v1.PodReady)
	same := condition(w.buildStatus(pod, t1), v1.PodReady)
	if !same.LastTransitionTime.Equal(&first.LastTransitionTime) {
		t.Fatalf("unchanged condition moved: %v -> %v", first.LastTransitionTime, same.LastTransitionTime)
	}
	w.ctrs[0].phase = ctrRunning
	changed := condition(w.buildStatus(pod, t2), v1.PodReady)
	if changed.Status != v1.ConditionTrue || !changed.LastTransitionTime.Time.Equal(t2) {
		t.Fatalf("changed condition = %+v", changed)
	}
}

func TestImagePullErrorBacksOffAfterItsDelay(t *testing.T) {
	w, _ := testWorker("app")
	now := time.Unix(1000, 0)
	c := w.ctrs[0]
	w.setPullError(c, now, "")
	if c.reason != "ErrImagePull" || !strings.Contains(c.message, "app:1") {
		t.Fatalf("after pull error: %q %q", c.reason, c.message)
	}

	w.progressBackoff(now.Add(imagePullBackOffAt / 2))
	if c.reason != "ErrImagePull" || w.dirty {
		t.Fatalf("backed off early: %q dirty=%v", c.reason, w.dirty)
	}
	if !w.wake.Equal(now.Add(imagePullBackOffAt)) {
		t.Fatalf("wake = %v, want the back-off time", w.wake)
	}

	w.progressBackoff(now.Add(imagePullBackOffAt))
	if c.reason != "ImagePullBackOff" || !w.dirty || !c.backoffAt.IsZero() {
		t.Fatalf("after back-off time: %q dirty=%v backoffAt=%v", c.reason, w.dirty, c.backoffAt)
	}
}

func TestContainerExitTerminatesWithCodeAndReason(t *testing.T) {
	w, pod := testWorker("app")
	now := time.Unix(1000, 0)
	w.ip = "127.0.0.9"
	w.ctrs[0].phase = ctrRunning
	w.ctrs[0].alive = true

	w.onExit(containerExit{idx: 0, code: 137, reason: "OOMKilled", signaled: "killed", at: now})

	st := w.buildStatus(pod, now)
	term := st.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 137 || term.Reason != "OOMKilled" || !term.FinishedAt.Time.Equal(now) {
		t.Fatalf("terminated = %+v", term)
	}
	if st.Phase != v1.PodFailed || w.aliveCount() != 0 || !w.dirty {
		t.Fatalf("phase %s alive %d dirty %v", st.Phase, w.aliveCount(), w.dirty)
	}
	if c := condition(st, v1.PodReadyToStartContainers); c.Status != v1.ConditionFalse {
		t.Fatalf("a failed pod's sandbox is not ready: %+v", c)
	}
}
