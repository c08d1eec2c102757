package emuconfig

import (
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// locate maps every key path of a TOML document to the line it is written on:
// "hub_host", "service_policy", "service_policy.key", "enrollment[1]",
// "enrollment[1].registration_id". It is only called on documents that
// already decoded, and stops quietly at the first parse error.
func locate(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	arrayCount := map[string]int{}
	prefix := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			key, line := keyOf(&p, e)
			prefix = key
			lines[prefix] = line
		case unstable.ArrayTable:
			key, line := keyOf(&p, e)
			prefix = fmt.Sprintf("%s[%d]", key, arrayCount[key])
			arrayCount[key]++
			lines[prefix] = line
		case unstable.KeyValue:
			key, line := keyOf(&p, e)
			if prefix != "" {
				key = prefix + "." + key
			}
			lines[key] = line
		}
	}
	return lines
}

func keyOf(p *unstable.Parser, n *unstable.Node) (string, int) {
	var parts []string
	line := 0
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = p.Shape(k.Raw).Start.Line
		}
		parts = append(parts, string(k.Data))
	}
	return strings.Join(parts, "."), line
}
