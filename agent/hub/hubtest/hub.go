package hubtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/fieldgate/fieldgate/sas"
)

// Limits enforced as IoT Hub does.
const (
	MaxTelemetrySize   = 256 * 1024       // body + system property values + application property names and values
	MaxC2DSize         = 64 * 1024        // cloud-to-device message body + properties
	MaxC2DQueue        = 50               // messages queued per device
	C2DTTL             = time.Hour        // default cloud-to-device time to live
	MaxC2DDeliveries   = 10               // deliveries before a message is dead-lettered
	MaxSubscriptions   = 5                // MQTT subscriptions per device connection
	MaxMethodPayload   = 128 * 1024       // direct-method payload, each way
	MaxTwinSection     = 32 * 1024        // desired or reported section, serialized
	DefaultMethodWait  = 30 * time.Second // direct-method response timeout when none is given
	maxConnHistory     = 1000             // connection records kept for Connections
	maxServiceBody     = 256 * 1024       // service API request body limit
	wsListenerID       = "ws"             // mochi listener id of MQTT-over-WebSocket clients
	tcpListenerID      = "mqtt"           // mochi listener id of MQTT over TCP/TLS
	defaultHubHost     = "localhost"      // Options.HubHost when empty
	defaultPolicyName  = "iothubowner"    // Options.ServicePolicy.Name when empty
	defaultMQTTAddress = "127.0.0.1:0"    // Options.MQTTAddr when empty
)

// Sentinel errors of the Go API; the service API maps them to IoT Hub status
// and error codes.
var (
	ErrDeviceNotFound     = errors.New("hubtest: device not found (404001)")
	ErrDeviceOffline      = errors.New("hubtest: device not online (404103)")
	ErrTimeout            = errors.New("hubtest: timed out waiting for the device to respond (504101)")
	ErrQueueFull          = errors.New("hubtest: cloud-to-device queue is full (403004)")
	ErrInvalidArgument    = errors.New("hubtest: invalid argument (400004)")
	ErrPreconditionFailed = errors.New("hubtest: etag does not match (412002)")
	ErrTooLarge           = errors.New("hubtest: message too large (413002)")
	ErrClosed             = errors.New("hubtest: hub is closed")
)

// Policy is a shared access policy: its name (the skn of tokens signed with
// it) and its base64 key.
type Policy struct {
	Name string
	Key  string
}

// Options configures a Hub. The zero value works for in-memory tests.
type Options struct {
	// HubHost is the hub's host name, e.g. "localhost". CONNECT usernames must
	// start with it (case-insensitive; a ":port" suffix is tolerated) and
	// device tokens' sr must cover {HubHost}/devices/{id}. Empty → "localhost".
	HubHost string
	// MQTTAddr is where MQTT (over TLS when TLSConfig is set) listens.
	// Empty → "127.0.0.1:0".
	MQTTAddr string
	// TLSConfig is the server TLS configuration of the MQTT listener; nil
	// serves plain TCP (tests only).
	TLSConfig *tls.Config
	// ServicePolicy signs service API requests (sr = HubHost, skn = Name) and
	// may sign device tokens (skn = Name). Empty name → "iothubowner";
	// empty key → a random key (see ServiceToken).
	ServicePolicy Policy
	// Now is the emulator's wall clock (may be skewed); nil → Clock.Now.
	Now func() time.Time
	// Clock runs timers (token expiry, method timeouts); nil → real clock.
	Clock clockwork.Clock
	// TokenGrace keeps a connection open this long past its token's expiry.
	TokenGrace time.Duration
	// StateDir persists the registry, twins, C2D queues and the telemetry
	// log; "" keeps everything in memory.
	StateDir string
	// Logger receives one line per connection, disconnection and method
	// call (never keys or tokens); nil discards.
	Logger *slog.Logger
	// ExtraFaults receives the keys of a POST /emulator/faults body that the
	// hub does not handle itself (e.g. the binary's DPS faults). When nil,
	// unknown keys are a 400 error.
	ExtraFaults func(map[string]any) error
}

// Hub is a running IoT Hub emulator.
type Hub struct {
	opts      Options
	hubHost   string
	policy    Policy
	policyKey *sas.Key
	now       func() time.Time
	clock     clockwork.Clock
	log       *slog.Logger
	srv       *mqtt.Server
	store     *store // nil in memory mode
	ws        *wsListener
	tracked   tracker      // raw MQTT connections (TCP and WebSocket)
	tcpLn     net.Listener // set by Start

	// mu guards the fields below. Lock order: conn.sendMu, then mu, then logMu.
	mu            sync.Mutex
	devices       map[string]*deviceState // by device id
	current       map[string]*conn        // live connection by device id
	byClient      map[*mqtt.Client]*conn  // every connection not yet disconnected
	history       []*Connection           // newest last, at most maxConnHistory
	pending       map[string]chan methodReply
	ridSeq        uint64
	c2dSeq        uint64
	refuse        int       // CONNECTs still to refuse
	withholdUntil time.Time // telemetry PUBACKs withheld before this (emulator clock)
	stats         Stats
	changed       chan struct{} // closed and replaced on every connection state change
	started       bool
	closed        bool
	tcpAddr       string

	// logMu guards the telemetry log.
	logMu    sync.Mutex
	messages []Message
	lastN    int
}

// Stats counts connection attempts and dropped telemetry since start.
type Stats struct {
	ConnectAttempts   int // CONNECT packets that reached authentication
	ConnectRefused    int // of which refused with CONNACK 5
	TelemetryWithheld int // telemetry PUBLISHes dropped without PUBACK by WithholdPubacks
}

// Connection records one device connection.
type Connection struct {
	DeviceID       string
	ConnectedAt    time.Time // emulator clock
	DisconnectedAt time.Time // zero while connected
	Reason         string    // why it ended: "replaced", "token expired", "client disconnected", ...
	TokenExpiry    time.Time
	APIVersion     string
	ModelID        string
	Transport      string // "mqtt" or "mqtt-ws"
	CleanSession   bool
	KeyName        string // skn of the token; "" for the device's own key
}

// New validates o, loads the state directory (when set) and prepares the
// broker. Nothing listens until Start.
func New(o Options) (*Hub, error) {
	h := &Hub{
		opts:     o,
		hubHost:  o.HubHost,
		policy:   o.ServicePolicy,
		clock:    o.Clock,
		now:      o.Now,
		log:      o.Logger,
		devices:  map[string]*deviceState{},
		current:  map[string]*conn{},
		byClient: map[*mqtt.Client]*conn{},
		pending:  map[string]chan methodReply{},
		changed:  make(chan struct{}),
	}
	if h.hubHost == "" {
		h.hubHost = defaultHubHost
	}
	if strings.ContainsAny(h.hubHost, "/ ") {
		return nil, fmt.Errorf("hubtest: HubHost %q must be a bare host name", h.hubHost)
	}
	if h.opts.MQTTAddr == "" {
		h.opts.MQTTAddr = defaultMQTTAddress
	}
	if h.policy.Name == "" {
		h.policy.Name = defaultPolicyName
	}
	if h.policy.Key == "" {
		h.policy.Key = newKey()
	}
	k, err := sas.ParseKey(h.policy.Key)
	if err != nil {
		return nil, fmt.Errorf("hubtest: service policy %q key: %w", h.policy.Name, err)
	}
	h.policyKey = k
	if h.clock == nil {
		h.clock = clockwork.NewRealClock()
	}
	if h.now == nil {
		h.now = h.clock.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if o.TokenGrace < 0 {
		return nil, fmt.Errorf("hubtest: TokenGrace %v must not be negative", o.TokenGrace)
	}
	if o.StateDir != "" {
		st, snap, err := openStore(o.StateDir)
		if err != nil {
			return nil, err
		}
		h.store = st
		for _, d := range snap.devices {
			h.devices[d.dev.ID] = d
			for _, e := range d.c2d {
				h.c2dSeq = max(h.c2dSeq, e.Seq)
			}
		}
		h.messages = snap.messages
		if n := len(snap.messages); n > 0 {
			h.lastN = snap.messages[n-1].N
		}
	}
	h.srv = mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Logger:                 slog.New(levelHandler{min: slog.LevelError, h: h.log.Handler()}),
		SysTopicResendInterval: 24 * 3600,
		Capabilities:           capabilities(),
	})
	if err := h.srv.AddHook(&hook{h: h}, nil); err != nil {
		h.closeStore()
		return nil, fmt.Errorf("hubtest: add broker hook: %w", err)
	}
	return h, nil
}

func capabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	c.MaximumQos = 1                                      // SUBSCRIBE QoS 2 is granted as 1, like IoT Hub
	c.RetainAvailable = 0                                 // IoT Hub never stores retained messages
	c.MaximumPacketSize = MaxTelemetrySize + 64*1024 + 16 // bound memory; the precise limit is checked per message
	c.MinimumProtocolVersion = 3                          // so level 3 reaches the auth hook and gets CONNACK 5
	return c
}

// Start binds the MQTT listener and starts serving.
func (h *Hub) Start() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	if h.started {
		h.mu.Unlock()
		return errors.New("hubtest: Start called twice")
	}
	h.started = true
	h.mu.Unlock()

	ln, err := net.Listen("tcp", h.opts.MQTTAddr)
	if err != nil {
		return fmt.Errorf("hubtest: listen for MQTT on %s: %w", h.opts.MQTTAddr, err)
	}
	addr := ln.Addr().String()
	h.tcpLn = ln
	ln = trackedListener{Listener: ln, t: &h.tracked}
	if h.opts.TLSConfig != nil {
		ln = tls.NewListener(ln, h.opts.TLSConfig)
	}
	if err := h.srv.AddListener(trackedNet{Net: listeners.NewNet(tcpListenerID, ln), t: &h.tracked}); err != nil {
		_ = ln.Close()
		return fmt.Errorf("hubtest: add MQTT listener: %w", err)
	}
	h.ws = &wsListener{id: wsListenerID}
	if err := h.srv.AddListener(h.ws); err != nil {
		_ = ln.Close()
		return fmt.Errorf("hubtest: add websocket listener: %w", err)
	}
	if err := h.srv.Serve(); err != nil {
		_ = ln.Close()
		return fmt.Errorf("hubtest: start broker: %w", err)
	}
	h.mu.Lock()
	h.tcpAddr = addr
	h.mu.Unlock()
	h.log.Info("iot hub emulator listening", "mqtt", addr, "tls", h.opts.TLSConfig != nil, "hub", h.hubHost)
	return nil
}

// Close disconnects every device, stops the broker and closes the state
// files. It is safe to call more than once.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	started := h.started
	var conns []*conn
	for _, c := range h.byClient {
		if c.reason == "" {
			c.reason = "hub closed"
		}
		conns = append(conns, c)
	}
	for k, ch := range h.pending {
		delete(h.pending, k)
		close(ch)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.cl.Stop(errHubClosed)
	}
	var err error
	if started {
		// Stop accepting, end every connection and wait for mochi to finish
		// with them before closing it (see tracker).
		if h.ws != nil {
			h.ws.markClosed()
		}
		if h.tcpLn != nil {
			_ = h.tcpLn.Close()
		}
		h.tracked.closeAll()
		done := make(chan struct{})
		go func() {
			h.tracked.wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			h.log.Warn("broker clients did not finish within 10s; closing anyway")
		}
		err = h.srv.Close()
	}
	h.mu.Lock()
	for _, c := range h.byClient {
		if c.timer != nil {
			c.timer.Stop()
		}
	}
	h.mu.Unlock()
	if cerr := h.closeStore(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (h *Hub) closeStore() error {
	if h.store == nil {
		return nil
	}
	h.logMu.Lock()
	defer h.logMu.Unlock()
	return h.store.close()
}

// MQTTAddr returns the bound MQTT address ("" before Start).
func (h *Hub) MQTTAddr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tcpAddr
}

// HubHost returns the hub host name devices must use.
func (h *Hub) HubHost() string { return h.hubHost }

// ServicePolicy returns the service policy (name and key) in use.
func (h *Hub) ServicePolicy() Policy { return h.policy }

// ServiceToken returns a service API token (sr = hub host, skn = policy name)
// expiring at expiry. The result is a credential.
func (h *Hub) ServiceToken(expiry time.Time) (string, error) {
	t, err := sas.New(h.hubHost, h.policy.Name, expiry.Unix(), h.policyKey)
	if err != nil {
		return "", fmt.Errorf("hubtest: sign service token: %w", err)
	}
	return t.String(), nil
}

// RefuseConnects makes the next n CONNECTs fail with CONNACK 5.
func (h *Hub) RefuseConnects(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refuse = max(n, 0)
}

// WithholdPubacks drops QoS 1 telemetry PUBLISHes without recording or
// acknowledging them for d on the emulator clock (d <= 0 ends it). The
// devices see PUBACKs go missing, as when the hub stalls.
func (h *Hub) WithholdPubacks(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d <= 0 {
		h.withholdUntil = time.Time{}
		return
	}
	h.withholdUntil = h.now().Add(d)
}

// ClearFaults ends every injected fault.
func (h *Hub) ClearFaults() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refuse = 0
	h.withholdUntil = time.Time{}
}

// DropConnections closes the connection of deviceID ("" = every device)
// without a DISCONNECT packet, as IoT Hub does.
func (h *Hub) DropConnections(deviceID string) {
	h.mu.Lock()
	var conns []*conn
	for id, c := range h.current {
		if deviceID == "" || id == deviceID {
			if c.reason == "" {
				c.reason = "dropped by fault injection"
			}
			conns = append(conns, c)
		}
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.cl.Stop(errDropped)
	}
}

// Stats returns connection and telemetry counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// Connections returns every recorded connection, oldest first (at most the
// last 1000). Live connections have a zero DisconnectedAt.
func (h *Hub) Connections() []Connection {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Connection, len(h.history))
	for i, r := range h.history {
		out[i] = *r
	}
	return out
}

// Connected reports whether deviceID has an established connection.
func (h *Hub) Connected(deviceID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.current[deviceID]
	return c != nil && c.established && !c.cl.Closed()
}

// WaitConnected blocks until deviceID has an established connection (CONNACK
// sent) or ctx ends.
func (h *Hub) WaitConnected(ctx context.Context, deviceID string) error {
	return h.waitFor(ctx, func() bool {
		c := h.current[deviceID]
		return c != nil && c.established && !c.cl.Closed()
	})
}

// WaitDisconnected blocks until deviceID has no connection or ctx ends.
func (h *Hub) WaitDisconnected(ctx context.Context, deviceID string) error {
	return h.waitFor(ctx, func() bool { return h.current[deviceID] == nil })
}

// WaitSubscribed blocks until the live connection of deviceID holds the
// subscription filter (e.g. "$iothub/methods/POST/#") or ctx ends.
func (h *Hub) WaitSubscribed(ctx context.Context, deviceID, filter string) error {
	return h.waitFor(ctx, func() bool {
		c := h.current[deviceID]
		if c == nil || !c.established {
			return false
		}
		_, ok := c.cl.State.Subscriptions.Get(filter)
		return ok
	})
}

// waitFor waits until cond (called with mu held) is true.
func (h *Hub) waitFor(ctx context.Context, cond func() bool) error {
	for {
		h.mu.Lock()
		if cond() {
			h.mu.Unlock()
			return nil
		}
		if h.closed {
			h.mu.Unlock()
			return ErrClosed
		}
		ch := h.changed
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("hubtest: wait: %w", ctx.Err())
		case <-ch:
		}
	}
}

// broadcastLocked wakes every waiter. Caller holds mu.
func (h *Hub) broadcastLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func newKey() string {
	b := make([]byte, 32)
	_, _ = io.ReadFull(rand.Reader, b)
	return base64.StdEncoding.EncodeToString(b)
}

func newID() string {
	b := make([]byte, 16)
	_, _ = io.ReadFull(rand.Reader, b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	var s strings.Builder
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s.WriteByte('-')
		}
		s.WriteByte(hexd[c>>4])
		s.WriteByte(hexd[c&15])
	}
	return s.String()
}

// levelHandler forwards records at or above min to h; it keeps the broker's
// chatter out of the emulator's log.
type levelHandler struct {
	min slog.Level
	h   slog.Handler
}

func (l levelHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.h.Enabled(ctx, lv)
}
func (l levelHandler) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }
func (l levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return levelHandler{min: l.min, h: l.h.WithAttrs(a)}
}
func (l levelHandler) WithGroup(n string) slog.Handler {
	return levelHandler{min: l.min, h: l.h.WithGroup(n)}
}

var (
	_ listeners.Listener = (*wsListener)(nil)
	_ mqtt.Hook          = (*hook)(nil)
)
