package main

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "B": "beta", "EMPTY": ""}
	cases := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"$(A)", "alpha"},
		{"x$(A)y$(B)z", "xalphaybetaz"},
		{"$(EMPTY)-", "-"},
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$$(A)", "$(A)"},
		{"$$$(A)", "$alpha"},
		{"$$$$(A)", "$$(A)"},
		{"$(A", "$(A"},
		{"$A", "$A"},
		{"$", "$"},
		{"a$", "a$"},
		{"$$", "$"},
		{"$()", "$()"},
		{"$(A)$(B)", "alphabeta"},
		{"${A}", "${A}"},
		{"$(A)$", "alpha$"},
	}
	m := mappingFor(vars)
	for _, c := range cases {
		if got := expand(c.in, m); got != c.want {
			t.Errorf("expand(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

type fakeObjects struct {
	secrets    map[string]*v1.Secret
	configMaps map[string]*v1.ConfigMap
}

func (f fakeObjects) secret(ns, name string) (*v1.Secret, error) {
	if s, ok := f.secrets[name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func (f fakeObjects) configMap(ns, name string) (*v1.ConfigMap, error) {
	if c, ok := f.configMaps[name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func testPod() *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "p", Namespace: "ns", UID: "uid-1",
			Labels:      map[string]string{"app": "x", "tier": "web"},
			Annotations: map[string]string{"note": "hello"},
		},
		Spec: v1.PodSpec{NodeName: "sim-node", ServiceAccountName: "sa"},
	}
}

func TestContainerEnv(t *testing.T) {
	objs := fakeObjects{
		secrets: map[string]*v1.Secret{
			"s": {Data: map[string][]byte{"user": []byte("bob"), "pass": []byte("pw"), "bad=name": []byte("x")}},
		},
		configMaps: map[string]*v1.ConfigMap{
			"cm": {Data: map[string]string{"MODE": "fast", "LEVEL": "3"}},
		},
	}
	c := &v1.Container{
		EnvFrom: []v1.EnvFromSource{
			{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}},
			{Prefix: "S_", SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "s"}}},
			{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "missing"}, Optional: ptr.To(true)}},
		},
		Env: []v1.EnvVar{
			{Name: "MODE", Value: "slow-$(MODE)"},
			{Name: "IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "IPS", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIPs"}}},
			{Name: "HOST", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NS", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "UID", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
			{Name: "APP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "NOTE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.annotations['note']"}}},
			{Name: "NODE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "SA", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
			{Name: "USER", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "s"}, Key: "user"}}},
			{Name: "OPT", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "s"}, Key: "nope", Optional: ptr.To(true)}}},
			{Name: "LVL", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}, Key: "LEVEL"}}},
			{Name: "NODE_NAME", Value: "runner@$(IP)"},
			{Name: "ESC", Value: "$$(IP) $(LATER) $(KUBERNETES_SERVICE_HOST)"},
			{Name: "LATER", Value: "late"},
			{Name: "CPU", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.cpu"}}},
		},
	}
	var logs []string
	ctx := podEnvContext{
		podIP: "127.0.0.7", podIPs: []string{"127.0.0.7"}, hostIP: "127.0.0.1", hostIPs: []string{"127.0.0.1"},
		serviceEnv: map[string]string{"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
		logf:       func(f string, a ...any) { logs = append(logs, f) },
	}
	env, err := containerEnv(testPod(), c, ctx, objs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"KUBERNETES_SERVICE_HOST": "127.0.0.1",
		"LEVEL":                   "3",
		"MODE":                    "slow-fast",
		"S_pass":                  "pw",
		"S_user":                  "bob",
		"IP":                      "127.0.0.7",
		"IPS":                     "127.0.0.7",
		"HOST":                    "127.0.0.1",
		"NAME":                    "p",
		"NS":                      "ns",
		"UID":                     "uid-1",
		"APP":                     "x",
		"NOTE":                    "hello",
		"NODE":                    "sim-node",
		"SA":                      "sa",
		"USER":                    "bob",
		"LVL":                     "3",
		"NODE_NAME":               "runner@127.0.0.7",
		"ESC":                     "$(IP) $(LATER) 127.0.0.1",
		"LATER":                   "late",
	}
	if !reflect.DeepEqual(env.values, want) {
		t.Errorf("env mismatch:\n got %v\nwant %v", env.values, want)
	}
	// envFrom before env, in source order; an overridden name keeps its first position.
	if got := strings.Join(env.names[:5], ","); got != "KUBERNETES_SERVICE_HOST,LEVEL,MODE,S_pass,S_user" {
		t.Errorf("order: %s", got)
	}
	if len(logs) != 2 { // invalid envFrom key + resourceFieldRef
		t.Errorf("want 2 log lines, got %q", logs)
	}

	proc := processEnv(func(n string) (string, bool) {
		if n == "PATH" {
			return "/bin", true
		}
		if n == "HOME" {
			return "/home/x", true
		}
		return "", false
	}, "p", env)
	pe := proc.environ()
	if pe[0] != "PATH=/bin" || pe[1] != "HOME=/home/x" || pe[2] != "HOSTNAME=p" {
		t.Errorf("process env starts with %v", pe[:3])
	}
	// The pod's own variables win over the base env.
	over, _ := containerEnv(testPod(), &v1.Container{Env: []v1.EnvVar{{Name: "HOME", Value: "/pod"}}}, podEnvContext{}, objs)
	if v, _ := processEnv(func(string) (string, bool) { return "/base", true }, "p", over).get("HOME"); v != "/pod" {
		t.Errorf("HOME = %q", v)
	}
}

func TestContainerEnvErrors(t *testing.T) {
	objs := fakeObjects{
		secrets:    map[string]*v1.Secret{"s": {Data: map[string][]byte{"a": []byte("1")}}},
		configMaps: map[string]*v1.ConfigMap{"cm": {Data: map[string]string{"a": "1"}}},
	}
	ref := func(name string) v1.LocalObjectReference { return v1.LocalObjectReference{Name: name} }
	cases := []struct {
		name string
		c    v1.Container
		want string
	}{
		{"missing secret", v1.Container{Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: ref("x"), Key: "a"}}}}}, `secret "x" not found`},
		{"missing secret key", v1.Container{Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: ref("s"), Key: "K"}}}}}, `couldn't find key K in Secret ns/s`},
		{"missing configmap", v1.Container{Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: ref("c"), Key: "a"}}}}}, `configmap "c" not found`},
		{"missing configmap key", v1.Container{Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: ref("cm"), Key: "K"}}}}}, `couldn't find key K in ConfigMap ns/cm`},
		{"envFrom missing secret", v1.Container{EnvFrom: []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: ref("y")}}}}, `secret "y" not found`},
		{"envFrom missing configmap", v1.Container{EnvFrom: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: ref("z")}}}}, `configmap "z" not found`},
	}
	for _, c := range cases {
		_, err := containerEnv(testPod(), &c.c, podEnvContext{}, objs)
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

func TestFieldRefLabelsFormatting(t *testing.T) {
	v, err := fieldRefValue(testPod(), "metadata.labels", podEnvContext{})
	if err != nil || v != "app=\"x\"\ntier=\"web\"" {
		t.Errorf("got %q %v", v, err)
	}
	if v, _ := fieldRefValue(testPod(), "metadata.labels['missing']", podEnvContext{}); v != "" {
		t.Errorf("missing label = %q", v)
	}
	if _, err := fieldRefValue(testPod(), "spec.bogus", podEnvContext{}); err == nil {
		t.Error("want an error for an unsupported path")
	}
}

func TestIPAllocator(t *testing.T) {
	a := newIPAllocator()
	var got []string
	for range 260 {
		ip, err := a.allocate()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip)
	}
	if got[0] != "127.0.0.2" || got[252] != "127.0.0.254" || got[253] != "127.0.1.1" || got[259] != "127.0.1.7" {
		t.Errorf("sequence: %v ... %v", got[:3], got[250:])
	}
	seen := map[string]bool{}
	for _, ip := range got {
		if seen[ip] {
			t.Fatalf("duplicate %s", ip)
		}
		seen[ip] = true
	}
	// Freed addresses are reused only after the cursor wraps around.
	a.release("127.0.0.2")
	if ip, _ := a.allocate(); ip != "127.0.1.8" {
		t.Errorf("after release got %s", ip)
	}
	if a.inUse() != 260 {
		t.Errorf("inUse = %d", a.inUse())
	}
	// Wrap-around: with the cursor at the end the lowest free address comes next.
	b := newIPAllocator()
	b.last = ipLast
	if ip, _ := b.allocate(); ip != "127.0.0.2" {
		t.Errorf("wrap got %s", ip)
	}
	for _, off := range []uint32{0, 1, 255, 256, 0x1ff, ipLast + 1} {
		if usableOffset(off) {
			t.Errorf("offset %#x should be unusable", off)
		}
	}
}

func TestParseBehaviour(t *testing.T) {
	pod := testPod()
	pod.Labels = map[string]string{labelFail: "crash", labelExitCode: "3", labelStartDelayMs: "250"}
	b := parseBehaviour(pod)
	if b.fail != failCrash || b.exitCode != 3 || b.startDelay.Milliseconds() != 250 || len(b.warnings) != 0 {
		t.Errorf("got %+v", b)
	}
	pod.Labels = map[string]string{labelFail: "explode", labelExitCode: "x", labelStartDelayMs: "-1"}
	b = parseBehaviour(pod)
	if b.fail != "" || b.exitCode != 1 || b.startDelay != 0 || len(b.warnings) != 3 {
		t.Errorf("got %+v", b)
	}
	pod.Annotations = map[string]string{annotationStartWhenFile: "/tmp/go"}
	if b = parseBehaviour(pod); b.startGate != "/tmp/go" {
		t.Errorf("start gate: got %+v", b)
	}
}

func TestStartGateOpensWhenTheFileExists(t *testing.T) {
	gate := t.TempDir() + "/go"
	w := &podWorker{b: podBehaviour{startGate: gate}}
	if w.startGateOpen() {
		t.Fatal("open before the file exists")
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !w.startGateOpen() {
		t.Fatal("closed after the file exists")
	}
	if !(&podWorker{}).startGateOpen() {
		t.Fatal("no gate must be open")
	}
}

func TestUnschedulableReason(t *testing.T) {
	na := &nodeAgent{name: "sim-node"}
	node := na.desired()
	pod := testPod()
	pod.Spec.NodeName = ""
	if r := unschedulableReason(pod, node, parseBehaviour(pod)); r != "" {
		t.Errorf("plain pod: %q", r)
	}
	pod.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "linux"}
	if r := unschedulableReason(pod, node, parseBehaviour(pod)); r != "" {
		t.Errorf("matching selector: %q", r)
	}
	pod.Spec.NodeSelector = map[string]string{"disktype": "ssd"}
	if r := unschedulableReason(pod, node, parseBehaviour(pod)); !strings.HasPrefix(r, "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.") {
		t.Errorf("selector: %q", r)
	}
	pod.Spec.NodeSelector = nil
	pod.Labels[labelFail] = failUnschedulable
	if r := unschedulableReason(pod, node, parseBehaviour(pod)); !strings.HasPrefix(r, "0/1 nodes are available: 1 Insufficient cpu.") {
		t.Errorf("label: %q", r)
	}
	delete(pod.Labels, labelFail)
	pod.Spec.Containers = []v1.Container{{Resources: v1.ResourceRequirements{Requests: v1.ResourceList{
		v1.ResourceMemory: resource.MustParse("1Ti"),
	}}}}
	if r := unschedulableReason(pod, node, parseBehaviour(pod)); !strings.HasPrefix(r, "0/1 nodes are available: 1 Insufficient memory.") {
		t.Errorf("resources: %q", r)
	}
}

func TestNormalizeImage(t *testing.T) {
	cases := map[string]string{
		"demo:1":                   "docker.io/library/demo:1",
		"demo":                     "docker.io/library/demo:latest",
		"org/app:2":                "docker.io/org/app:2",
		"ghcr.io/org/app":          "ghcr.io/org/app:latest",
		"localhost:5000/app":       "localhost:5000/app:latest",
		"localhost/app:1":          "localhost/app:1",
		"reg.io/app@sha256:abcdef": "reg.io/app@sha256:abcdef",
	}
	for in, want := range cases {
		if got := normalizeImage(in); got != want {
			t.Errorf("normalizeImage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLookPathIn(t *testing.T) {
	if p, err := lookPathIn("sh", "/nonexistent:/bin:/usr/bin"); err != nil || !strings.HasSuffix(p, "/sh") {
		t.Errorf("sh: %q %v", p, err)
	}
	if _, err := lookPathIn("surely-not-a-command", "/bin"); err == nil || !strings.Contains(err.Error(), "executable file not found in $PATH") {
		t.Errorf("err = %v", err)
	}
}

func TestReadCommandsSkipsBlankLinesAndSignalsEOF(t *testing.T) {
	cmds := make(chan string, 4)
	eof := make(chan struct{})
	readCommands(strings.NewReader("kill-apiserver\n\n  start-apiserver  \n"), cmds, func() { close(eof) })
	<-eof
	close(cmds)
	var got []string
	for c := range cmds {
		got = append(got, c)
	}
	if strings.Join(got, ",") != "kill-apiserver,start-apiserver" {
		t.Errorf("commands %q", got)
	}
}

func TestUnknownCommandIsAnswered(t *testing.T) {
	lk := &localkube{cp: &controlPlane{}}
	got := lk.command(context.Background(), "reboot now")
	if !strings.HasPrefix(got, "ERROR reboot: unknown command") {
		t.Errorf("answer %q", got)
	}
	if got := lk.command(context.Background(), "kill-apiserver"); got != "ERROR kill-apiserver: kube-apiserver is not running" {
		t.Errorf("answer %q", got)
	}
}
