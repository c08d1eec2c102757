package hubtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/agent/hub/propbag"
	"github.com/fieldgate/fieldgate/sas"
)

// Subscription filters a device may hold (besides its devicebound filter).
const (
	filterTwinRes = "$iothub/twin/res/#"
	filterDesired = "$iothub/twin/PATCH/properties/desired/#"
	filterMethods = "$iothub/methods/POST/#"
	filterAnyC2D  = "devices/+/messages/devicebound/#" // used by the embedded C SDK

	prefixTwinGet     = "$iothub/twin/GET/"
	prefixTwinPatch   = "$iothub/twin/PATCH/properties/reported/"
	prefixMethodRes   = "$iothub/methods/res/"
	prefixMethodPost  = "$iothub/methods/POST/"
	prefixTwinRes     = "$iothub/twin/res/"
	maxReasonTopicLen = 200
)

var (
	errReplaced     = errors.New("hubtest: connection replaced by a new connection of the same device")
	errTokenExpired = errors.New("hubtest: token expired")
	errDropped      = errors.New("hubtest: connection dropped by fault injection")
	errDisabled     = errors.New("hubtest: device disabled")
	errDeleted      = errors.New("hubtest: device deleted")
	errHubClosed    = errors.New("hubtest: hub closed")
	errViolation    = errors.New("hubtest: protocol violation")
)

// conn is the hub's view of one device connection.
type conn struct {
	cl       *mqtt.Client
	deviceID string
	rec      *Connection

	// sendMu serializes C2D deliveries on this connection (taken before Hub.mu).
	sendMu sync.Mutex

	// Guarded by Hub.mu:
	established bool              // CONNACK sent
	reason      string            // why the hub closed it, set before cl.Stop
	timer       clockwork.Timer   // token expiry, or nil
	inflight    map[uint16]uint64 // C2D packet id → c2dEntry.Seq
	nextPID     uint16
}

// hook plugs the hub into mochi's event stream.
type hook struct {
	mqtt.HookBase
	h *Hub
}

func (k *hook) ID() string { return "fieldgate-iothub" }

func (k *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnSubscribed, mqtt.OnPacketProcessed, mqtt.OnWillSent,
	}, []byte{b})
}

// writePublish writes a PUBLISH straight to one client, bypassing the
// broker's routing, so a reply can only ever reach the connection it is for.
func writePublish(cl *mqtt.Client, topic string, payload []byte, qos byte, pid uint16, dup bool) error {
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: dup},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    pid,
	})
}

// subscribed reports whether the connection holds filter (or, for the
// devicebound filter, either accepted spelling).
func subscribed(c *conn, filter string) bool {
	if _, ok := c.cl.State.Subscriptions.Get(filter); ok {
		return true
	}
	if filter == c2dFilter(c.deviceID) {
		_, ok := c.cl.State.Subscriptions.Get(filterAnyC2D)
		return ok
	}
	return false
}

func c2dFilter(id string) string { return "devices/" + id + "/messages/devicebound/#" }

// kill closes a connection for a protocol violation, recording why.
func (h *Hub) kill(cl *mqtt.Client, reason string) {
	h.mu.Lock()
	if c := h.byClient[cl]; c != nil && c.reason == "" {
		c.reason = reason
	}
	h.mu.Unlock()
	h.log.Warn("closing device connection", "device", cl.ID, "reason", reason)
	cl.Stop(fmt.Errorf("%w: %s", errViolation, reason))
}

func clip(s string) string {
	if len(s) > maxReasonTopicLen {
		return s[:maxReasonTopicLen] + "…"
	}
	return s
}

// connectInfo is what the username carries.
type connectInfo struct {
	host       string // as written in the username
	apiVersion string
	modelID    string
}

// parseUsername checks {hub}/{deviceId}/?api-version=…[&model-id=…].
func (h *Hub) parseUsername(user, clientID string) (connectInfo, error) {
	host, rest, ok := strings.Cut(user, "/")
	if !ok {
		return connectInfo{}, errors.New("username is not {hub}/{deviceId}/?api-version=…")
	}
	if !h.hostMatches(host) {
		return connectInfo{}, fmt.Errorf("username host %q is not %q", host, h.hubHost)
	}
	if !strings.HasPrefix(rest, clientID+"/") {
		return connectInfo{}, fmt.Errorf("username device id does not match client id %q", clientID)
	}
	q := strings.TrimPrefix(rest[len(clientID)+1:], "?")
	pairs, err := propbag.Decode(q)
	if err != nil {
		return connectInfo{}, fmt.Errorf("username query: %w", err)
	}
	info := connectInfo{host: host}
	info.apiVersion, _ = propbag.Lookup(pairs, "api-version")
	info.modelID, _ = propbag.Lookup(pairs, "model-id")
	if info.apiVersion == "" {
		return connectInfo{}, errors.New("username has no api-version (want …/?api-version=2021-04-12)")
	}
	return info, nil
}

func (h *Hub) hostMatches(host string) bool {
	if strings.EqualFold(host, h.hubHost) {
		return true
	}
	name, port, ok := strings.Cut(host, ":")
	if !ok || !strings.EqualFold(name, h.hubHost) || port == "" {
		return false
	}
	_, err := strconv.ParseUint(port, 10, 16)
	return err == nil
}

// OnConnectAuthenticate verifies a CONNECT as IoT Hub does and registers the
// connection. Returning false sends CONNACK 5.
func (k *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h := k.h
	ok, why := h.authenticate(cl, pk)
	if !ok {
		h.mu.Lock()
		h.stats.ConnectRefused++
		h.mu.Unlock()
		h.log.Info("device connect refused", "device", cl.ID, "reason", why, "remote", cl.Net.Remote)
	}
	return ok
}

func (h *Hub) authenticate(cl *mqtt.Client, pk packets.Packet) (bool, string) {
	h.mu.Lock()
	h.stats.ConnectAttempts++
	if h.closed {
		h.mu.Unlock()
		return false, "hub closed"
	}
	if h.refuse > 0 {
		h.refuse--
		h.mu.Unlock()
		return false, "refused by fault injection"
	}
	h.mu.Unlock()

	if cl.Properties.ProtocolVersion != 4 {
		return false, fmt.Sprintf("MQTT protocol level %d; IoT Hub requires 3.1.1 (level 4)", cl.Properties.ProtocolVersion)
	}
	info, err := h.parseUsername(string(pk.Connect.Username), cl.ID)
	if err != nil {
		return false, err.Error()
	}
	tok, err := sas.Parse(string(pk.Connect.Password))
	if err != nil {
		return false, "password: " + err.Error()
	}
	now := h.now()
	target := info.host + "/devices/" + cl.ID

	h.mu.Lock()
	ds := h.devices[cl.ID]
	if ds == nil {
		h.mu.Unlock()
		return false, "device not registered"
	}
	if ds.dev.Status != StatusEnabled {
		h.mu.Unlock()
		return false, "device disabled"
	}
	primary, second := ds.primary, ds.second
	h.mu.Unlock()

	verify := func(target string) error {
		switch tok.KeyName {
		case "":
			err := sas.Verify(tok, primary, target, now, 0)
			if errors.Is(err, sas.ErrSignature) {
				err = sas.Verify(tok, second, target, now, 0)
			}
			return err
		case h.policy.Name:
			return sas.Verify(tok, h.policyKey, target, now, 0)
		default:
			return fmt.Errorf("token key name %q is neither the device key nor policy %q", tok.KeyName, h.policy.Name)
		}
	}
	// sr names the hub host; a client that kept the emulator's ":port" in
	// the username or in sr is accepted either way.
	err = verify(h.hubHost + "/devices/" + cl.ID)
	if errors.Is(err, sas.ErrAudience) && info.host != h.hubHost {
		err = verify(target)
	}
	if err != nil {
		return false, err.Error()
	}
	if pk.Connect.WillFlag {
		if pk.Connect.WillQos > 1 || !isTelemetryTopic(pk.Connect.WillTopic, cl.ID) {
			return false, "will message must use the device's telemetry topic with QoS 0 or 1"
		}
	}

	transport := "mqtt"
	if cl.Net.Listener == wsListenerID {
		transport = "mqtt-ws"
	}
	rec := &Connection{
		DeviceID: cl.ID, ConnectedAt: now, TokenExpiry: tok.ExpiresAt(), APIVersion: info.apiVersion,
		ModelID: info.modelID, Transport: transport, CleanSession: pk.Connect.Clean, KeyName: tok.KeyName,
	}
	c := &conn{cl: cl, deviceID: cl.ID, rec: rec, inflight: map[uint16]uint64{}}

	h.mu.Lock()
	if h.closed || h.devices[cl.ID] != ds {
		h.mu.Unlock()
		return false, "device changed during authentication"
	}
	old := h.current[cl.ID]
	if old != nil && old.reason == "" {
		old.reason = "replaced"
	}
	if pk.Connect.Clean && len(ds.c2d) > 0 {
		ds.c2d = nil
		if err := h.saveC2DLocked(); err != nil {
			h.log.Error("persist cloud-to-device queues", "error", err)
		}
	}
	h.current[cl.ID] = c
	h.byClient[cl] = c
	h.history = append(h.history, rec)
	if len(h.history) > maxConnHistory {
		h.history = append([]*Connection(nil), h.history[len(h.history)-maxConnHistory:]...)
	}
	wait := tok.ExpiresAt().Add(h.opts.TokenGrace).Sub(now)
	c.timer = h.clock.AfterFunc(wait, func() { h.expire(c) })
	h.broadcastLocked()
	h.mu.Unlock()

	if old != nil {
		// Close the old connection before mochi takes the session over, so
		// it never sends the old 3.1.1 client a DISCONNECT packet.
		old.cl.Stop(errReplaced)
	}
	h.log.Info("device connected", "device", cl.ID, "transport", transport, "api_version", info.apiVersion,
		"model_id", info.modelID, "clean_session", pk.Connect.Clean, "token_expiry", tok.ExpiresAt().UTC(),
		"key_name", tok.KeyName, "remote", cl.Net.Remote)
	return true, ""
}

func (h *Hub) expire(c *conn) {
	h.mu.Lock()
	if c.reason == "" {
		c.reason = "token expired"
	}
	h.mu.Unlock()
	c.cl.Stop(errTokenExpired)
}

// OnSessionEstablished marks the connection usable (CONNACK has been sent)
// and delivers queued C2D messages.
func (k *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h := k.h
	h.mu.Lock()
	c := h.byClient[cl]
	if c != nil {
		c.established = true
		h.broadcastLocked()
	}
	h.mu.Unlock()
	if c != nil {
		h.deliverC2D(c)
	}
}

// OnDisconnect records the end of a connection.
func (k *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	h := k.h
	h.mu.Lock()
	c := h.byClient[cl]
	if c == nil {
		h.mu.Unlock()
		return
	}
	delete(h.byClient, cl)
	if h.current[c.deviceID] == c {
		delete(h.current, c.deviceID)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	reason := c.reason
	switch {
	case reason != "":
	case err == nil:
		reason = "client disconnected"
	case errors.Is(err, io.EOF):
		reason = "connection closed by client"
	default:
		reason = "connection lost: " + err.Error()
	}
	c.rec.Reason = reason
	c.rec.DisconnectedAt = h.now()
	dur := c.rec.DisconnectedAt.Sub(c.rec.ConnectedAt)
	h.mu.Unlock()
	h.log.Info("device disconnected", "device", cl.ID, "reason", reason, "connected_for", dur.Round(time.Millisecond))
	// Wake waiters only after the log line, so WaitDisconnected implies it.
	h.mu.Lock()
	h.broadcastLocked()
	h.mu.Unlock()
}

// OnWillSent records a device's will message (fired when its connection
// ends without DISCONNECT) as telemetry tagged iothub-MessageType=Will, as
// IoT Hub does. CONNECT only accepts wills on the device's telemetry topic.
func (k *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	h := k.h
	if !isTelemetryTopic(pk.TopicName, cl.ID) {
		return
	}
	bag := strings.TrimPrefix(strings.TrimPrefix(pk.TopicName, "devices/"+cl.ID+"/messages/events"), "/")
	pairs, err := propbag.Decode(bag)
	if err != nil {
		h.log.Warn("will message with a malformed property bag dropped", "device", cl.ID, "error", err)
		return
	}
	app, sys := propbag.Split(pairs)
	app["iothub-MessageType"] = "Will"
	m := Message{DeviceID: cl.ID, EnqueuedTime: h.now().UTC(), Properties: app, SystemProperties: sys,
		Body: append([]byte(nil), pk.Payload...)}
	if _, err := h.record(m); err != nil {
		h.log.Error("will message not recorded", "device", cl.ID, "error", err)
	}
}

// OnPacketRead closes the connection on a QoS 2 PUBLISH, as IoT Hub does.
func (k *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 1 {
		k.h.kill(cl, "QoS 2 publish to "+clip(pk.TopicName))
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

func isTelemetryTopic(topic, id string) bool {
	p := "devices/" + id + "/messages/events"
	return topic == p || strings.HasPrefix(topic, p+"/")
}

// OnACLCheck enforces IoT Hub's per-device topics. Publishing anywhere else
// closes the connection. For reads it is called with filters at SUBSCRIBE
// (only IoT Hub's filters, at most MaxSubscriptions) and with topic names at
// delivery; the hub never routes deliveries through the broker (it writes
// replies straight into the addressed connection), so no topic name passes.
func (k *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	id := cl.ID
	if write {
		if isTelemetryTopic(topic, id) || strings.HasPrefix(topic, prefixTwinGet) ||
			strings.HasPrefix(topic, prefixTwinPatch) || strings.HasPrefix(topic, prefixMethodRes) {
			return true
		}
		k.h.kill(cl, "publish to forbidden topic "+clip(topic))
		return false
	}
	switch topic {
	case c2dFilter(id), filterAnyC2D, filterTwinRes, filterDesired, filterMethods:
	default:
		return false
	}
	if _, exists := cl.State.Subscriptions.Get(topic); !exists && cl.State.Subscriptions.Len() >= MaxSubscriptions {
		return false
	}
	return true
}

// OnSubscribed delivers queued C2D messages once the devicebound filter is in
// place and wakes WaitSubscribed callers.
func (k *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h := k.h
	h.mu.Lock()
	c := h.byClient[cl]
	h.broadcastLocked()
	h.mu.Unlock()
	if c == nil {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] <= 1 && (f.Filter == c2dFilter(cl.ID) || f.Filter == filterAnyC2D) {
			h.deliverC2D(c)
			return
		}
	}
}

// OnPacketProcessed completes C2D messages on PUBACK.
func (k *hook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type == packets.Puback {
		k.h.completeC2D(cl, pk.PacketID)
	}
}

// OnPublish handles every accepted device PUBLISH. It returns
// CodeSuccessIgnore (ack, no routing) or ErrRejectPacket (no ack).
func (k *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h := k.h
	topic := pk.TopicName
	switch {
	case isTelemetryTopic(topic, cl.ID):
		return pk, h.onTelemetry(cl, pk)
	case strings.HasPrefix(topic, prefixTwinGet):
		h.onTwinGet(cl, topic)
	case strings.HasPrefix(topic, prefixTwinPatch):
		h.onReportedPatch(cl, topic, pk.Payload)
	case strings.HasPrefix(topic, prefixMethodRes):
		h.onMethodResponse(cl, topic, pk.Payload)
	default:
		h.kill(cl, "publish to forbidden topic "+clip(topic))
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// requestID returns $rid from the query part of a $iothub topic.
func (h *Hub) requestID(cl *mqtt.Client, query string) (string, bool) {
	pairs, err := propbag.Decode(strings.TrimPrefix(query, "?"))
	if err != nil {
		h.kill(cl, "malformed topic query: "+err.Error())
		return "", false
	}
	rid, ok := propbag.Lookup(pairs, "$rid")
	if !ok || rid == "" {
		h.kill(cl, "$iothub request without $rid")
		return "", false
	}
	return rid, true
}

// reply writes a twin response to the requesting connection if it is
// subscribed to $iothub/twin/res/#.
func (h *Hub) reply(cl *mqtt.Client, status int, rid string, extra string, body []byte) {
	h.mu.Lock()
	c := h.byClient[cl]
	ok := c != nil && subscribed(c, filterTwinRes)
	h.mu.Unlock()
	if !ok {
		h.log.Debug("twin response dropped: not subscribed to "+filterTwinRes, "device", cl.ID)
		return
	}
	topic := prefixTwinRes + strconv.Itoa(status) + "/?$rid=" + propbag.Escape(rid) + extra
	if err := writePublish(cl, topic, body, 0, 0, false); err != nil {
		h.log.Debug("twin response failed", "device", cl.ID, "error", err)
	}
}

func (h *Hub) onTwinGet(cl *mqtt.Client, topic string) {
	rid, ok := h.requestID(cl, topic[len(prefixTwinGet):])
	if !ok {
		return
	}
	t, err := h.Twin(cl.ID)
	if err != nil {
		h.reply(cl, 404, rid, "", nil)
		return
	}
	h.reply(cl, 200, rid, "", t.DeviceDoc())
}

func (h *Hub) onReportedPatch(cl *mqtt.Client, topic string, body []byte) {
	rid, ok := h.requestID(cl, topic[len(prefixTwinPatch):])
	if !ok {
		return
	}
	v, status, err := h.patchReported(cl.ID, body)
	if err != nil {
		h.log.Debug("reported properties patch rejected", "device", cl.ID, "status", status, "error", err)
		h.reply(cl, status, rid, "", nil)
		return
	}
	h.reply(cl, 204, rid, "&$version="+strconv.FormatInt(v, 10), nil)
}

func (h *Hub) onMethodResponse(cl *mqtt.Client, topic string, body []byte) {
	rest := topic[len(prefixMethodRes):]
	code, query, ok := strings.Cut(rest, "/")
	status, err := strconv.Atoi(code)
	if !ok || err != nil {
		h.kill(cl, "malformed method response topic "+clip(topic))
		return
	}
	rid, ok := h.requestID(cl, query)
	if !ok {
		return
	}
	h.mu.Lock()
	ch, found := h.pending[pendingKey(cl.ID, rid)]
	if found {
		delete(h.pending, pendingKey(cl.ID, rid))
	}
	h.mu.Unlock()
	if !found {
		h.log.Debug("method response for no pending request", "device", cl.ID, "rid", rid)
		return
	}
	ch <- methodReply{status: status, payload: append([]byte(nil), body...)}
}

func pendingKey(deviceID, rid string) string { return deviceID + "\x00" + rid }
