package hubtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// maxTwinDepth is the deepest nesting IoT Hub accepts in twin sections.
const maxTwinDepth = 10

// Twin is a device twin. Property values are JSON values as decoded with
// json.Decoder.UseNumber (numbers are json.Number).
type Twin struct {
	DeviceID        string         `json:"deviceId"`
	ETag            string         `json:"etag"`
	Version         int64          `json:"version"` // bumped by every change
	Tags            map[string]any `json:"tags"`
	Desired         map[string]any `json:"desired"`
	DesiredVersion  int64          `json:"desiredVersion"`
	Reported        map[string]any `json:"reported"`
	ReportedVersion int64          `json:"reportedVersion"`
}

func newTwin(id string) Twin {
	t := Twin{DeviceID: id, Version: 1, Tags: map[string]any{}, Desired: map[string]any{}, DesiredVersion: 1,
		Reported: map[string]any{}, ReportedVersion: 1}
	t.ETag = twinETag(t.Version)
	return t
}

func twinETag(v int64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(v, 10)))
}

// clone returns a deep copy.
func (t Twin) clone() Twin {
	t.Tags = cloneMap(t.Tags)
	t.Desired = cloneMap(t.Desired)
	t.Reported = cloneMap(t.Reported)
	return t
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	default:
		return v
	}
}

// DeviceDoc returns the twin document a device receives for a twin GET:
// {"desired":{…,"$version":n},"reported":{…,"$version":m}}.
func (t Twin) DeviceDoc() []byte {
	d := cloneMap(t.Desired)
	d["$version"] = t.DesiredVersion
	r := cloneMap(t.Reported)
	r["$version"] = t.ReportedVersion
	b, _ := json.Marshal(map[string]any{"desired": d, "reported": r})
	return b
}

// serviceDoc is the twin in the service API's shape.
func (t Twin) serviceDoc(status, connectionState string) map[string]any {
	d := cloneMap(t.Desired)
	d["$version"] = t.DesiredVersion
	r := cloneMap(t.Reported)
	r["$version"] = t.ReportedVersion
	return map[string]any{
		"deviceId":           t.DeviceID,
		"etag":               t.ETag,
		"version":            t.Version,
		"status":             status,
		"connectionState":    connectionState,
		"authenticationType": "sas",
		"tags":               cloneMap(t.Tags),
		"properties":         map[string]any{"desired": d, "reported": r},
	}
}

// decodePatch parses a JSON object patch with numbers kept as json.Number.
func decodePatch(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("hubtest: twin patch is not valid JSON: %w: %w", err, ErrInvalidArgument)
	}
	if dec.More() {
		return nil, fmt.Errorf("hubtest: twin patch has data after the JSON object: %w", ErrInvalidArgument)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("hubtest: twin patch must be a JSON object: %w", ErrInvalidArgument)
	}
	return m, nil
}

// normalize round-trips a Go map through JSON so it holds only JSON types.
func normalize(m map[string]any) (map[string]any, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("hubtest: twin patch cannot be encoded as JSON: %w: %w", err, ErrInvalidArgument)
	}
	return decodePatch(b)
}

// validatePatch checks property names and nesting depth as IoT Hub does.
// Keys starting with '$' are skipped at the top level ("$version" echoed by
// a client is ignored) but rejected deeper.
func validatePatch(m map[string]any, depth int) error {
	if depth > maxTwinDepth {
		return fmt.Errorf("hubtest: twin patch nests deeper than %d levels: %w", maxTwinDepth, ErrInvalidArgument)
	}
	for k, v := range m {
		if depth == 1 && strings.HasPrefix(k, "$") {
			continue
		}
		if err := validName(k); err != nil {
			return err
		}
		if sub, ok := v.(map[string]any); ok {
			if err := validatePatch(sub, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func validName(k string) error {
	if k == "" || len(k) > 1024 {
		return fmt.Errorf("hubtest: twin property name must be 1-1024 bytes: %w", ErrInvalidArgument)
	}
	for _, r := range k {
		if r == '.' || r == ' ' || r == '$' || unicode.IsControl(r) {
			return fmt.Errorf("hubtest: twin property name %q contains '.', ' ', '$' or a control character: %w", k, ErrInvalidArgument)
		}
	}
	return nil
}

// mergePatch applies patch to dst in place: null deletes, objects merge
// recursively, anything else replaces. Top-level '$' keys are ignored.
func mergePatch(dst, patch map[string]any, top bool) {
	for k, v := range patch {
		if top && strings.HasPrefix(k, "$") {
			continue
		}
		if v == nil {
			delete(dst, k)
			continue
		}
		if pv, ok := v.(map[string]any); ok {
			dv, ok := dst[k].(map[string]any)
			if !ok {
				dv = map[string]any{}
			}
			mergePatch(dv, pv, false)
			dst[k] = dv
			continue
		}
		dst[k] = cloneValue(v)
	}
}

// applyPatch merges patch into a copy of section and checks the size limit.
func applyPatch(section, patch map[string]any) (map[string]any, error) {
	if err := validatePatch(patch, 1); err != nil {
		return nil, err
	}
	out := cloneMap(section)
	mergePatch(out, patch, true)
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("hubtest: twin section cannot be encoded: %w: %w", err, ErrInvalidArgument)
	}
	if len(b) > MaxTwinSection {
		return nil, fmt.Errorf("hubtest: twin section would be %d bytes, limit %d: %w", len(b), MaxTwinSection, ErrTooLarge)
	}
	return out, nil
}

// Twin returns a copy of the twin of deviceID.
func (h *Hub) Twin(deviceID string) (Twin, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := h.devices[deviceID]
	if ds == nil {
		return Twin{}, fmt.Errorf("hubtest: twin %q: %w", deviceID, ErrDeviceNotFound)
	}
	return ds.twin.clone(), nil
}

// PatchDesired merges patch into the desired properties (null deletes),
// bumps the desired $version and pushes the patch with its "$version" on
// $iothub/twin/PATCH/properties/desired/?$version=n to the device when it is
// connected and subscribed.
func (h *Hub) PatchDesired(deviceID string, patch map[string]any) (Twin, error) {
	return h.patchTwin(deviceID, patch, nil, "")
}

// PatchTags merges patch into the twin's tags (service side only).
func (h *Hub) PatchTags(deviceID string, patch map[string]any) (Twin, error) {
	return h.patchTwin(deviceID, nil, patch, "")
}

func (h *Hub) patchTwin(deviceID string, desired, tags map[string]any, ifMatch string) (Twin, error) {
	var err error
	if desired != nil {
		if desired, err = normalize(desired); err != nil {
			return Twin{}, err
		}
	}
	if tags != nil {
		if tags, err = normalize(tags); err != nil {
			return Twin{}, err
		}
	}
	h.mu.Lock()
	ds := h.devices[deviceID]
	if ds == nil {
		h.mu.Unlock()
		return Twin{}, fmt.Errorf("hubtest: twin %q: %w", deviceID, ErrDeviceNotFound)
	}
	if ifMatch != "" && ifMatch != "*" && ifMatch != ds.twin.ETag {
		h.mu.Unlock()
		return Twin{}, fmt.Errorf("hubtest: twin %q: If-Match %q, current etag %q: %w", deviceID, ifMatch, ds.twin.ETag, ErrPreconditionFailed)
	}
	t := ds.twin.clone()
	if tags != nil {
		if t.Tags, err = applyPatch(t.Tags, tags); err != nil {
			h.mu.Unlock()
			return Twin{}, err
		}
	}
	if desired != nil {
		if t.Desired, err = applyPatch(t.Desired, desired); err != nil {
			h.mu.Unlock()
			return Twin{}, err
		}
		t.DesiredVersion++
	}
	t.Version++
	t.ETag = twinETag(t.Version)
	old := ds.twin
	ds.twin = t
	if err := h.saveTwinsLocked(); err != nil {
		ds.twin = old
		h.mu.Unlock()
		return Twin{}, err
	}
	var push *conn
	var body []byte
	if desired != nil {
		if c := h.current[deviceID]; c != nil && c.established && subscribed(c, filterDesired) {
			push = c
			p := cloneMap(desired)
			p["$version"] = t.DesiredVersion
			body, _ = json.Marshal(p)
		}
	}
	out := t.clone()
	h.mu.Unlock()
	if push != nil {
		topic := "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(out.DesiredVersion, 10)
		if err := writePublish(push.cl, topic, body, 0, 0, false); err != nil {
			h.log.Debug("desired properties push failed", "device", deviceID, "error", err)
		}
	}
	return out, nil
}

// patchReported applies a device's reported-properties PATCH and returns
// the new reported version, or an IoT Hub status code and error.
func (h *Hub) patchReported(deviceID string, body []byte) (int64, int, error) {
	patch, err := decodePatch(body)
	if err != nil {
		return 0, 400, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := h.devices[deviceID]
	if ds == nil {
		return 0, 404, fmt.Errorf("hubtest: twin %q: %w", deviceID, ErrDeviceNotFound)
	}
	rep, err := applyPatch(ds.twin.Reported, patch)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return 0, 413, err
		}
		return 0, 400, err
	}
	old := ds.twin
	t := ds.twin.clone()
	t.Reported = rep
	t.ReportedVersion++
	t.Version++
	t.ETag = twinETag(t.Version)
	ds.twin = t
	if err := h.saveTwinsLocked(); err != nil {
		ds.twin = old
		return 0, 500, err
	}
	return t.ReportedVersion, 204, nil
}
