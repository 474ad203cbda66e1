package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// kubelet is the simulated kubelet: it watches all pods, schedules unbound ones onto its node,
// and runs the containers of pods bound to its node as local processes.
type kubelet struct {
	client     kubernetes.Interface
	nodeName   string
	node       *v1.Node
	images     map[string]string // image reference -> absolute path of the entrypoint
	stateDir   string
	elog       *eventLog
	ips        *ipAllocator
	serviceEnv map[string]string
	wd         *watchdog

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	stopped bool
	wg      sync.WaitGroup
}

func newKubelet(client kubernetes.Interface, node *v1.Node, images map[string]string, stateDir string, elog *eventLog, serviceEnv map[string]string) *kubelet {
	ctx, cancel := context.WithCancel(context.Background())
	return &kubelet{
		client: client, nodeName: node.Name, node: node, images: images, stateDir: stateDir,
		elog: elog, ips: newIPAllocator(), serviceEnv: serviceEnv,
		ctx: ctx, cancel: cancel, workers: map[types.UID]*podWorker{},
	}
}

// start begins watching pods and returns once the informer cache is synced.
func (k *kubelet) start() error {
	factory := informers.NewSharedInformerFactory(k.client, 0)
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.onPod(obj) },
		UpdateFunc: func(_, obj any) { k.onPod(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				k.mu.Lock()
				w := k.workers[pod.UID]
				k.mu.Unlock()
				if w != nil {
					w.markGone()
				}
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(k.ctx.Done())
	syncCtx, cancel := context.WithTimeout(k.ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		return fmt.Errorf("pod informer did not sync")
	}
	k.elog.printf("kubelet: started on node %s with %d image(s) in the image table", k.nodeName, len(k.images))
	return nil
}

func (k *kubelet) onPod(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w := k.workers[pod.UID]
	if w == nil {
		if k.stopped || (pod.Spec.NodeName != "" && pod.Spec.NodeName != k.nodeName) {
			k.mu.Unlock()
			return
		}
		if pod.Spec.NodeName == "" && (pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed) {
			k.mu.Unlock()
			return
		}
		w = newPodWorker(k, pod)
		k.workers[pod.UID] = w
		k.wg.Add(1)
		go w.run()
	}
	k.mu.Unlock()
	w.update(pod)
}

func (k *kubelet) removeWorker(uid types.UID) {
	k.mu.Lock()
	delete(k.workers, uid)
	k.mu.Unlock()
}

// stop kills every pod process (without touching the API) and waits for the workers.
func (k *kubelet) stop() {
	k.mu.Lock()
	k.stopped = true
	k.mu.Unlock()
	k.cancel()
	done := make(chan struct{})
	go func() { k.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		logf("kubelet: some pod workers did not stop in time")
	}
	k.elog.printf("kubelet: stopped")
}

// apiObjects reads Secrets and ConfigMaps straight from the API.
type apiObjects struct {
	ctx    context.Context
	client kubernetes.Interface
}

func (a apiObjects) secret(ns, name string) (*v1.Secret, error) {
	return a.client.CoreV1().Secrets(ns).Get(a.ctx, name, metav1.GetOptions{})
}

func (a apiObjects) configMap(ns, name string) (*v1.ConfigMap, error) {
	return a.client.CoreV1().ConfigMaps(ns).Get(a.ctx, name, metav1.GetOptions{})
}

// eventLog writes the kubelet's one-line-per-event log with millisecond UTC timestamps.
type eventLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *eventLog) printf(format string, args ...any) {
	line := time.Now().UTC().Format("2006-01-02T15:04:05.000Z") + " " + fmt.Sprintf(format, args...)
	line = strings.ReplaceAll(line, "\n", "\\n") + "\n"
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, line)
}

func (k *kubelet) podLogDir(pod *v1.Pod) string {
	return filepath.Join(k.stateDir, "pods", pod.Namespace+"_"+pod.Name)
}

// normalizeImage expands a short image reference the way container runtimes do
// (demo:1 -> docker.io/library/demo:1, x -> docker.io/library/x:latest).
func normalizeImage(ref string) string {
	name := ref
	if i := strings.IndexByte(ref, '/'); i < 0 {
		name = "docker.io/library/" + ref
	} else if first := ref[:i]; !strings.ContainsAny(first, ".:") && first != "localhost" {
		name = "docker.io/" + ref
	}
	last := name[strings.LastIndexByte(name, '/')+1:]
	if !strings.ContainsAny(last, ":@") {
		name += ":latest"
	}
	return name
}

func imagePullMessage(ref string) string {
	return fmt.Sprintf("rpc error: code = NotFound desc = failed to pull and unpack image %q: failed to resolve reference %q: %s: not found (image %q is not in the simulated kubelet's image table)",
		normalizeImage(ref), normalizeImage(ref), normalizeImage(ref), ref)
}

func imageBackOffMessage(ref string) string {
	return fmt.Sprintf("Back-off pulling image %q", ref)
}

// lookPathIn finds an executable named file in the directories of pathEnv.
func lookPathIn(file, pathEnv string) (string, error) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}
