package agent_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/config"
)

// offlineAgent is an agent with one simulated sensor that never touches
// the network: enough for the handlers of outside input.
func offlineAgent(f testing.TB) *agent.Agent {
	f.Helper()
	dir := f.TempDir()
	cfg, err := config.Parse([]byte(`[state]
dir = "`+filepath.Join(dir, "state")+`"
[provisioning]
source = "manual"
hub_host = "h.example"
device_id = "d"
[provisioning.attestation]
key_file = "k"
[[sensor]]
name = "env"
kind = "simulated"
values = ["temperature_c"]
`), "fuzz.toml")
	if err != nil {
		f.Fatal(err)
	}
	a, err := agent.New(agent.Options{Config: cfg})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Spool().Close() })
	return a
}

// FuzzApplyDesired: any desired document gets acknowledgements or an error,
// never a panic, and the acknowledgements always encode.
func FuzzApplyDesired(f *testing.F) {
	for _, s := range []string{`{"telemetryInterval":"10s","$version":3}`, `{"sensors":{"env":{"interval":5}}}`,
		`{"outputs":{"relay":true}}`, `{"$version":"x"}`, `[]`, `{"sensors":[1]}`, `{"telemetryInterval":1e308}`, `{"a":{"b":{"c":{}}}}`} {
		f.Add([]byte(s))
	}
	a := offlineAgent(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		acks, err := a.ApplyDesired(doc)
		if err != nil {
			return
		}
		if _, err := json.Marshal(acks); err != nil {
			t.Fatalf("acks do not encode: %v", err)
		}
	})
}

// FuzzCallMethod: any method name and payload yields a status and a JSON
// body.
func FuzzCallMethod(f *testing.F) {
	for _, s := range [][2]string{{"readSensors", `{"sensor":"env"}`}, {"setOutput", `{"name":"x","value":true}`},
		{"getDiagnostics", ``}, {"readSensors", `{"sensor":`}, {"nope", `null`}, {"setOutput", `{"name":1}`}} {
		f.Add(s[0], []byte(s[1]))
	}
	a := offlineAgent(f)
	f.Fuzz(func(t *testing.T, name string, payload []byte) {
		if name == agent.MethodRestart {
			return
		}
		status, body := a.CallMethod(context.Background(), name, payload)
		if status < 200 || status > 599 || !json.Valid(body) {
			t.Fatalf("CallMethod(%q) = %d %q", name, status, body)
		}
	})
}
