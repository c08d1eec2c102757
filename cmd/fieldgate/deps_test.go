package main

import (
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// forbiddenDep reports why an import path must not be linked into the
// fieldgate binary, or "" when it may be: test-only code (emulators, fakes,
// httptest, the testing package) and the MQTT broker belong to tests and to
// fieldgate-emulator only. The suffix rule applies outside the standard
// library, whose internal/synctest (used by sync) is not test code.
func forbiddenDep(importPath string, standard bool) string {
	last := path.Base(importPath)
	switch {
	case strings.Contains(importPath, "mochi-mqtt"):
		return "the MQTT broker (mochi-mqtt) belongs to the emulator"
	case importPath == "net/http/httptest":
		return "net/http/httptest is test-only"
	case importPath == "testing" || strings.HasPrefix(importPath, "testing/"):
		return "the testing package is test-only"
	case !standard && strings.HasSuffix(last, "test"):
		return "a ...test package (fake or emulator) is test-only"
	}
	return ""
}

// importChain returns the shortest import chain from root to target in the
// graph (package → its imports), or nil.
func importChain(graph map[string][]string, root, target string) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == target {
			var chain []string
			for ; p != ""; p = prev[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		for _, q := range graph[p] {
			if _, seen := prev[q]; !seen {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	return nil
}

// badDeps lists every forbidden dependency of root with the chain that pulls
// it in; std holds the standard-library packages.
func badDeps(graph map[string][]string, std map[string]bool, root string) []string {
	var bad []string
	for p := range graph {
		if why := forbiddenDep(p, std[p]); why != "" {
			bad = append(bad, why+": "+strings.Join(importChain(graph, root, p), " → "))
		}
	}
	slices.Sort(bad)
	return bad
}

func TestForbiddenDepsRule(t *testing.T) {
	graph := map[string][]string{
		"m/cmd/fieldgate":                  {"m/agent", "fmt"},
		"m/agent":                          {"m/agent/hub", "m/hw"},
		"m/agent/hub":                      {"m/agent/hub/hubtest", "crypto/tls"},
		"m/agent/hub/hubtest":              {"github.com/mochi-mqtt/server/v2", "net/http/httptest", "testing"},
		"m/hw":                             {"periph.io/x/conn/v3/gpio"},
		"github.com/mochi-mqtt/server/v2":  nil,
		"net/http/httptest":                nil,
		"testing":                          {"testing/iotest"},
		"testing/iotest":                   nil,
		"fmt":                              nil,
		"crypto/tls":                       nil,
		"periph.io/x/conn/v3/gpio":         nil,
		"periph.io/x/conn/v3/gpio/gpiotes": nil,
	}
	std := map[string]bool{"net/http/httptest": true, "testing": true, "testing/iotest": true, "fmt": true, "crypto/tls": true}
	got := badDeps(graph, std, "m/cmd/fieldgate")
	want := []string{
		"a ...test package (fake or emulator) is test-only: m/cmd/fieldgate → m/agent → m/agent/hub → m/agent/hub/hubtest",
		"net/http/httptest is test-only: m/cmd/fieldgate → m/agent → m/agent/hub → m/agent/hub/hubtest → net/http/httptest",
		"the MQTT broker (mochi-mqtt) belongs to the emulator: m/cmd/fieldgate → m/agent → m/agent/hub → m/agent/hub/hubtest → github.com/mochi-mqtt/server/v2",
		"the testing package is test-only: m/cmd/fieldgate → m/agent → m/agent/hub → m/agent/hub/hubtest → testing",
		"the testing package is test-only: m/cmd/fieldgate → m/agent → m/agent/hub → m/agent/hub/hubtest → testing → testing/iotest",
	}
	if !slices.Equal(got, want) {
		t.Errorf("badDeps =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	allowed := []struct {
		path     string
		standard bool
	}{{"m/hw", false}, {"periph.io/x/conn/v3/gpio", false}, {"m/contest/x", false}, {"internal/synctest", true}, {"internal/testlog", true}, {"crypto/tls", true}}
	for _, a := range allowed {
		if why := forbiddenDep(a.path, a.standard); why != "" {
			t.Errorf("forbiddenDep(%q, %v) = %q; want allowed", a.path, a.standard, why)
		}
	}
	for _, bad := range []string{"m/provisioning/dpstest", "m/hw/hwtest", "periph.io/x/conn/v3/gpio/gpiotest", "periph.io/x/conn/v3/i2c/i2ctest", "github.com/mochi-mqtt/server/v2/hooks/auth"} {
		if forbiddenDep(bad, false) == "" {
			t.Errorf("forbiddenDep(%q) = allowed; want forbidden", bad)
		}
	}
	for _, bad := range []string{"net/http/httptest", "testing", "testing/synctest"} {
		if forbiddenDep(bad, true) == "" {
			t.Errorf("forbiddenDep(%q, standard) = allowed; want forbidden", bad)
		}
	}
}

// TestBinaryDependencies keeps test-only code and the MQTT broker out of the
// fieldgate binary (design.md "Layout").
func TestBinaryDependencies(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not in PATH")
	}
	out, err := exec.Command(gotool, "list", "-deps", "-f", `{{.ImportPath}} {{.Standard}} {{join .Imports " "}}`, ".").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps ./cmd/fieldgate: %v\n%s", err, stderr)
	}
	graph := map[string][]string{}
	std := map[string]bool{}
	root := ""
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("go list line %q has no Standard field", line)
		}
		graph[f[0]] = f[2:]
		std[f[0]] = f[1] == "true"
		root = f[0] // go list -deps prints the named package last
	}
	if root != "github.com/fieldgate/fieldgate/cmd/fieldgate" || len(graph) < 10 {
		t.Fatalf("go list -deps returned %d packages ending in %q; want the fieldgate command and its dependencies", len(graph), root)
	}
	for _, b := range badDeps(graph, std, root) {
		t.Errorf("forbidden dependency of the fieldgate binary: %s", b)
	}
}
