package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestDecodeManifests(t *testing.T) {
	data := `# leading comment, then an empty document
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: a
---
# only a comment
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {name: s1}
- apiVersion: v1
  kind: Secret
  metadata: {name: s2}
---
apiVersion: v1
metadata:
  name: no-kind
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: dup
  name: dup2
---
- just
- a list
---
apiVersion: v1
kind: Pod
metadata:
  generateName: gen-
`
	docs, err := decodeManifests([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range docs {
		if d.err != nil {
			got = append(got, "error "+strconv.Itoa(d.index)+": "+d.err.Error())
		} else {
			got = append(got, "object "+strconv.Itoa(d.index)+": "+objectID(d.obj))
		}
	}
	want := []string{
		"object 2: ServiceAccount/a",
		"object 4: Secret/s1",
		"object 4: Secret/s2",
		"error 5: kind is not set",
		"error 6: ",
		"error 7: not a YAML mapping",
		"object 8: Pod/gen-*",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d docs:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("doc %d: got %q, want prefix %q", i, got[i], want[i])
		}
	}
	if !strings.Contains(got[4], `"name" already set`) && !strings.Contains(got[4], "duplicate") {
		t.Errorf("duplicate key error should name the key: %q", got[4])
	}
}

func TestIntoNamespace(t *testing.T) {
	binding := func(metaNS string, subjects ...map[string]any) *unstructured.Unstructured {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1",
			"kind":       "RoleBinding",
			"metadata":   map[string]any{"name": "b"},
		}}
		if metaNS != "" {
			obj.SetNamespace(metaNS)
		}
		var list []any
		for _, s := range subjects {
			list = append(list, s)
		}
		obj.Object["subjects"] = list
		return obj
	}
	sa := func(ns string) map[string]any {
		return map[string]any{"kind": "ServiceAccount", "name": "x", "namespace": ns}
	}
	subjectNamespaces := func(obj *unstructured.Unstructured) []string {
		subjects, _, _ := unstructured.NestedSlice(obj.Object, "subjects")
		var out []string
		for _, s := range subjects {
			ns, _ := s.(map[string]any)["namespace"].(string)
			out = append(out, ns)
		}
		return out
	}

	// No metadata.namespace means "default": a subject in "default" moves, others stay.
	b := binding("", sa("default"), sa("kube-system"), map[string]any{"kind": "User", "name": "u", "namespace": "default"})
	intoNamespace(b, "t-1", true)
	if b.GetNamespace() != "t-1" {
		t.Errorf("namespace %q", b.GetNamespace())
	}
	if got := strings.Join(subjectNamespaces(b), ","); got != "t-1,kube-system,default" {
		t.Errorf("subjects: %s", got)
	}

	// An explicit namespace: subjects naming it move.
	b = binding("prod", sa("prod"), sa("default"))
	intoNamespace(b, "t-2", true)
	if got := strings.Join(subjectNamespaces(b), ","); got != "t-2,default" {
		t.Errorf("subjects: %s", got)
	}

	// Cluster-scoped objects lose any namespace.
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "n", "namespace": "x"}}}
	intoNamespace(ns, "t-3", false)
	if ns.GetNamespace() != "" {
		t.Errorf("cluster-scoped object kept namespace %q", ns.GetNamespace())
	}
}

func TestManifestsFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := runManifests("dry-run", nil, &bytes.Buffer{}, &stderr); code != 2 {
		t.Errorf("no files: exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "no manifest files given") {
		t.Errorf("stderr: %s", stderr.String())
	}
	stderr.Reset()
	if code := runManifests("dry-run", []string{"--bogus"}, &bytes.Buffer{}, &stderr); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
	if code := runManifests("dry-run", []string{"-h"}, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
		t.Errorf("-h: exit %d, want 0", code)
	}
}
