package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/hub"
	"github.com/fieldgate/fieldgate/hw"
)

// maxMethodPayload is IoT Hub's direct-method payload limit.
const maxMethodPayload = 128 * 1024

// Method names.
const (
	MethodGetDiagnostics = "getDiagnostics"
	MethodReadSensors    = "readSensors"
	MethodSetOutput      = "setOutput"
	MethodRestart        = "restart"
)

// errorBody is the JSON body of a failed method.
type errorBody struct {
	Error   string   `json:"error"`
	Methods []string `json:"methods,omitempty"`
}

func methodError(status int, format string, args ...any) (int, []byte) {
	b, _ := json.Marshal(errorBody{Error: fmt.Sprintf(format, args...)})
	return status, b
}

// CallMethod runs a direct method and returns the status and JSON body. It
// never panics, whatever the payload.
func (a *Agent) CallMethod(ctx context.Context, name string, payload []byte) (status int, body []byte) {
	defer func() {
		if r := recover(); r != nil {
			a.log.Error("method handler panicked", "method", name, "panic", fmt.Sprint(r))
			status, body = methodError(500, "internal error in %s", name)
		}
	}()
	if len(payload) > maxMethodPayload {
		return methodError(413, "payload of %d bytes exceeds %d", len(payload), maxMethodPayload)
	}
	trimmed := strings.TrimSpace(string(payload))
	if trimmed != "" && !json.Valid([]byte(trimmed)) {
		return methodError(400, "payload is not valid JSON")
	}
	switch name {
	case MethodGetDiagnostics:
		b, err := json.Marshal(a.Diagnostics())
		if err != nil {
			return methodError(500, "encoding diagnostics: %v", err)
		}
		return 200, b
	case MethodReadSensors:
		var req struct {
			Sensor string `json:"sensor"`
		}
		if trimmed != "" && trimmed != "null" && trimmed != "{}" {
			if err := strictJSON([]byte(trimmed), &req); err != nil {
				return methodError(400, "readSensors takes {\"sensor\": \"name\"} (optional): %v", err)
			}
		}
		out, err := a.currentSampler().readNow(ctx, req.Sensor)
		if errors.Is(err, errUnknownSensor) {
			return methodError(404, "no sensor named %q; configured: %s", req.Sensor, strings.Join(a.currentSampler().names(), ", "))
		}
		if err != nil {
			return methodError(500, "%v", err)
		}
		b, _ := json.Marshal(out)
		return 200, b
	case MethodSetOutput:
		var req struct {
			Name  string `json:"name"`
			Value *bool  `json:"value"`
		}
		if err := strictJSON([]byte(trimmed), &req); err != nil || req.Name == "" || req.Value == nil {
			return methodError(400, "setOutput takes {\"name\": \"relay\", \"value\": true|false}")
		}
		if err := a.outputs.set(req.Name, *req.Value); err != nil {
			return methodError(outputErrStatus(err), "%v", err)
		}
		a.log.Info("output set by direct method", "output", req.Name, "value", *req.Value)
		go a.reportNow(context.WithoutCancel(ctx))
		b, _ := json.Marshal(map[string]any{"name": req.Name, "value": *req.Value})
		return 200, b
	case MethodRestart:
		a.log.Warn("restart requested by direct method: exiting cleanly so systemd starts the agent again")
		go a.requestRestart()
		return 200, []byte(`{"restarting":true}`)
	default:
		b, _ := json.Marshal(errorBody{Error: fmt.Sprintf("unknown method %q", name),
			Methods: []string{MethodGetDiagnostics, MethodReadSensors, MethodSetOutput, MethodRestart}})
		return 404, b
	}
}

func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// Method implements hub.Handler.
func (h *handler) Method(ctx context.Context, name string, payload []byte) (int, []byte) {
	status, body := h.a.CallMethod(ctx, name, payload)
	h.a.log.Info("direct method", "method", name, "status", status)
	return status, body
}

// C2D implements hub.Handler: a message with property method=<name> runs that
// method with the body as payload; others are logged.
func (h *handler) C2D(ctx context.Context, m hub.C2DMessage) {
	a := h.a
	if m.BagError != "" {
		a.log.Warn("cloud-to-device message with a malformed property bag", "err", m.BagError, "bytes", len(m.Body))
	}
	if method := m.Properties["method"]; method != "" {
		status, body := a.CallMethod(ctx, method, m.Body)
		a.log.Info("cloud-to-device method", "method", method, "status", status, "result", string(truncateBytes(body, 200)),
			"message_id", m.System["mid"])
		return
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	a.log.Info("cloud-to-device message", "bytes", len(m.Body), "properties", strings.Join(keys, ","), "message_id", m.System["mid"])
}

func truncateBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// outputSet holds the configured outputs.
type outputSet struct {
	// mu guards outs.
	mu   sync.Mutex
	outs map[string]hw.Output
	cfgs []config.Output
}

var (
	errNoOutput = errors.New("no such output")
)

func openOutputs(cfgs []config.Output, env hw.Env) (*outputSet, error) {
	s := &outputSet{outs: map[string]hw.Output{}, cfgs: cfgs}
	for _, c := range cfgs {
		o, err := hw.OpenOutput(c, env)
		if err != nil {
			s.closeAll(env.Logger)
			return nil, fmt.Errorf("agent: output %q: %w", c.Name, err)
		}
		s.outs[c.Name] = o
	}
	return s, nil
}

func (s *outputSet) set(name string, on bool) error {
	s.mu.Lock()
	o := s.outs[name]
	s.mu.Unlock()
	if o == nil {
		return fmt.Errorf("%w %q; configured outputs: %s", errNoOutput, name, strings.Join(s.names(), ", "))
	}
	return o.Set(on)
}

func (s *outputSet) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := make([]string, 0, len(s.outs))
	for k := range s.outs {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func (s *outputSet) states() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]bool, len(s.outs))
	for k, o := range s.outs {
		m[k] = o.State()
	}
	return m
}

// closeAll restores every output's safe state.
func (s *outputSet) closeAll(log *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, o := range s.outs {
		if err := o.Close(); err != nil && log != nil {
			log.Warn("restoring output safe state", "output", name, "err", err)
		}
	}
	s.outs = map[string]hw.Output{}
}

func outputErrStatus(err error) int {
	if errors.Is(err, errNoOutput) {
		return 404
	}
	return 500
}
