package main

import (
	"fmt"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
)

// Labels that make the simulated kubelet misbehave on purpose.
const (
	labelFail         = "sim-kubelet/fail"           // image-pull | unschedulable | crash | oom | config-error
	labelExitCode     = "sim-kubelet/exit-code"      // exit code for fail=crash (default 1)
	labelStartDelayMs = "sim-kubelet/start-delay-ms" // milliseconds spent in ContainerCreating
	// An annotation (a path is no label value): the containers stay in ContainerCreating until
	// this file exists, so a test decides the moment a pod starts (e.g. while the API server
	// is down) instead of guessing a delay.
	annotationStartWhenFile = "sim-kubelet/start-when-file"

	failImagePull     = "image-pull"
	failUnschedulable = "unschedulable"
	failCrash         = "crash"
	failOOM           = "oom"
	failConfigError   = "config-error"
)

var knownFailModes = map[string]bool{
	failImagePull: true, failUnschedulable: true, failCrash: true, failOOM: true, failConfigError: true,
}

// podBehaviour is what the sim-kubelet/* labels ask for.
type podBehaviour struct {
	fail       string // "" or one of the fail modes
	exitCode   int32
	startDelay time.Duration
	startGate  string // a file that must exist before the containers start
	warnings   []string
}

func parseBehaviour(pod *v1.Pod) podBehaviour {
	b := podBehaviour{exitCode: 1}
	labels := pod.Labels
	if v, ok := labels[labelFail]; ok {
		if knownFailModes[v] {
			b.fail = v
		} else {
			b.warnings = append(b.warnings, fmt.Sprintf("unknown %s=%q ignored", labelFail, v))
		}
	}
	if v, ok := labels[labelExitCode]; ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 || n > 255 {
			b.warnings = append(b.warnings, fmt.Sprintf("invalid %s=%q ignored (want 0-255)", labelExitCode, v))
		} else {
			b.exitCode = int32(n)
		}
	}
	if v, ok := labels[labelStartDelayMs]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			b.warnings = append(b.warnings, fmt.Sprintf("invalid %s=%q ignored", labelStartDelayMs, v))
		} else {
			b.startDelay = time.Duration(n) * time.Millisecond
		}
	}
	b.startGate = pod.Annotations[annotationStartWhenFile]
	return b
}
