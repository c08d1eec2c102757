package hub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/agent/hub/propbag"
	"github.com/fieldgate/fieldgate/sas"
)

var errNotAuthorized = errors.New("hub: not authorized (CONNACK 5)")

// MaxMessageBytes is IoT Hub's device-to-cloud message limit.
const MaxMessageBytes = 256 * 1024

// Conn is one live MQTT connection. It becomes useless once lost; the
// Client then makes a new one.
type Conn struct {
	c      *Client
	mc     mqtt.Client
	lost   chan struct{}
	closed atomic.Bool

	connectedAt    time.Time // corrected wall time
	tokenExpiry    time.Time
	sessionPresent bool

	// mu guards the fields below.
	mu      sync.Mutex
	lostWhy string
	nextRID uint64
	pending map[string]chan twinResponse
}

type twinResponse struct {
	status  int
	version int64
	body    []byte
}

// Message is a device-to-cloud message.
type Message struct {
	Body       []byte
	Properties []propbag.Pair // application and system properties ("$.mid", "$.ct", ...), encoded in order
}

// Lost is closed when the connection is gone.
func (cn *Conn) Lost() <-chan struct{} { return cn.lost }

// ConnectedAt is the corrected wall time of the connect.
func (cn *Conn) ConnectedAt() time.Time { return cn.connectedAt }

func (cn *Conn) isLost() bool {
	select {
	case <-cn.lost:
		return true
	default:
		return false
	}
}

func (cn *Conn) markLost(reason string) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	select {
	case <-cn.lost:
		return
	default:
	}
	cn.lostWhy = reason
	close(cn.lost)
}

func (cn *Conn) lostReasonLocked() string { return cn.lostWhy }

func (cn *Conn) lostReason() string {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.lostReasonLocked()
}

// close disconnects (politely, briefly) and marks the connection lost.
func (cn *Conn) close() {
	if cn.closed.Swap(true) {
		return
	}
	cn.markLost("closed by agent")
	cn.mc.Disconnect(250)
}

func (c *Client) brokerURL() (string, string) {
	host := c.o.Host
	if c.o.Transport == TransportMQTTWS {
		if c.o.WebSocketHost != "" {
			host = c.o.WebSocketHost
		}
		if _, _, err := net.SplitHostPort(host); err != nil {
			host = net.JoinHostPort(host, "443")
		}
		return "wss://" + host + "/$iothub/websocket", hostOnly(host)
	}
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "8883")
	}
	return "ssl://" + host, hostOnly(host)
}

// username is {hub}/{deviceId}/?api-version=…[&model-id=…].
func (c *Client) username() string {
	u := hostOnly(c.o.Host) + "/" + c.o.DeviceID + "/?api-version=" + APIVersion
	if c.o.ModelID != "" {
		u += "&model-id=" + sas.Encode(c.o.ModelID)
	}
	return u
}

func (c *Client) connect(ctx context.Context) (*Conn, error) {
	now := c.o.Now()
	expiry := now.Add(c.o.TokenTTL).Truncate(time.Second)
	tok, err := sas.NewDeviceToken(hostOnly(c.o.Host), c.o.DeviceID, "", expiry.Unix(), c.o.Signer)
	if err != nil {
		return nil, fmt.Errorf("hub: sign token: %w", err)
	}
	broker, serverName := c.brokerURL()
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.o.TLSConfig != nil {
		tlsCfg = c.o.TLSConfig.Clone()
		if tlsCfg.MinVersion < tls.VersionTLS12 {
			tlsCfg.MinVersion = tls.VersionTLS12
		}
	}
	tlsCfg.InsecureSkipVerify = false
	tlsCfg.ServerName = serverName
	tlsCfg.Time = c.o.Now

	cn := &Conn{c: c, lost: make(chan struct{}), pending: map[string]chan twinResponse{}, connectedAt: now, tokenExpiry: expiry}
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(c.o.DeviceID).
		SetUsername(c.username()).
		SetPassword(tok.String()).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(c.o.KeepAlive).
		SetPingTimeout(min(c.o.KeepAlive/2, 30*time.Second)).
		SetConnectTimeout(c.o.ConnectTimeout).
		SetWriteTimeout(c.o.ConnectTimeout).
		SetOrderMatters(false).
		SetTLSConfig(tlsCfg).
		SetStore(mqtt.NewMemoryStore()).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { cn.route(ctx, m) }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			reason := "connection lost"
			if err != nil {
				reason = "connection lost: " + err.Error()
			}
			cn.markLost(reason)
		})
	if c.o.Transport == TransportMQTTWS {
		opts.SetWebsocketOptions(&mqtt.WebsocketOptions{Proxy: http.ProxyFromEnvironment})
	}
	if c.o.Dial != nil {
		dial := c.o.Dial
		opts.SetCustomOpenConnectionFn(func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, c.o.ConnectTimeout)
			defer cancel()
			raw, err := dial(dctx, "tcp", uri.Host)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, o.TLSConfig)
			if err := tc.HandshakeContext(dctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		})
	}
	mc := mqtt.NewClient(opts)
	cn.mc = mc
	t := mc.Connect()
	if err := waitToken(ctx, t, c.o.ConnectTimeout+5*time.Second); err != nil {
		mc.Disconnect(0)
		select {
		case <-t.Done():
			if ct, ok := t.(*mqtt.ConnectToken); ok && ct.ReturnCode() == 5 {
				return nil, errNotAuthorized
			}
		default: // timed out or cancelled: the token is still being written
		}
		return nil, fmt.Errorf("hub: connect %s: %w", broker, err)
	}
	cn.sessionPresent = t.(*mqtt.ConnectToken).SessionPresent()

	filters := map[string]byte{
		"devices/" + c.o.DeviceID + "/messages/devicebound/#": 1,
		"$iothub/twin/res/#":                      0,
		"$iothub/twin/PATCH/properties/desired/#": 0,
		"$iothub/methods/POST/#":                  0,
	}
	st := mc.SubscribeMultiple(filters, nil)
	if err := waitToken(ctx, st, c.o.ConnectTimeout); err != nil {
		cn.close()
		return nil, fmt.Errorf("hub: subscribe: %w", err)
	}
	for f, code := range st.(*mqtt.SubscribeToken).Result() {
		if code == 0x80 {
			cn.close()
			return nil, fmt.Errorf("hub: subscribe %s refused by the hub", f)
		}
	}
	return cn, nil
}

// waitToken waits for a paho token, ctx or a deadline.
func waitToken(ctx context.Context, t mqtt.Token, max time.Duration) error {
	timer := time.NewTimer(max)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("no answer within %s", max)
	}
}

// Publish sends a telemetry message (QoS 1) and returns once the hub's
// PUBACK arrived on this connection; ErrConnectionLost if the connection went
// away first.
func (cn *Conn) Publish(ctx context.Context, m Message) error {
	if len(m.Body) > MaxMessageBytes {
		return fmt.Errorf("hub: message of %d bytes exceeds IoT Hub's %d byte limit", len(m.Body), MaxMessageBytes)
	}
	topic := "devices/" + cn.c.o.DeviceID + "/messages/events/" + propbag.Encode(m.Properties)
	return cn.publish(ctx, topic, 1, m.Body)
}

func (cn *Conn) publish(ctx context.Context, topic string, qos byte, body []byte) error {
	if cn.isLost() {
		return ErrConnectionLost
	}
	t := cn.mc.Publish(topic, qos, false, body)
	select {
	case <-t.Done():
		if cn.isLost() && qos > 0 {
			// paho may complete tokens when the connection closes; only a
			// PUBACK before the loss counts.
			if t.Error() != nil {
				return ErrConnectionLost
			}
		}
		if err := t.Error(); err != nil {
			if cn.isLost() {
				return ErrConnectionLost
			}
			return fmt.Errorf("hub: publish: %w", err)
		}
		return nil
	case <-cn.lost:
		return ErrConnectionLost
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TwinGet requests the full twin and returns its JSON document.
func (cn *Conn) TwinGet(ctx context.Context) ([]byte, error) {
	r, err := cn.twinRequest(ctx, "$iothub/twin/GET/?$rid=", nil)
	if err != nil {
		return nil, err
	}
	if r.status != 200 {
		return nil, fmt.Errorf("hub: twin GET answered status %d: %s", r.status, truncate(r.body, 200))
	}
	return r.body, nil
}

// ReportProperties sends a reported-properties patch and returns the new
// reported version.
func (cn *Conn) ReportProperties(ctx context.Context, patch []byte) (int64, error) {
	r, err := cn.twinRequest(ctx, "$iothub/twin/PATCH/properties/reported/?$rid=", patch)
	if err != nil {
		return 0, err
	}
	if r.status != 204 && r.status != 200 {
		return 0, fmt.Errorf("hub: reported patch answered status %d: %s", r.status, truncate(r.body, 200))
	}
	return r.version, nil
}

func (cn *Conn) twinRequest(ctx context.Context, prefix string, body []byte) (twinResponse, error) {
	ch := make(chan twinResponse, 1)
	cn.mu.Lock()
	cn.nextRID++
	rid := strconv.FormatUint(cn.nextRID, 10)
	cn.pending[rid] = ch
	cn.mu.Unlock()
	defer func() {
		cn.mu.Lock()
		delete(cn.pending, rid)
		cn.mu.Unlock()
	}()
	if body == nil {
		body = []byte{}
	}
	if err := cn.publish(ctx, prefix+rid, 0, body); err != nil {
		return twinResponse{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	select {
	case r := <-ch:
		return r, nil
	case <-cn.lost:
		return twinResponse{}, ErrConnectionLost
	case <-ctx.Done():
		return twinResponse{}, fmt.Errorf("hub: twin request: %w", ctx.Err())
	}
}

// route dispatches an incoming message; nothing here may panic on hostile
// topics or payloads.
func (cn *Conn) route(ctx context.Context, m mqtt.Message) {
	topic := m.Topic()
	log := cn.c.log
	switch {
	case strings.HasPrefix(topic, "$iothub/twin/res/"):
		status, params, err := parseResponseTopic(strings.TrimPrefix(topic, "$iothub/twin/res/"))
		if err != nil {
			log.Warn("ignoring malformed twin response topic", "topic", truncate([]byte(topic), 120), "err", err)
			return
		}
		v, _ := strconv.ParseInt(params["$version"], 10, 64)
		cn.mu.Lock()
		ch := cn.pending[params["$rid"]]
		cn.mu.Unlock()
		if ch != nil {
			select {
			case ch <- twinResponse{status: status, version: v, body: append([]byte(nil), m.Payload()...)}:
			default:
			}
		}
	case strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/desired/"):
		cn.c.o.Handler.Desired(ctx, append([]byte(nil), m.Payload()...))
	case strings.HasPrefix(topic, "$iothub/methods/POST/"):
		rest := strings.TrimPrefix(topic, "$iothub/methods/POST/")
		name, query, ok := strings.Cut(rest, "/")
		params, err := propbag.Decode(strings.TrimPrefix(query, "?"))
		rid := ""
		if err == nil {
			rid = lookup(params, "$rid")
		}
		if !ok || rid == "" || name == "" {
			log.Warn("ignoring malformed method request topic", "topic", truncate([]byte(topic), 120))
			return
		}
		if n, err := url.PathUnescape(name); err == nil {
			name = n
		}
		status, resp := cn.c.o.Handler.Method(ctx, name, append([]byte(nil), m.Payload()...))
		if len(resp) == 0 {
			resp = []byte("null")
		}
		rt := "$iothub/methods/res/" + strconv.Itoa(status) + "/?$rid=" + sas.Encode(rid)
		if err := cn.publish(ctx, rt, 0, resp); err != nil {
			log.Warn("method response not sent", "method", name, "err", err)
		}
	case strings.HasPrefix(topic, "devices/"+cn.c.o.DeviceID+"/messages/devicebound/"):
		bag := strings.TrimPrefix(topic, "devices/"+cn.c.o.DeviceID+"/messages/devicebound/")
		msg := C2DMessage{Body: append([]byte(nil), m.Payload()...), Properties: map[string]string{}, System: map[string]string{}}
		pairs, err := propbag.Decode(strings.TrimPrefix(bag, "?"))
		if err != nil {
			msg.BagError = err.Error()
		}
		for _, p := range pairs {
			if k, ok := strings.CutPrefix(p.Key, "$."); ok {
				msg.System[k] = p.Value
			} else {
				msg.Properties[p.Key] = p.Value
			}
		}
		cn.c.o.Handler.C2D(ctx, msg)
	default:
		log.Debug("ignoring message on unexpected topic", "topic", truncate([]byte(topic), 120))
	}
}

func lookup(pairs []propbag.Pair, key string) string {
	for _, p := range pairs {
		if p.Key == key {
			return p.Value
		}
	}
	return ""
}

// parseResponseTopic parses "{status}/?$rid=…&$version=…".
func parseResponseTopic(s string) (int, map[string]string, error) {
	code, query, ok := strings.Cut(s, "/")
	if !ok {
		return 0, nil, errors.New("no status segment")
	}
	status, err := strconv.Atoi(code)
	if err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("status %q is not a number", code)
	}
	pairs, err := propbag.Decode(strings.TrimPrefix(query, "?"))
	if err != nil {
		return 0, nil, err
	}
	params := map[string]string{}
	for _, p := range pairs {
		params[p.Key] = p.Value
	}
	return status, params, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// TwinDocument is the device view of a twin.
type TwinDocument struct {
	Desired  json.RawMessage `json:"desired"`
	Reported json.RawMessage `json:"reported"`
}
