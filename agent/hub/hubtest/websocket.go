package hubtest

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener is the mochi listener of MQTT-over-WebSocket clients. The
// connections arrive through WebSocketHandler, which is mounted on somebody
// else's HTTPS server, so the listener itself accepts nothing.
type wsListener struct {
	id string

	// mu guards the fields below.
	mu        sync.Mutex
	establish listeners.EstablishFn // nil until Serve
	closed    bool
}

func (l *wsListener) Init(*slog.Logger) error { return nil }
func (l *wsListener) ID() string              { return l.id }
func (l *wsListener) Address() string         { return "/$iothub/websocket" }
func (l *wsListener) Protocol() string        { return "wss" }

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.establish = establish
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	closeClients(l.id)
}

// markClosed refuses further connections without touching the broker.
func (l *wsListener) markClosed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}

func (l *wsListener) establishFn() listeners.EstablishFn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	return l.establish
}

// WebSocketHandler serves MQTT over WebSocket, IoT Hub's
// wss://{host}/$iothub/websocket with subprotocol "mqtt" (any letter case).
// Mount it on the HTTPS server at "/$iothub/websocket". Requests without the
// mqtt subprotocol get 400.
func (h *Hub) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var proto string
		for _, p := range websocket.Subprotocols(r) {
			if strings.EqualFold(p, "mqtt") {
				proto = p
				break
			}
		}
		if proto == "" || !websocket.IsWebSocketUpgrade(r) {
			writeError(w, http.StatusBadRequest, 400004, "MQTT over WebSocket needs a websocket upgrade with subprotocol \"mqtt\"")
			return
		}
		var establish listeners.EstablishFn
		if h.ws != nil {
			establish = h.ws.establishFn()
		}
		if establish == nil {
			writeError(w, http.StatusServiceUnavailable, 503000, "hub is not running")
			return
		}
		up := websocket.Upgrader{
			Subprotocols:     []string{proto},
			CheckOrigin:      func(*http.Request) bool { return true },
			HandshakeTimeout: 10 * time.Second,
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade has replied
		}
		defer c.Close()
		raw := c.UnderlyingConn()
		if !h.tracked.add(raw) {
			return
		}
		defer h.tracked.remove(raw)
		if err := h.tracked.wrap(establish)(wsListenerID, &wsConn{Conn: raw, c: c}); err != nil {
			h.log.Debug("websocket MQTT connection ended", "error", err)
		}
	})
}

var errNotBinary = errors.New("hubtest: websocket message is not binary")

// wsConn adapts a websocket connection (binary messages) to the byte
// stream net.Conn mochi reads. Deadlines go to the underlying connection.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // current message, or nil
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errNotBinary
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue
			}
			return n, nil
		}
		return n, err
	}
}

// Write sends p as one binary message. mochi serializes writes per client.
func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (ws *wsConn) Close() error { return ws.c.Close() }
