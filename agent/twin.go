package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/agent/hub"
)

// twinState remembers what was applied from the desired properties.
type twinState struct {
	desiredVersion int64
	reportedAt     time.Time
}

// maxTwinDoc bounds twin documents the agent parses (IoT Hub: 32 KB each
// for desired and reported).
const maxTwinDoc = 96 * 1024

// WritableAck is a Plug-and-Play style acknowledgement of a writable
// property.
type WritableAck struct {
	Value any    `json:"value"`
	AC    int    `json:"ac"`
	AV    int64  `json:"av"`
	AD    string `json:"ad,omitempty"`
}

// ApplyDesired applies a desired-properties document (a full "desired"
// section or a patch, both carrying "$version") and returns the reported
// patch acknowledging every writable property it contains. Unknown
// properties are acknowledged with 400 and an explanation; nothing in the
// document can crash the agent.
func (a *Agent) ApplyDesired(doc []byte) (map[string]any, error) {
	if len(doc) > maxTwinDoc {
		return nil, fmt.Errorf("agent: desired document of %d bytes exceeds %d", len(doc), maxTwinDoc)
	}
	var desired map[string]json.RawMessage
	if err := json.Unmarshal(doc, &desired); err != nil {
		return nil, fmt.Errorf("agent: desired properties are not a JSON object: %w", err)
	}
	var version int64
	if v, ok := desired["$version"]; ok {
		if err := json.Unmarshal(v, &version); err != nil {
			return nil, fmt.Errorf("agent: desired $version is not an integer: %w", err)
		}
	}
	reported := map[string]any{}
	keys := make([]string, 0, len(desired))
	for k := range desired {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "$") {
			continue
		}
		v := desired[k]
		switch k {
		case "telemetryInterval":
			reported[k] = a.applyTelemetryInterval(v, version)
		case "sensors":
			reported[k] = a.applySensors(v, version)
		case "outputs":
			reported[k] = a.applyOutputs(v, version)
		default:
			reported[k] = WritableAck{Value: rawValue(v), AC: 400, AV: version,
				AD: "unknown property; supported: telemetryInterval, sensors.{name}.interval, outputs.{name}"}
		}
	}
	a.mu.Lock()
	if version > a.twin.desiredVersion {
		a.twin.desiredVersion = version
	}
	a.mu.Unlock()
	return reported, nil
}

func rawValue(v json.RawMessage) any {
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return nil
	}
	return x
}

// parseInterval accepts "30s"-style strings or a number of seconds.
func parseInterval(v json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as \"30s\"", s)
		}
		return checkInterval(d)
	}
	var f float64
	if err := json.Unmarshal(v, &f); err == nil {
		return checkInterval(time.Duration(f * float64(time.Second)))
	}
	return 0, fmt.Errorf("must be a duration string such as \"30s\" or a number of seconds")
}

func checkInterval(d time.Duration) (time.Duration, error) {
	if d < 100*time.Millisecond || d > 24*time.Hour {
		return 0, fmt.Errorf("%s is outside 100ms..24h", d)
	}
	return d, nil
}

func (a *Agent) applyTelemetryInterval(v json.RawMessage, version int64) WritableAck {
	d, err := parseInterval(v)
	if err != nil {
		return WritableAck{Value: rawValue(v), AC: 400, AV: version, AD: "telemetryInterval " + err.Error()}
	}
	a.mu.Lock()
	a.cfg.SetTelemetryInterval(d)
	sensors := append(a.cfg.Sensors[:0:0], a.cfg.Sensors...)
	a.mu.Unlock()
	for _, s := range sensors {
		if s.InheritsInterval() {
			a.currentSampler().setInterval(s.Name, d)
		}
	}
	a.log.Info("desired telemetryInterval applied", "interval", d, "version", version)
	return WritableAck{Value: d.String(), AC: 200, AV: version}
}

func (a *Agent) applySensors(v json.RawMessage, version int64) map[string]any {
	var m map[string]map[string]json.RawMessage
	out := map[string]any{}
	if err := json.Unmarshal(v, &m); err != nil {
		out["$error"] = WritableAck{Value: rawValue(v), AC: 400, AV: version, AD: "sensors must be an object {name: {interval: \"30s\"}}"}
		return out
	}
	for name, props := range m {
		acks := map[string]any{}
		for pk, pv := range props {
			if pk != "interval" {
				acks[pk] = WritableAck{Value: rawValue(pv), AC: 400, AV: version, AD: "only interval is writable"}
				continue
			}
			d, err := parseInterval(pv)
			if err != nil {
				acks[pk] = WritableAck{Value: rawValue(pv), AC: 400, AV: version, AD: "interval " + err.Error()}
				continue
			}
			if !a.currentSampler().setInterval(name, d) {
				acks[pk] = WritableAck{Value: rawValue(pv), AC: 404, AV: version, AD: "no sensor named " + name}
				continue
			}
			a.log.Info("desired sensor interval applied", "sensor", name, "interval", d, "version", version)
			acks[pk] = WritableAck{Value: d.String(), AC: 200, AV: version}
		}
		out[name] = acks
	}
	return out
}

func (a *Agent) applyOutputs(v json.RawMessage, version int64) map[string]any {
	var m map[string]json.RawMessage
	out := map[string]any{}
	if err := json.Unmarshal(v, &m); err != nil {
		out["$error"] = WritableAck{Value: rawValue(v), AC: 400, AV: version, AD: "outputs must be an object {name: true|false}"}
		return out
	}
	for name, raw := range m {
		var on bool
		if err := json.Unmarshal(raw, &on); err != nil {
			out[name] = WritableAck{Value: rawValue(raw), AC: 400, AV: version, AD: "value must be true or false"}
			continue
		}
		if err := a.outputs.set(name, on); err != nil {
			out[name] = WritableAck{Value: on, AC: outputErrStatus(err), AV: version, AD: err.Error()}
			continue
		}
		out[name] = WritableAck{Value: on, AC: 200, AV: version}
	}
	return out
}

// reportedState is the "fieldgate" section of the reported properties.
func (a *Agent) reportedState() map[string]any {
	d := a.Diagnostics()
	return map[string]any{
		"version":      d.Version,
		"startTime":    d.StartTime,
		"clock":        d.Clock,
		"provisioning": d.Provisioning,
		"spool":        d.Spool,
		"sensors":      d.Sensors,
		"outputs":      d.Outputs,
	}
}

// handler adapts hub callbacks to the agent.
type handler struct{ a *Agent }

// Connected GETs the twin, applies desired properties and reports state.
func (h *handler) Connected(ctx context.Context, c *hub.Conn) {
	a := h.a
	doc, err := c.TwinGet(ctx)
	if err != nil {
		a.log.Warn("twin GET failed", "err", err)
		return
	}
	var twin struct {
		Desired    json.RawMessage `json:"desired"`
		Properties *struct {
			Desired json.RawMessage `json:"desired"`
		} `json:"properties"`
	}
	patch := map[string]any{}
	if err := json.Unmarshal(doc, &twin); err != nil {
		a.log.Warn("twin document is not JSON; ignoring desired properties", "err", err)
	} else {
		desired := twin.Desired
		if len(desired) == 0 && twin.Properties != nil {
			desired = twin.Properties.Desired
		}
		if len(desired) > 0 && string(desired) != "null" {
			acks, err := a.ApplyDesired(desired)
			if err != nil {
				a.log.Warn("desired properties not applied", "err", err)
			}
			for k, v := range acks {
				patch[k] = v
			}
		}
	}
	patch["fieldgate"] = a.reportedState()
	h.report(ctx, c, patch)
}

func (h *handler) report(ctx context.Context, c *hub.Conn, patch map[string]any) {
	body, err := json.Marshal(patch)
	if err != nil {
		h.a.log.Error("encoding reported properties", "err", err)
		return
	}
	v, err := c.ReportProperties(ctx, body)
	if err != nil {
		h.a.log.Warn("reported properties not sent", "err", err)
		return
	}
	h.a.log.Debug("reported properties sent", "version", v, "bytes", len(body))
	h.a.mu.Lock()
	h.a.twin.reportedAt = h.a.sync.Now()
	h.a.mu.Unlock()
}

// Desired applies a desired-properties patch and acknowledges it.
func (h *handler) Desired(ctx context.Context, patch []byte) {
	h.a.log.Debug("desired patch received", "bytes", len(patch))
	acks, err := h.a.ApplyDesired(patch)
	if err != nil {
		h.a.log.Warn("desired patch rejected", "err", err)
		return
	}
	c := h.a.currentConn()
	if c == nil || len(acks) == 0 {
		h.a.log.Debug("desired patch applied; nothing to report now", "connected", c != nil, "acks", len(acks))
		return
	}
	acks["fieldgate"] = h.a.reportedState()
	h.a.log.Debug("desired patch applied; reporting acknowledgements", "acks", len(acks))
	h.report(ctx, c, acks)
}

// reportNow sends the fieldgate section (e.g. after an output changed).
func (a *Agent) reportNow(ctx context.Context) {
	c := a.currentConn()
	if c == nil {
		return
	}
	(&handler{a: a}).report(ctx, c, map[string]any{"fieldgate": a.reportedState()})
}

func (a *Agent) currentConn() *hub.Conn {
	a.mu.Lock()
	hc := a.hubClient
	a.mu.Unlock()
	if hc == nil {
		return nil
	}
	return hc.Current()
}
