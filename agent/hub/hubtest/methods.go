package hubtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MethodResult is a device's answer to a direct method.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

type methodReply struct {
	status  int
	payload []byte
}

func validMethodName(name string) error {
	if name == "" || len(name) > 128 {
		return fmt.Errorf("hubtest: method name must be 1-128 bytes: %w", ErrInvalidArgument)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("/#+?&", c) >= 0 {
			return fmt.Errorf("hubtest: method name %q: printable ASCII without space / # + ? &: %w", name, ErrInvalidArgument)
		}
	}
	return nil
}

// InvokeMethod calls a direct method: it publishes
// $iothub/methods/POST/{name}/?$rid={rid} (QoS 0) to the device and waits for
// $iothub/methods/res/{status}/?$rid={rid}. payload must be JSON (empty means
// null); timeout <= 0 means 30 s. A device that is not connected or not
// subscribed to $iothub/methods/POST/# gives an error wrapping
// ErrDeviceOffline; no answer in time gives ErrTimeout. A non-JSON answer is
// returned as a JSON string.
func (h *Hub) InvokeMethod(ctx context.Context, deviceID, name string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	start := h.clock.Now()
	res, err := h.invokeMethod(ctx, deviceID, name, payload, timeout)
	took := h.clock.Since(start).Round(time.Millisecond)
	if err != nil {
		h.log.Info("direct method failed", "device", deviceID, "method", name, "took", took, "error", err)
	} else {
		h.log.Info("direct method", "device", deviceID, "method", name, "status", res.Status, "took", took)
	}
	return res, err
}

func (h *Hub) invokeMethod(ctx context.Context, deviceID, name string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	if err := validMethodName(name); err != nil {
		return MethodResult{}, err
	}
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	if !json.Valid(payload) {
		return MethodResult{}, fmt.Errorf("hubtest: method %q payload is not valid JSON: %w", name, ErrInvalidArgument)
	}
	if len(payload) > MaxMethodPayload {
		return MethodResult{}, fmt.Errorf("hubtest: method %q payload of %d bytes exceeds %d: %w", name, len(payload), MaxMethodPayload, ErrTooLarge)
	}
	if timeout <= 0 {
		timeout = DefaultMethodWait
	}
	h.mu.Lock()
	if h.devices[deviceID] == nil {
		h.mu.Unlock()
		return MethodResult{}, fmt.Errorf("hubtest: invoke %q on %q: %w", name, deviceID, ErrDeviceNotFound)
	}
	c := h.current[deviceID]
	if c == nil || !c.established || !subscribed(c, filterMethods) {
		h.mu.Unlock()
		return MethodResult{}, fmt.Errorf("hubtest: invoke %q on %q: %w", name, deviceID, ErrDeviceOffline)
	}
	h.ridSeq++
	rid := strconv.FormatUint(h.ridSeq, 10)
	key := pendingKey(deviceID, rid)
	ch := make(chan methodReply, 1)
	h.pending[key] = ch
	h.mu.Unlock()
	cancel := func() {
		h.mu.Lock()
		delete(h.pending, key)
		h.mu.Unlock()
	}

	topic := prefixMethodPost + name + "/?$rid=" + rid
	if err := writePublish(c.cl, topic, payload, 0, 0, false); err != nil {
		cancel()
		return MethodResult{}, fmt.Errorf("hubtest: invoke %q on %q: %w", name, deviceID, ErrDeviceOffline)
	}
	timer := h.clock.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r, ok := <-ch:
		if !ok {
			return MethodResult{}, ErrClosed
		}
		out := MethodResult{Status: r.status, Payload: json.RawMessage("null")}
		switch {
		case len(r.payload) == 0:
		case json.Valid(r.payload):
			out.Payload = r.payload
		default:
			b, _ := json.Marshal(string(r.payload))
			out.Payload = b
		}
		return out, nil
	case <-timer.Chan():
		cancel()
		return MethodResult{}, fmt.Errorf("hubtest: invoke %q on %q: no response within %v: %w", name, deviceID, timeout, ErrTimeout)
	case <-ctx.Done():
		cancel()
		return MethodResult{}, fmt.Errorf("hubtest: invoke %q on %q: %w", name, deviceID, ctx.Err())
	}
}
