package main

import (
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

const (
	msgSelectorMismatch = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
	msgInsufficientFmt  = "0/1 nodes are available: 1 Insufficient %s. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
)

// unschedulableReason returns the scheduler's message if the pod cannot go onto node, or "".
// It checks the sim-kubelet/fail=unschedulable label, nodeSelector and required node affinity,
// and the pod's own resource requests against the node's allocatable resources (the node is
// treated as empty: the simulated kubelet does not account for other pods).
func unschedulableReason(pod *v1.Pod, node *v1.Node, b podBehaviour) string {
	if b.fail == failUnschedulable {
		return fmt.Sprintf(msgInsufficientFmt, "cpu")
	}
	if ok, err := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); err != nil || !ok {
		return msgSelectorMismatch
	}
	req := podRequests(pod)
	var short []string
	for name, q := range req {
		alloc, ok := node.Status.Allocatable[name]
		if !ok || q.Cmp(alloc) > 0 {
			short = append(short, string(name))
		}
	}
	if len(short) > 0 {
		sort.Strings(short)
		return fmt.Sprintf(msgInsufficientFmt, strings.Join(short, ", 1 Insufficient "))
	}
	return ""
}

// podRequests: the sum of the containers' requests, at least the largest init container's.
func podRequests(pod *v1.Pod) v1.ResourceList {
	out := v1.ResourceList{}
	for _, c := range pod.Spec.Containers {
		for name, q := range c.Resources.Requests {
			cur := out[name]
			cur.Add(q)
			out[name] = cur
		}
	}
	for _, c := range pod.Spec.InitContainers {
		for name, q := range c.Resources.Requests {
			if cur, ok := out[name]; !ok || q.Cmp(cur) > 0 {
				out[name] = q.DeepCopy()
			}
		}
	}
	for name, q := range out {
		if q.IsZero() {
			delete(out, name)
		}
	}
	return out
}
