package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/agent"
)

// TestHostilePayloads feeds oversized, deeply nested, non-UTF-8 and binary
// payloads to every handler of outside input: desired properties and every
// direct method (C2D messages with method=… use the same path). Each gets an
// error or an acknowledgement with a JSON body, never a panic or a hang.
func TestHostilePayloads(t *testing.T) {
	a := offlineAgent(t)
	payloads := map[string][]byte{
		"1 MiB string":         []byte(`{"telemetryInterval":"` + strings.Repeat("9", 1<<20) + `"}`),
		"200k nested arrays":   append(bytes.Repeat([]byte("["), 200000), bytes.Repeat([]byte("]"), 200000)...),
		"200k nested objects":  []byte(strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)),
		"non-UTF-8":            []byte("{\"sensor\":\"\xff\xfe\xfd\"}"),
		"NUL bytes":            []byte("{\"name\":\"relay\x00\",\"value\":true}"),
		"binary":               {0x00, 0x01, 0xff, 0x80, 0x7f},
		"huge number":          []byte(`{"telemetryInterval":1e999}`),
		"deep sensors":         []byte(`{"sensors":{"env":{"interval":{"interval":{"interval":"1s"}}}}}`),
		"unicode escape bombs": []byte(`{"outputs":{"` + strings.Repeat(`\u0000`, 10000) + `":true}}`),
	}
	methods := []string{agent.MethodGetDiagnostics, agent.MethodReadSensors, agent.MethodSetOutput, "unknown\xff"}
	for name, p := range payloads {
		t.Run("desired/"+name, func(t *testing.T) {
			acks, err := a.ApplyDesired(p)
			if err == nil {
				if _, err := json.Marshal(acks); err != nil {
					t.Fatalf("acks do not encode: %v", err)
				}
			}
		})
		for _, m := range methods {
			t.Run("method/"+m+"/"+name, func(t *testing.T) {
				status, body := a.CallMethod(context.Background(), m, p)
				if status < 200 || status > 599 || !json.Valid(body) {
					t.Fatalf("CallMethod = %d %q", status, body)
				}
				if m != agent.MethodGetDiagnostics && status == 200 {
					t.Fatalf("%s accepted a hostile payload: %s", m, body)
				}
			})
		}
	}
}
