// Package hub is the agent's IoT Hub session: one MQTT 3.1.1 connection
// (eclipse/paho.mqtt.golang) at a time to the assigned hub, authenticated
// with a device SAS token that is renewed by reconnecting at 80 % of its
// lifetime, reconnecting with exponential backoff and full jitter, and
// carrying telemetry, twin requests, desired-property patches, direct methods
// and cloud-to-device messages.
//
// A new paho client is built for every connection (auto-reconnect off), so a
// publish is acknowledged only by a PUBACK received on the connection it was
// sent on; everything in flight when a connection is lost is reported as
// ErrConnectionLost and the caller (the agent's publisher, backed by the
// durable spool) sends it again on the next connection.
package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/sas"
)

// APIVersion is sent in the MQTT username.
const APIVersion = "2021-04-12"

// Transports.
const (
	TransportMQTT   = "mqtt"
	TransportMQTTWS = "mqtt-ws"
)

// Errors reported by the session.
var (
	// ErrNotConnected: there is no live connection right now.
	ErrNotConnected = errors.New("hub: not connected")
	// ErrConnectionLost: the connection a request was sent on is gone; the
	// request may or may not have reached the hub and must be sent again.
	ErrConnectionLost = errors.New("hub: connection lost before the hub acknowledged")
	// ErrAuthRejected: the hub refused CONNECT (CONNACK 5) repeatedly while
	// the clock was verified; the caller should re-provision.
	ErrAuthRejected = errors.New("hub: authentication refused repeatedly (CONNACK 5)")
)

// Handler receives what the hub sends. Methods are called on their own
// goroutines and must be safe for concurrent use.
type Handler interface {
	// Connected runs after every successful connect, once subscriptions are
	// in place: the agent GETs the twin and reports state here.
	Connected(ctx context.Context, c *Conn)
	// Desired receives a desired-properties patch (JSON object including
	// "$version").
	Desired(ctx context.Context, patch []byte)
	// Method handles a direct method and returns the status and JSON body.
	Method(ctx context.Context, name string, payload []byte) (status int, response []byte)
	// C2D handles a cloud-to-device message; it is acknowledged (PUBACK)
	// when C2D returns.
	C2D(ctx context.Context, m C2DMessage)
}

// C2DMessage is a cloud-to-device message with its decoded property bag.
type C2DMessage struct {
	Body       []byte
	Properties map[string]string // application properties
	System     map[string]string // $.mid, $.to, $.cid, ... (keys without "$.")
	BagError   string            // set when the property bag could not be decoded
}

// Options configure a Client.
type Options struct {
	Host      string // assigned hub host name; ":port" is dialled instead of 8883 (443 for mqtt-ws)
	DeviceID  string
	Signer    sas.Signer
	Transport string // TransportMQTT (default) or TransportMQTTWS
	// WebSocketHost overrides host[:port] for mqtt-ws (the emulator serves
	// WebSocket on its HTTPS port); empty → Host's name on port 443.
	WebSocketHost string
	TLSConfig     *tls.Config      // roots etc.; MinVersion, ServerName and Time are set here
	Now           func() time.Time // corrected wall clock: SAS expiry and TLS validity
	Clock         clockwork.Clock  // timers and backoff; nil → real clock
	TokenTTL      time.Duration    // default 1h
	KeepAlive     time.Duration    // default 4m
	ModelID       string           // IoT Plug and Play model id, optional
	Handler       Handler          // required
	Logger        *slog.Logger
	// MaxAuthFailures > 0: Run returns ErrAuthRejected after this many
	// consecutive CONNACK 5 refusals while ClockVerified reports true.
	MaxAuthFailures int
	ClockVerified   func() bool
	ConnectTimeout  time.Duration  // default 30s
	BackoffMin      time.Duration  // default 1s
	BackoffMax      time.Duration  // default 60s
	Rand            func() float64 // jitter source in [0,1); nil → math/rand/v2
	// Dial, when set, replaces the network dial (tests: proxies, black holes).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// State is the session state reported in Status.
type State string

// States.
const (
	StateIdle       State = "idle"
	StateConnecting State = "connecting"
	StateConnected  State = "connected"
	StateBackoff    State = "backoff"
	StateStopped    State = "stopped"
)

// Status is a snapshot of the session for diagnostics (never secrets).
type Status struct {
	State            State
	Host             string
	DeviceID         string
	Transport        string
	ConnectedAt      time.Time // corrected wall time of the last successful connect
	TokenExpiry      time.Time
	Connects         int // successful connects since start
	Attempts         int // connect attempts since start
	AuthFailures     int // consecutive CONNACK 5 refusals
	LastError        string
	LastDisconnect   string
	NextAttemptAfter time.Duration
}

// Client keeps one connection to the hub alive; see the package doc.
type Client struct {
	o   Options
	log *slog.Logger
	clk clockwork.Clock

	// mu guards the fields below.
	mu      sync.Mutex
	conn    *Conn         // live connection or nil
	changed chan struct{} // closed and replaced whenever conn changes
	status  Status
}

// New checks o and returns a Client; call Run to connect.
func New(o Options) (*Client, error) {
	var problems []string
	if o.Host == "" {
		problems = append(problems, "Host is empty")
	}
	if o.DeviceID == "" {
		problems = append(problems, "DeviceID is empty")
	}
	if o.Signer == nil {
		problems = append(problems, "Signer is nil")
	}
	if o.Handler == nil {
		problems = append(problems, "Handler is nil")
	}
	switch o.Transport {
	case "":
		o.Transport = TransportMQTT
	case TransportMQTT, TransportMQTTWS:
	default:
		problems = append(problems, fmt.Sprintf("transport %q is not mqtt or mqtt-ws", o.Transport))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("hub: invalid options: %s", strings.Join(problems, "; "))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = time.Hour
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 4 * time.Minute
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 60 * time.Second
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.ClockVerified == nil {
		o.ClockVerified = func() bool { return true }
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{o: o, log: log.With("hub", hostOnly(o.Host), "device", o.DeviceID), clk: o.Clock, changed: make(chan struct{})}
	c.status = Status{State: StateIdle, Host: o.Host, DeviceID: o.DeviceID, Transport: o.Transport}
	return c, nil
}

// Status returns a snapshot of the session.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Current returns the live connection, or nil.
func (c *Client) Current() *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// WaitConn blocks until a connection is live (returning it) or ctx is done.
func (c *Client) WaitConn(ctx context.Context) (*Conn, error) {
	for {
		c.mu.Lock()
		conn, ch := c.conn, c.changed
		c.mu.Unlock()
		if conn != nil && !conn.isLost() {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		case <-lostOrNil(conn):
		}
	}
}

func lostOrNil(c *Conn) <-chan struct{} {
	if c == nil {
		return nil
	}
	return c.lost
}

func (c *Client) setConn(conn *Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) update(f func(s *Status)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.status)
}

// Run connects and keeps a connection until ctx is done (returning
// ctx.Err()), or until the hub refuses authentication MaxAuthFailures times
// in a row with a verified clock (returning an error wrapping
// ErrAuthRejected).
func (c *Client) Run(ctx context.Context) error {
	defer c.update(func(s *Status) { s.State = StateStopped })
	attempt := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.update(func(s *Status) { s.State = StateConnecting; s.Attempts++ })
		conn, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			auth := errors.Is(err, errNotAuthorized)
			var fails int
			c.update(func(s *Status) {
				s.LastError = err.Error()
				if auth {
					s.AuthFailures++
				} else {
					s.AuthFailures = 0
				}
				fails = s.AuthFailures
			})
			if auth {
				c.log.Warn("hub refused the connection (CONNACK 5): token rejected, device unknown or disabled — checking clock and retrying with a new token",
					"consecutive", fails, "clock_verified", c.o.ClockVerified())
				if c.o.MaxAuthFailures > 0 && fails >= c.o.MaxAuthFailures && c.o.ClockVerified() {
					return fmt.Errorf("%w: %d refusals in a row with a verified clock", ErrAuthRejected, fails)
				}
			} else {
				c.log.Warn("hub connect failed", "err", err, "attempt", attempt+1)
			}
			if err := c.backoff(ctx, attempt, auth); err != nil {
				return err
			}
			attempt++
			continue
		}
		attempt = 0
		c.update(func(s *Status) {
			s.State = StateConnected
			s.Connects++
			s.AuthFailures = 0
			s.LastError = ""
			s.ConnectedAt = conn.connectedAt
			s.TokenExpiry = conn.tokenExpiry
		})
		c.setConn(conn)
		c.log.Info("connected to IoT Hub", "transport", c.o.Transport, "token_expires", conn.tokenExpiry.UTC().Format(time.RFC3339),
			"session_present", conn.sessionPresent)
		hctx, cancel := context.WithCancel(ctx)
		go c.o.Handler.Connected(hctx, conn)
		reason := c.hold(ctx, conn)
		cancel()
		c.setConn(nil)
		conn.close()
		c.update(func(s *Status) { s.LastDisconnect = reason })
		switch reason {
		case reasonStopped:
			return ctx.Err()
		case reasonRefresh:
			c.log.Info("token refresh: reconnecting with a fresh token before expiry")
			continue
		default:
			c.log.Warn("connection to IoT Hub lost", "reason", reason)
			if err := c.backoff(ctx, 0, false); err != nil {
				return err
			}
		}
	}
}

const (
	reasonStopped = "stopped"
	reasonRefresh = "token refresh"
)

// hold waits until the connection must end and says why.
func (c *Client) hold(ctx context.Context, conn *Conn) string {
	lifetime := conn.tokenExpiry.Sub(conn.connectedAt)
	refreshIn := time.Duration(float64(lifetime) * 0.8)
	timer := c.clk.NewTimer(refreshIn)
	defer timer.Stop()
	// The wall clock can jump (first NTP sync, resync): check it too, so a
	// token is never used past 80 % of its wall-clock lifetime either.
	check := min(refreshIn/8+time.Second, 30*time.Second)
	ticker := c.clk.NewTicker(check)
	defer ticker.Stop()
	wallRefresh := conn.connectedAt.Add(refreshIn)
	for {
		select {
		case <-ctx.Done():
			return reasonStopped
		case <-conn.lost:
			return conn.lostReason()
		case <-timer.Chan():
			return reasonRefresh
		case <-ticker.Chan():
			if !c.o.Now().Before(wallRefresh) {
				return reasonRefresh
			}
		}
	}
}

// backoff waits a full-jitter exponential delay: uniform in
// [0, min(max, min·2^attempt)], with a 5× larger base after an
// authentication refusal.
func (c *Client) backoff(ctx context.Context, attempt int, auth bool) error {
	base := c.o.BackoffMin
	if auth {
		base *= 5
	}
	limit := float64(base) * math.Pow(2, float64(min(attempt, 30)))
	limit = math.Min(limit, float64(c.o.BackoffMax))
	d := time.Duration(c.o.Rand() * limit)
	c.update(func(s *Status) { s.State = StateBackoff; s.NextAttemptAfter = d })
	if d <= 0 {
		return ctx.Err()
	}
	t := c.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}

// hostOnly strips ":port" from a host.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}
