package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// startupError is a failed start, with the component whose log explains it.
type startupError struct {
	component string
	logPath   string
	err       error
}

func (e *startupError) Error() string { return e.component + ": " + e.err.Error() }
func (e *startupError) Unwrap() error { return e.err }

type controlPlane struct {
	cfg        *upConfig
	stateDir   string
	pki        *pkiFiles
	etcd       *proc
	apiserver  *proc
	etcdURL    string
	apiPort    int
	server     string
	kubeconfig string
	restConfig *rest.Config
	client     *kubernetes.Clientset
	wd         *watchdog
}

const maxPortAttempts = 4

// startEtcd starts etcd on free loopback ports and waits until it is healthy.
func (cp *controlPlane) startEtcd(ctx context.Context) error {
	logPath := filepath.Join(cp.stateDir, "etcd.log")
	dataDir := filepath.Join(cp.stateDir, "etcd-data")
	var lastErr error
	for attempt := 1; attempt <= maxPortAttempts; attempt++ {
		if err := os.RemoveAll(dataDir); err != nil {
			return &startupError{"etcd", logPath, err}
		}
		ports, err := freePorts(2)
		if err != nil {
			return &startupError{"etcd", logPath, err}
		}
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		args := []string{
			"--name=localkube",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=localkube=" + peer,
			"--initial-cluster-state=new",
			"--unsafe-no-fsync",
			"--snapshot-count=100000",
			"--log-level=warn",
		}
		p, err := startProc("etcd", cp.cfg.etcdBin, args, logPath, cp.wd)
		if err != nil {
			return &startupError{"etcd", logPath, err}
		}
		cp.etcd = p
		err = waitFor(ctx, 30*time.Second, p, func() bool {
			resp, err := http.Get(client + "/health")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == 200 && strings.Contains(string(body), `"health":"true"`)
		})
		if err == nil {
			cp.etcdURL = client
			return nil
		}
		lastErr = err
		p.stop(2 * time.Second)
		cp.etcd = nil
		if !errors.Is(err, errExited) || !strings.Contains(logTail(logPath, 20), "address already in use") {
			break
		}
		logf("etcd: port clash, retrying with other ports")
	}
	return &startupError{"etcd", logPath, lastErr}
}

// startAPIServer starts kube-apiserver on a free loopback port and waits for /readyz.
func (cp *controlPlane) startAPIServer(ctx context.Context) error {
	logPath := cp.apiserverLogPath()
	var lastErr error
	for attempt := 1; attempt <= maxPortAttempts; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return &startupError{"kube-apiserver", logPath, err}
		}
		err = cp.launchAPIServer(ctx, ports[0])
		if err == nil {
			return nil
		}
		lastErr = err
		if !cp.portClash(err) {
			break
		}
		logf("kube-apiserver: port clash, retrying with another port")
	}
	return &startupError{"kube-apiserver", logPath, lastErr}
}

// portClash tells whether a launch failed because kube-apiserver's port was taken.
func (cp *controlPlane) portClash(err error) bool {
	return errors.Is(err, errExited) && strings.Contains(logTail(cp.apiserverLogPath(), 30), "address already in use")
}

func (cp *controlPlane) apiserverLogPath() string {
	return filepath.Join(cp.stateDir, "kube-apiserver.log")
}

// launchAPIServer starts kube-apiserver on port and waits for /readyz; on failure nothing of
// it is left running.
func (cp *controlPlane) launchAPIServer(ctx context.Context, port int) error {
	certDir := filepath.Join(cp.stateDir, "apiserver-certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	args := []string{
		"--etcd-servers=" + cp.etcdURL,
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + cp.pki.servingCert,
		"--tls-private-key-file=" + cp.pki.servingKey,
		"--client-ca-file=" + cp.pki.caCert,
		"--secure-port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + cp.pki.saPubKey,
		"--service-account-signing-key-file=" + cp.pki.serviceAccountKey,
		"--allow-privileged=true",
	}
	args = append(args, cp.cfg.apiserverArgs...)
	p, err := startProc("kube-apiserver", cp.cfg.apiserverBin, args, cp.apiserverLogPath(), cp.wd)
	if err != nil {
		return err
	}
	cp.apiserver = p
	cp.apiPort = port
	cp.server = fmt.Sprintf("https://127.0.0.1:%d", port)
	httpClient, err := cp.adminHTTPClient()
	if err == nil {
		err = waitFor(ctx, cp.cfg.startupTimeout, p, func() bool {
			resp, err := httpClient.Get(cp.server + "/readyz")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode == 200
		})
	}
	if err != nil {
		p.stop(3 * time.Second)
		cp.apiserver = nil
		return err
	}
	return nil
}

// killAPIServer SIGKILLs kube-apiserver (as an OOM kill or a node crash would: no graceful
// shutdown, open connections reset) and waits until it is gone. etcd keeps running.
func (cp *controlPlane) killAPIServer() (int, error) {
	p := cp.apiserver
	if p == nil {
		return 0, errors.New("kube-apiserver is not running")
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
	p.wd.groupDone(pid)
	cp.apiserver = nil
	return pid, nil
}

// restartAPIServer starts kube-apiserver again on the same port and etcd, so every client
// (kubeconfig, in-pod service env) reaches it at the same address. The port may still be held
// briefly by the killed process's sockets: retry on a clash.
func (cp *controlPlane) restartAPIServer(ctx context.Context) error {
	if cp.apiserver != nil {
		return errors.New("kube-apiserver is already running")
	}
	var err error
	for attempt := 1; attempt <= 10; attempt++ {
		err = cp.launchAPIServer(ctx, cp.apiPort)
		if err == nil || !cp.portClash(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

func (cp *controlPlane) adminHTTPClient() (*http.Client, error) {
	cert, err := tls.X509KeyPair(cp.pki.adminCertPEM, cp.pki.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.pki.caPEM)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert},
		}},
	}, nil
}

var errExited = errors.New("process exited")

// waitFor polls ready every 100 ms until it returns true, the process exits, ctx ends or the
// timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, p *proc, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%w during startup (%s)", errExited, p.cmd.ProcessState)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted: %w", context.Cause(ctx))
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeKubeconfig writes <state>/kubeconfig with embedded CA and admin credentials.
func (cp *controlPlane) writeKubeconfig() error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["localkube"] = &clientcmdapi.Cluster{Server: cp.server, CertificateAuthorityData: cp.pki.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cp.pki.adminCertPEM, ClientKeyData: cp.pki.adminKeyPEM}
	cfg.Contexts["localkube"] = &clientcmdapi.Context{Cluster: "localkube", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "localkube"
	cp.kubeconfig = filepath.Join(cp.stateDir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, cp.kubeconfig); err != nil {
		return err
	}
	cp.restConfig = &rest.Config{
		Host: cp.server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: cp.pki.caPEM, CertData: cp.pki.adminCertPEM, KeyData: cp.pki.adminKeyPEM,
		},
		QPS:       1000,
		Burst:     2000,
		UserAgent: "localkube",
	}
	client, err := kubernetes.NewForConfig(cp.restConfig)
	if err != nil {
		return err
	}
	cp.client = client
	return nil
}

// waitForSystemNamespaces waits until the apiserver has created default and kube-node-lease.
func (cp *controlPlane) waitForSystemNamespaces(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, ns := range []string{"default", "kube-system", "kube-node-lease"} {
		for {
			_, err := cp.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err == nil {
				break
			}
			if !apierrors.IsNotFound(err) || time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("namespace %s: %w", ns, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// stop stops the apiserver, then etcd (SIGTERM, SIGKILL after a few seconds).
func (cp *controlPlane) stop() {
	if cp.apiserver != nil {
		cp.apiserver.stop(5 * time.Second)
	}
	cp.etcd.stop(5 * time.Second)
}
