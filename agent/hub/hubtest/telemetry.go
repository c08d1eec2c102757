package hubtest

import (
	"fmt"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/agent/hub/propbag"
)

// maxMessagesPage bounds one Messages call.
const maxMessagesPage = 1000

// Message is one recorded device-to-cloud message.
type Message struct {
	N                int               `json:"n"` // 1-based position in the hub's telemetry log
	DeviceID         string            `json:"deviceId"`
	EnqueuedTime     time.Time         `json:"enqueuedTimeUtc"`  // emulator clock
	Properties       map[string]string `json:"properties"`       // application properties
	SystemProperties map[string]string `json:"systemProperties"` // "$."-keys as sent, e.g. "$.mid", "$.ct"
	Body             []byte            `json:"body"`
}

// onTelemetry validates and durably records a telemetry PUBLISH before
// mochi acknowledges it.
func (h *Hub) onTelemetry(cl *mqtt.Client, pk packets.Packet) error {
	bag := strings.TrimPrefix(pk.TopicName, "devices/"+cl.ID+"/messages/events")
	bag = strings.TrimPrefix(bag, "/")
	pairs, err := propbag.Decode(bag)
	if err != nil {
		h.kill(cl, "malformed property bag: "+err.Error())
		return packets.ErrRejectPacket
	}
	app, sys := propbag.Split(pairs)
	if pk.FixedHeader.Retain {
		app["mqtt-retain"] = "true"
	}
	if size := messageSize(pk.Payload, app, sys); size > MaxTelemetrySize {
		h.kill(cl, fmt.Sprintf("message of %d bytes exceeds %d", size, MaxTelemetrySize))
		return packets.ErrRejectPacket
	}
	h.mu.Lock()
	now := h.now()
	withhold := pk.FixedHeader.Qos > 0 && now.Before(h.withholdUntil)
	if withhold {
		h.stats.TelemetryWithheld++
	}
	h.mu.Unlock()
	if withhold {
		return packets.ErrRejectPacket
	}
	m := Message{DeviceID: cl.ID, EnqueuedTime: now.UTC(), Properties: app, SystemProperties: sys,
		Body: append([]byte(nil), pk.Payload...)}
	if _, err := h.record(m); err != nil {
		h.log.Error("telemetry not recorded; closing the connection so the device resends", "device", cl.ID, "error", err)
		h.kill(cl, "internal error recording telemetry")
		return packets.ErrRejectPacket
	}
	return packets.CodeSuccessIgnore
}

// messageSize is IoT Hub's size of a message: body, system property values,
// application property names and values.
func messageSize(body []byte, app, sys map[string]string) int {
	n := len(body)
	for _, v := range sys {
		n += len(v)
	}
	for k, v := range app {
		n += len(k) + len(v)
	}
	return n
}

// record appends m to the telemetry log (fsynced when persistent) and
// returns its number.
func (h *Hub) record(m Message) (int, error) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	m.N = h.lastN + 1
	if h.store != nil {
		if err := h.store.appendMessage(m); err != nil {
			return 0, err
		}
	}
	h.lastN = m.N
	h.messages = append(h.messages, m)
	return m.N, nil
}

// Messages returns recorded telemetry with N > after, of deviceID ("" = every
// device), oldest first, at most 1000, and the cursor to pass as after next
// time.
func (h *Hub) Messages(deviceID string, after int) ([]Message, int) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	next := after
	// N is dense and starts at the first retained message's N.
	start := 0
	if len(h.messages) > 0 {
		start = max(after-h.messages[0].N+1, 0)
	}
	var out []Message
	for i := start; i < len(h.messages); i++ {
		m := h.messages[i]
		if m.N <= after {
			continue
		}
		next = m.N
		if deviceID != "" && m.DeviceID != deviceID {
			continue
		}
		out = append(out, cloneMessage(m))
		if len(out) == maxMessagesPage {
			break
		}
	}
	return out, next
}

func cloneMessage(m Message) Message {
	m.Properties = cloneStrings(m.Properties)
	m.SystemProperties = cloneStrings(m.SystemProperties)
	m.Body = append([]byte(nil), m.Body...)
	return m
}

func cloneStrings(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
