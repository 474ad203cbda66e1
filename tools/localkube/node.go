package main

import (
	"context"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const heartbeatInterval = 10 * time.Second

// nodeAgent registers the simulated node and keeps its Ready condition and Lease fresh.
type nodeAgent struct {
	client  kubernetes.Interface
	name    string
	version string
	node    *v1.Node
}

func (n *nodeAgent) desired() *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.name,
			Labels: map[string]string{
				"kubernetes.io/hostname":       n.name,
				"kubernetes.io/os":             "linux",
				"kubernetes.io/arch":           runtime.GOARCH,
				"beta.kubernetes.io/os":        "linux",
				"beta.kubernetes.io/arch":      runtime.GOARCH,
				"node.kubernetes.io/simulated": "true",
			},
		},
		Status: n.status(time.Now()),
	}
}

func (n *nodeAgent) status(now time.Time) v1.NodeStatus {
	res := v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("32"),
		v1.ResourceMemory:           resource.MustParse("128Gi"),
		v1.ResourcePods:             resource.MustParse("1000"),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	t := metav1.NewTime(now)
	cond := func(typ v1.NodeConditionType, st v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: typ, Status: st, Reason: reason, Message: msg, LastHeartbeatTime: t, LastTransitionTime: t}
	}
	return v1.NodeStatus{
		Capacity:    res,
		Allocatable: res.DeepCopy(),
		Phase:       v1.NodeRunning,
		Conditions: []v1.NodeCondition{
			cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "kubelet is posting ready status (simulated kubelet)"),
		},
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: v1.NodeHostName, Address: n.name},
		},
		DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: 10250}},
		NodeInfo: v1.NodeSystemInfo{
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
			KubeletVersion:          n.version,
			KubeProxyVersion:        "",
			ContainerRuntimeVersion: "sim://localkube",
			OSImage:                 "localkube simulated node",
			KernelVersion:           "",
			MachineID:               "localkube",
			SystemUUID:              "localkube",
			BootID:                  "localkube",
		},
	}
}

// register creates (or replaces the status of) the node and its lease.
func (n *nodeAgent) register(ctx context.Context) error {
	want := n.desired()
	node, err := n.client.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	node.Status = want.Status
	node, err = n.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	n.node = node
	return n.renewLease(ctx)
}

func (n *nodeAgent) renewLease(ctx context.Context) error {
	leases := n.client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, n.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.name, Namespace: v1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(n.name),
				LeaseDurationSeconds: ptr.To[int32](40),
				RenewTime:            &now,
			},
		}
		if n.node != nil {
			lease.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: n.name, UID: n.node.UID,
			}}
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

// heartbeat refreshes the lease and the Ready condition every heartbeatInterval until ctx ends.
func (n *nodeAgent) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := n.renewLease(ctx); err != nil && ctx.Err() == nil {
			logf("node %s: lease renewal failed: %v", n.name, err)
		}
		node, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			logf("node %s was deleted: registering it again", n.name)
			if err := n.register(ctx); err != nil && ctx.Err() == nil {
				logf("node %s: %v", n.name, err)
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				logf("node %s: %v", n.name, err)
			}
			continue
		}
		now := metav1.NewTime(time.Now())
		for i := range node.Status.Conditions {
			node.Status.Conditions[i].LastHeartbeatTime = now
		}
		if _, err := n.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
			logf("node %s: status heartbeat failed: %v", n.name, err)
		}
	}
}
