package hubtest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func wsServer(t *testing.T, h *Hub) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/$iothub/websocket", h.WebSocketHandler())
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestWebSocketTransport(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	srv := wsServer(t, h)
	cli := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	d, err := dial(t, devOpts{
		broker:   "wss://" + srv.Listener.Addr().String() + "/$iothub/websocket",
		clientID: "dev1", username: testHub + "/dev1/?api-version=2021-04-12",
		password: deviceToken(t, testHub, "dev1", key, time.Now().Add(time.Hour)), clean: true, tls: cli,
	})
	if err != nil {
		t.Fatalf("connect over wss: %v", err)
	}
	d.subscribe(t, "$iothub/twin/res/#")
	big := []byte(strings.Repeat("x", 100_000)) // spans many websocket frames and reads
	d.publish(t, "devices/dev1/messages/events/%24.mid=w1", 1, big)
	d.publish(t, "$iothub/twin/GET/?$rid=1", 0, nil)
	if m := d.next(t, "$iothub/twin/res/200/"); !strings.Contains(string(m.Payload), `"desired"`) {
		t.Fatalf("twin over websocket = %s", m.Payload)
	}
	msgs, _ := h.Messages("dev1", 0)
	if len(msgs) != 1 || len(msgs[0].Body) != len(big) || msgs[0].SystemProperties["$.mid"] != "w1" {
		t.Fatalf("Messages = %d messages", len(msgs))
	}
	if c := h.Connections(); len(c) != 1 || c[0].Transport != "mqtt-ws" {
		t.Fatalf("Connections = %+v; want transport mqtt-ws", c)
	}
	d.Disconnect(0)
	if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
		t.Fatal(err)
	}
}

func TestWebSocketSubprotocol(t *testing.T) {
	h := startHub(t, Options{})
	srv := wsServer(t, h)
	url := "wss://" + srv.Listener.Addr().String() + "/$iothub/websocket"
	tests := []struct {
		name   string
		protos []string
		ok     bool
	}{
		{"mqtt", []string{"mqtt"}, true},
		{"MQTT as the C SDK sends it", []string{"MQTT"}, true},
		{"other", []string{"chat"}, false},
		{"none", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dl := websocket.Dialer{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Subprotocols: tt.protos,
				HandshakeTimeout: 5 * time.Second}
			c, resp, err := dl.Dial(url, nil)
			if tt.ok {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer c.Close()
				if c.Subprotocol() != tt.protos[0] {
					t.Fatalf("subprotocol = %q", c.Subprotocol())
				}
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded; want 400")
			}
			if resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("dial error %v, response %v; want 400", err, resp)
			}
		})
	}
	// Before Start the handler refuses.
	h2, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/$iothub/websocket", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Protocol", "mqtt")
	h2.WebSocketHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("handler before Start = %d; want 503", rec.Code)
	}
}
