package main

// `localkube dry-run` and `localkube create`: send every object of some (multi-document) YAML
// manifests to an API server, as `kubectl create -n NS -f FILE...` would, but with the server's
// strict field validation and, for dry-run, `?dryRun=All`: the API server runs defaulting,
// validation and admission and stores nothing. The example manifests are checked this way in CI.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

type manifestsConfig struct {
	dryRun     bool
	kubeconfig string
	context    string
	namespace  string
	timeout    time.Duration
	files      []string
}

func manifestsUsage(cmd string) string {
	what := "Creates"
	if cmd == "dry-run" {
		what = "Validates"
	}
	return fmt.Sprintf(`usage: localkube %s [--kubeconfig FILE] [--context NAME] [--namespace NS] [--timeout 30s] FILE...

%s every object of every (multi-document) YAML file in namespace NS (default: the
kubeconfig context's namespace, else "default"), with the API server's strict field validation%s.
Namespaced objects are moved into NS, and so are the ServiceAccount subjects of a RoleBinding that
named the binding's own namespace. Prints one line per object to stdout:
  ok Kind/name
  FAILED Kind/name: <the server's message>
  FAILED FILE#N: <why document N of FILE is not an object>
Exit status: 0 when every object is ok, 1 when any failed, 2 for bad flags.
`, cmd, what, map[bool]string{true: " and ?dryRun=All (nothing is stored)", false: ""}[cmd == "dry-run"])
}

func parseManifests(cmd string, args []string, stderr io.Writer) (*manifestsConfig, error) {
	cfg := &manifestsConfig{dryRun: cmd == "dry-run"}
	fs := flag.NewFlagSet("localkube "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, manifestsUsage(cmd))
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&cfg.context, "context", "", "kubeconfig context (default: the current context)")
	fs.StringVar(&cfg.namespace, "namespace", "", "namespace for namespaced objects")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "timeout of each API request")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg.files = fs.Args()
	if len(cfg.files) == 0 {
		return nil, errors.New("no manifest files given")
	}
	return cfg, nil
}

func runManifests(cmd string, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseManifests(cmd, args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "localkube %s: %v\n", cmd, err)
		return 2
	}

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = cfg.kubeconfig
	clientConfig := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: cfg.context})
	restConfig, err := clientConfig.ClientConfig()
	if err != nil {
		fmt.Fprintf(stdout, "FAILED kubeconfig: %s\n", oneLine(err.Error()))
		return 1
	}
	if cfg.namespace == "" {
		if ns, _, err := clientConfig.Namespace(); err == nil && ns != "" {
			cfg.namespace = ns
		} else {
			cfg.namespace = "default"
		}
	}
	restConfig.Timeout = cfg.timeout
	restConfig.WarningHandler = rest.NewWarningWriter(stderr, rest.WarningWriterOptions{})

	disco, err := discovery.NewDiscoveryClientForConfig(restConfig)
	if err != nil {
		fmt.Fprintf(stdout, "FAILED client: %s\n", oneLine(err.Error()))
		return 1
	}
	dyn, err := dynamic.NewForConfig(restConfig)
	if err != nil {
		fmt.Fprintf(stdout, "FAILED client: %s\n", oneLine(err.Error()))
		return 1
	}
	s := &manifestSender{
		mapper:    restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco)),
		dyn:       dyn,
		namespace: cfg.namespace,
		dryRun:    cfg.dryRun,
	}

	failed := false
	for _, file := range cfg.files {
		docs, err := readManifestFile(file)
		if err != nil {
			fmt.Fprintf(stdout, "FAILED %s: %s\n", file, oneLine(err.Error()))
			failed = true
			continue
		}
		for _, doc := range docs {
			if doc.err != nil {
				fmt.Fprintf(stdout, "FAILED %s#%d: %s\n", file, doc.index, oneLine(doc.err.Error()))
				failed = true
				continue
			}
			if err := s.send(context.Background(), doc.obj); err != nil {
				fmt.Fprintf(stdout, "FAILED %s: %s\n", objectID(doc.obj), oneLine(err.Error()))
				failed = true
				continue
			}
			fmt.Fprintf(stdout, "ok %s\n", objectID(doc.obj))
		}
	}
	if failed {
		return 1
	}
	return 0
}

// manifestDoc is one object of a manifest file, or why a document is not one.
type manifestDoc struct {
	index int // 1-based number of the YAML document in its file
	obj   *unstructured.Unstructured
	err   error
}

func readManifestFile(path string) ([]manifestDoc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeManifests(data)
}

// decodeManifests splits a multi-document YAML stream into objects. Empty documents (only
// comments or whitespace) are skipped; a `kind: List` gives its items; duplicate keys are errors
// (JSON would silently keep the last one, and the server would never see the first).
func decodeManifests(data []byte) ([]manifestDoc, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs []manifestDoc
	for index := 1; ; index++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, fmt.Errorf("document %d: %w", index, err)
		}
		js, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			docs = append(docs, manifestDoc{index: index, err: err})
			continue
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue
		}
		var content map[string]any
		if err := json.Unmarshal(js, &content); err != nil {
			docs = append(docs, manifestDoc{index: index, err: errors.New("not a YAML mapping")})
			continue
		}
		obj := &unstructured.Unstructured{Object: content}
		if err := checkObject(obj); err != nil {
			docs = append(docs, manifestDoc{index: index, err: err})
			continue
		}
		if obj.IsList() {
			list, err := obj.ToList()
			if err != nil {
				docs = append(docs, manifestDoc{index: index, err: err})
				continue
			}
			for i := range list.Items {
				item := &list.Items[i]
				if err := checkObject(item); err != nil {
					err = fmt.Errorf("items[%d]: %w", i, err)
				}
				docs = append(docs, manifestDoc{index: index, obj: item, err: err})
			}
			continue
		}
		docs = append(docs, manifestDoc{index: index, obj: obj})
	}
}

func checkObject(obj *unstructured.Unstructured) error {
	switch {
	case obj.GetAPIVersion() == "":
		return errors.New("apiVersion is not set")
	case obj.GetKind() == "":
		return errors.New("kind is not set")
	}
	return nil
}

func objectID(obj *unstructured.Unstructured) string {
	name := obj.GetName()
	if name == "" && obj.GetGenerateName() != "" {
		name = obj.GetGenerateName() + "*"
	}
	return obj.GetKind() + "/" + name
}

type manifestSender struct {
	mapper    meta.RESTMapper
	dyn       dynamic.Interface
	namespace string
	dryRun    bool
}

func (s *manifestSender) send(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	mapping, err := s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	namespaced := mapping.Scope.Name() == meta.RESTScopeNameNamespace
	intoNamespace(obj, s.namespace, namespaced)

	opts := metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}
	if s.dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var ri dynamic.ResourceInterface = s.dyn.Resource(mapping.Resource)
	if namespaced {
		ri = s.dyn.Resource(mapping.Resource).Namespace(s.namespace)
	}
	if _, err := ri.Create(ctx, obj, opts); err != nil {
		var status apierrors.APIStatus
		if errors.As(err, &status) && status.Status().Message != "" {
			return errors.New(status.Status().Message)
		}
		return err
	}
	return nil
}

var rbacGroup = schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}

// intoNamespace moves a namespaced object into ns, like `kubectl create -n ns` does for objects
// without a namespace (a manifest without metadata.namespace means "default"). A RoleBinding's
// ServiceAccount subjects that named the binding's own namespace move with it: the manifest
// meant "the account next to this binding", which must name a namespace because the API
// requires one.
func intoNamespace(obj *unstructured.Unstructured, ns string, namespaced bool) {
	if !namespaced {
		obj.SetNamespace("")
		return
	}
	original := obj.GetNamespace()
	if original == "" {
		original = "default"
	}
	obj.SetNamespace(ns)
	if obj.GroupVersionKind().GroupKind() != rbacGroup {
		return
	}
	subjects, found, err := unstructured.NestedSlice(obj.Object, "subjects")
	if !found || err != nil {
		return
	}
	for _, s := range subjects {
		subject, ok := s.(map[string]any)
		if !ok || subject["kind"] != "ServiceAccount" {
			continue
		}
		if subjectNS, _ := subject["namespace"].(string); subjectNS == original {
			subject["namespace"] = ns
		}
	}
	_ = unstructured.SetNestedSlice(obj.Object, subjects, "subjects")
}
