package main

import (
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// configError is a container configuration problem the kubelet reports as
// waiting{reason: CreateContainerConfigError}.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// objectSource reads the Secrets and ConfigMaps a container's environment refers to.
// Implementations return an error satisfying apierrors.IsNotFound for a missing object.
type objectSource interface {
	secret(namespace, name string) (*v1.Secret, error)
	configMap(namespace, name string) (*v1.ConfigMap, error)
}

// envList is an ordered set of environment variables: setting an existing name replaces its
// value in place.
type envList struct {
	names  []string
	values map[string]string
}

func newEnvList() *envList { return &envList{values: map[string]string{}} }

func (e *envList) set(name, value string) {
	if _, ok := e.values[name]; !ok {
		e.names = append(e.names, name)
	}
	e.values[name] = value
}

func (e *envList) get(name string) (string, bool) {
	v, ok := e.values[name]
	return v, ok
}

// environ renders the list as "NAME=value" strings for exec.
func (e *envList) environ() []string {
	out := make([]string, 0, len(e.names))
	for _, n := range e.names {
		out = append(out, n+"="+e.values[n])
	}
	return out
}

// podEnvContext is what the kubelet knows about a pod beyond its spec when building env.
type podEnvContext struct {
	podIP      string
	podIPs     []string
	hostIP     string
	hostIPs    []string
	serviceEnv map[string]string // KUBERNETES_SERVICE_HOST etc.
	logf       func(format string, args ...any)
}

// containerEnv builds a container's environment like the kubelet does, in Kubernetes order:
// the kubelet-generated variables (service env, envFrom in order, env in order, each env value
// $(VAR)-expanded against what was defined before it). It returns the kubelet-generated list
// (which is also the $(VAR) mapping for command and args); the caller lays it over the base env.
func containerEnv(pod *v1.Pod, c *v1.Container, ctx podEnvContext, src objectSource) (*envList, error) {
	logf := ctx.logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	out := newEnvList()
	// Service environment comes first so the container can override it.
	keys := make([]string, 0, len(ctx.serviceEnv))
	for k := range ctx.serviceEnv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.set(k, ctx.serviceEnv[k])
	}

	secrets := map[string]*v1.Secret{}
	configMaps := map[string]*v1.ConfigMap{}
	getSecret := func(name string) (*v1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		s, err := src.secret(pod.Namespace, name)
		if err != nil {
			return nil, err
		}
		secrets[name] = s
		return s, nil
	}
	getConfigMap := func(name string) (*v1.ConfigMap, error) {
		if cm, ok := configMaps[name]; ok {
			return cm, nil
		}
		cm, err := src.configMap(pod.Namespace, name)
		if err != nil {
			return nil, err
		}
		configMaps[name] = cm
		return cm, nil
	}

	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			ref := from.ConfigMapRef
			optional := ref.Optional != nil && *ref.Optional
			cm, err := getConfigMap(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, lookupError("configmap", ref.Name, err)
			}
			for _, k := range sortedKeys(cm.Data) {
				name := from.Prefix + k
				if !validEnvName(name) {
					logf("envFrom configmap %q: skipping invalid variable name %q", ref.Name, name)
					continue
				}
				out.set(name, cm.Data[k])
			}
		case from.SecretRef != nil:
			ref := from.SecretRef
			optional := ref.Optional != nil && *ref.Optional
			s, err := getSecret(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, lookupError("secret", ref.Name, err)
			}
			for _, k := range sortedKeys(s.Data) {
				name := from.Prefix + k
				if !validEnvName(name) {
					logf("envFrom secret %q: skipping invalid variable name %q", ref.Name, name)
					continue
				}
				out.set(name, string(s.Data[k]))
			}
		}
	}

	for _, e := range c.Env {
		if e.ValueFrom == nil {
			out.set(e.Name, expand(e.Value, mappingFor(out.values)))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.FieldRef != nil:
			v, err := fieldRefValue(pod, vf.FieldRef.FieldPath, ctx)
			if err != nil {
				logf("env %s: %v; using an empty value", e.Name, err)
			}
			out.set(e.Name, v)
		case vf.ResourceFieldRef != nil:
			logf("env %s: resourceFieldRef %q is not supported by the simulated kubelet; variable left unset", e.Name, vf.ResourceFieldRef.Resource)
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			optional := ref.Optional != nil && *ref.Optional
			s, err := getSecret(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, lookupError("secret", ref.Name, err)
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, &configError{fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)}
			}
			out.set(e.Name, string(v))
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			optional := ref.Optional != nil && *ref.Optional
			cm, err := getConfigMap(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, lookupError("configmap", ref.Name, err)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, &configError{fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)}
			}
			out.set(e.Name, v)
		default:
			logf("env %s: unsupported valueFrom; variable left unset", e.Name)
		}
	}
	return out, nil
}

// lookupError turns a failed read into the message a kubelet reports (`secret "x" not found`).
func lookupError(kind, name string, err error) error {
	if apierrors.IsNotFound(err) {
		return &configError{fmt.Sprintf("%s %q not found", kind, name)}
	}
	return &configError{fmt.Sprintf("failed to read %s %q: %v", kind, name, err)}
}

// validEnvName: since Kubernetes 1.34 any printable ASCII except '=' is accepted.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if r < 32 || r > 126 || r == '=' {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fieldRefValue resolves a downward-API fieldRef the way the kubelet does.
func fieldRefValue(pod *v1.Pod, path string, ctx podEnvContext) (string, error) {
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return ctx.podIP, nil
	case "status.podIPs":
		return strings.Join(ctx.podIPs, ","), nil
	case "status.hostIP":
		return ctx.hostIP, nil
	case "status.hostIPs":
		return strings.Join(ctx.hostIPs, ","), nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// subscript parses `prefix['key']` (the downward API syntax).
func subscript(path, prefix string) (string, bool) {
	if !strings.HasPrefix(path, prefix+"['") || !strings.HasSuffix(path, "']") {
		return "", false
	}
	return path[len(prefix)+2 : len(path)-2], true
}

// formatMap renders labels/annotations like the downward API: sorted key="value" lines.
func formatMap(m map[string]string) string {
	var lines []string
	for _, k := range sortedKeys(m) {
		lines = append(lines, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return strings.Join(lines, "\n")
}

// baseEnvNames are the variables of localkube's own environment a container inherits (standing in
// for the environment an image would define).
var baseEnvNames = []string{"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"}

// processEnv lays the kubelet-generated variables over the base environment and HOSTNAME.
func processEnv(base func(string) (string, bool), podName string, kubeletEnv *envList) *envList {
	out := newEnvList()
	for _, n := range baseEnvNames {
		if v, ok := base(n); ok {
			out.set(n, v)
		}
	}
	out.set("HOSTNAME", podName)
	for _, n := range kubeletEnv.names {
		out.set(n, kubeletEnv.values[n])
	}
	return out
}
