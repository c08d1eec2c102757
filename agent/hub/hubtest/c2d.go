package hubtest

import (
	"fmt"
	"sort"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/agent/hub/propbag"
)

// C2DMessage is a cloud-to-device message to enqueue. Properties whose keys
// start with "$." are system properties ("$.cid", "$.ct", "$.ce", ...); the
// hub sets "$.mid" (MessageID, generated when empty) and "$.to" itself.
type C2DMessage struct {
	Body       []byte
	Properties map[string]string
	MessageID  string
}

// c2dEntry is a queued C2D message. Guarded by Hub.mu.
type c2dEntry struct {
	Seq           uint64            `json:"seq"` // unique per hub, tracks deliveries
	ID            string            `json:"messageId"`
	Body          []byte            `json:"body"`
	Properties    map[string]string `json:"properties"`
	EnqueuedAt    time.Time         `json:"enqueuedTimeUtc"`
	ExpiresAt     time.Time         `json:"expiryTimeUtc"`
	DeliveryCount int               `json:"deliveryCount"`
}

// SendC2D enqueues m for deviceID (at most 50 queued, TTL 1 h on the
// emulator clock) and delivers it at once when the device is connected and
// subscribed to its devicebound filter. It stays queued until PUBACKed.
func (h *Hub) SendC2D(deviceID string, m C2DMessage) error {
	size := len(m.Body)
	for k, v := range m.Properties {
		size += len(k) + len(v)
		if k == "" {
			return fmt.Errorf("hubtest: C2D property with an empty name: %w", ErrInvalidArgument)
		}
		if k == "$.mid" || k == "$.to" {
			return fmt.Errorf("hubtest: C2D property %q is set by the hub; use MessageID: %w", k, ErrInvalidArgument)
		}
	}
	if size > MaxC2DSize {
		return fmt.Errorf("hubtest: C2D message of %d bytes exceeds %d: %w", size, MaxC2DSize, ErrTooLarge)
	}
	if m.MessageID == "" {
		m.MessageID = newID()
	}
	if len(m.MessageID) > 128 {
		return fmt.Errorf("hubtest: C2D message id longer than 128 bytes: %w", ErrInvalidArgument)
	}
	h.mu.Lock()
	ds := h.devices[deviceID]
	if ds == nil {
		h.mu.Unlock()
		return fmt.Errorf("hubtest: send C2D to %q: %w", deviceID, ErrDeviceNotFound)
	}
	now := h.now().UTC()
	h.purgeExpiredLocked(ds, now)
	if len(ds.c2d) >= MaxC2DQueue {
		h.mu.Unlock()
		return fmt.Errorf("hubtest: send C2D to %q: %d messages queued: %w", deviceID, MaxC2DQueue, ErrQueueFull)
	}
	h.c2dSeq++
	ds.c2d = append(ds.c2d, &c2dEntry{Seq: h.c2dSeq, ID: m.MessageID, Body: append([]byte(nil), m.Body...),
		Properties: cloneStrings(m.Properties), EnqueuedAt: now, ExpiresAt: now.Add(C2DTTL)})
	if err := h.saveC2DLocked(); err != nil {
		ds.c2d = ds.c2d[:len(ds.c2d)-1]
		h.mu.Unlock()
		return err
	}
	c := h.current[deviceID]
	h.mu.Unlock()
	if c != nil {
		h.deliverC2D(c)
	}
	return nil
}

// C2DQueue returns the message ids queued for deviceID (delivered or not,
// not yet acknowledged), oldest first.
func (h *Hub) C2DQueue(deviceID string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := h.devices[deviceID]
	if ds == nil {
		return nil
	}
	h.purgeExpiredLocked(ds, h.now())
	ids := make([]string, len(ds.c2d))
	for i, e := range ds.c2d {
		ids[i] = e.ID
	}
	return ids
}

// purgeExpiredLocked drops expired messages. Caller holds mu.
func (h *Hub) purgeExpiredLocked(ds *deviceState, now time.Time) {
	kept := ds.c2d[:0]
	for _, e := range ds.c2d {
		if now.Before(e.ExpiresAt) {
			kept = append(kept, e)
		}
	}
	if len(kept) != len(ds.c2d) {
		clear(ds.c2d[len(kept):])
		ds.c2d = kept
		if err := h.saveC2DLocked(); err != nil {
			h.log.Error("persist cloud-to-device queues", "error", err)
		}
	}
}

// c2dTopic builds devices/{id}/messages/devicebound/{bag}.
func c2dTopic(deviceID string, e *c2dEntry) string {
	pairs := []propbag.Pair{{Key: "$.mid", Value: e.ID}, {Key: "$.to", Value: "/devices/" + deviceID + "/messages/deviceBound"}}
	keys := make([]string, 0, len(e.Properties))
	for k := range e.Properties {
		keys = append(keys, k)
	}
	// System properties first, then application properties, each sorted.
	sort.Slice(keys, func(i, j int) bool {
		si, sj := propbag.IsSystem(keys[i]), propbag.IsSystem(keys[j])
		if si != sj {
			return si
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		pairs = append(pairs, propbag.Pair{Key: k, Value: e.Properties[k]})
	}
	return "devices/" + deviceID + "/messages/devicebound/" + propbag.Encode(pairs)
}

// deliverC2D sends every queued message not yet in flight on c, QoS 1.
func (h *Hub) deliverC2D(c *conn) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	h.mu.Lock()
	ds := h.devices[c.deviceID]
	if ds == nil || !c.established || h.current[c.deviceID] != c || !subscribed(c, c2dFilter(c.deviceID)) {
		h.mu.Unlock()
		return
	}
	h.purgeExpiredLocked(ds, h.now())
	onWire := make(map[uint64]bool, len(c.inflight))
	for _, seq := range c.inflight {
		onWire[seq] = true
	}
	var out []packets.Packet
	changed := false
	kept := ds.c2d[:0]
	for _, e := range ds.c2d {
		if onWire[e.Seq] {
			kept = append(kept, e)
			continue
		}
		if e.DeliveryCount >= MaxC2DDeliveries {
			h.log.Warn("cloud-to-device message dead-lettered after too many deliveries", "device", c.deviceID, "message_id", e.ID)
			changed = true
			continue
		}
		kept = append(kept, e)
		pid, ok := c.nextPacketID()
		if !ok {
			continue
		}
		e.DeliveryCount++
		changed = true
		c.inflight[pid] = e.Seq
		out = append(out, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: e.DeliveryCount > 1},
			TopicName:   c2dTopic(c.deviceID, e),
			Payload:     e.Body,
			PacketID:    pid,
		})
	}
	clear(ds.c2d[len(kept):])
	ds.c2d = kept
	if changed {
		if err := h.saveC2DLocked(); err != nil {
			h.log.Error("persist cloud-to-device queues", "error", err)
		}
	}
	h.mu.Unlock()
	for _, p := range out {
		if err := c.cl.WritePacket(p); err != nil {
			h.log.Debug("cloud-to-device delivery failed", "device", c.deviceID, "error", err)
			return
		}
	}
}

// nextPacketID returns a packet id not in flight on c. Caller holds Hub.mu.
func (c *conn) nextPacketID() (uint16, bool) {
	for range 65535 {
		c.nextPID++
		if c.nextPID == 0 {
			c.nextPID = 1
		}
		if _, used := c.inflight[c.nextPID]; !used {
			return c.nextPID, true
		}
	}
	return 0, false
}

// completeC2D removes the message acknowledged by a PUBACK on cl.
func (h *Hub) completeC2D(cl *mqtt.Client, pid uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.byClient[cl]
	if c == nil {
		return
	}
	seq, ok := c.inflight[pid]
	if !ok {
		return
	}
	delete(c.inflight, pid)
	ds := h.devices[c.deviceID]
	if ds == nil {
		return
	}
	for i, e := range ds.c2d {
		if e.Seq == seq {
			ds.c2d = append(ds.c2d[:i], ds.c2d[i+1:]...)
			if err := h.saveC2DLocked(); err != nil {
				h.log.Error("persist cloud-to-device queues", "error", err)
			}
			return
		}
	}
}
