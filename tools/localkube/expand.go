package main

import "strings"

// expand implements Kubernetes' $(VAR) expansion for command, args and env values
// (k8s.io/kubernetes/third_party/forked/golang/expansion):
//   - $(NAME) is replaced by mapping(NAME);
//   - $$ is an escape for a literal $ (so $$(NAME) yields the text $(NAME));
//   - an unterminated $( and any other $x are kept verbatim.
func expand(input string, mapping func(string) string) string {
	var buf strings.Builder
	checkpoint := 0
	for cursor := 0; cursor < len(input); cursor++ {
		if input[cursor] == '$' && cursor+1 < len(input) {
			buf.WriteString(input[checkpoint:cursor])
			read, isVar, advance := tryReadVariableName(input[cursor+1:])
			if isVar {
				buf.WriteString(mapping(read))
			} else {
				buf.WriteString(read)
			}
			cursor += advance
			checkpoint = cursor + 1
		}
	}
	buf.WriteString(input[checkpoint:])
	return buf.String()
}

// tryReadVariableName reads what follows a '$': the text to emit, whether it is a variable name,
// and how many bytes of input were consumed.
func tryReadVariableName(input string) (string, bool, int) {
	switch input[0] {
	case '$':
		return "$", false, 1
	case '(':
		for i := 1; i < len(input); i++ {
			if input[i] == ')' {
				return input[1:i], true, i + 1
			}
		}
		return "$(", false, 1
	default:
		return "$" + input[0:1], false, 1
	}
}

// mappingFor returns a mapping that looks names up in the given maps (first hit wins) and leaves
// unknown references verbatim, as the kubelet does.
func mappingFor(maps ...map[string]string) func(string) string {
	return func(name string) string {
		for _, m := range maps {
			if v, ok := m[name]; ok {
				return v
			}
		}
		return "$(" + name + ")"
	}
}
