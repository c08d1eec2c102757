package hubtest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/hub/propbag"
)

func TestTelemetry(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	d := connectDevice(t, h, "dev1", key)
	tests := []struct {
		name   string
		topic  string
		qos    byte
		body   string
		app    map[string]string
		system map[string]string
	}{
		{"encoded system properties", "devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&k=a%2Bb%20c",
			1, `{"records":[]}`, map[string]string{"k": "a+b c"}, map[string]string{"$.mid": "m1", "$.ct": "application/json", "$.ce": "utf-8"}},
		{"literal system property", "devices/dev1/messages/events/$.mid=m2", 1, "b", map[string]string{}, map[string]string{"$.mid": "m2"}},
		{"empty bag", "devices/dev1/messages/events/", 1, "", map[string]string{}, map[string]string{}},
		{"no trailing slash", "devices/dev1/messages/events", 1, "x", map[string]string{}, map[string]string{}},
		{"qos 0", "devices/dev1/messages/events/k=0", 0, "q0", map[string]string{"k": "0"}, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, before := h.Messages("", 0)
			d.publish(t, tt.topic, tt.qos, []byte(tt.body))
			if tt.qos == 0 {
				eventually(t, 5*time.Second, "qos 0 message recorded", func() bool {
					m, _ := h.Messages("", before)
					return len(m) == 1
				})
			}
			// QoS 1: the PUBACK came back, so the message is already recorded.
			msgs, next := h.Messages("dev1", before)
			if len(msgs) != 1 || next != before+1 {
				t.Fatalf("Messages after %d = %d messages, next %d; want 1, %d", before, len(msgs), next, before+1)
			}
			m := msgs[0]
			if m.DeviceID != "dev1" || string(m.Body) != tt.body || !reflect.DeepEqual(m.Properties, tt.app) ||
				!reflect.DeepEqual(m.SystemProperties, tt.system) || m.EnqueuedTime.IsZero() {
				t.Fatalf("message = %+v; want body %q app %v system %v", m, tt.body, tt.app, tt.system)
			}
		})
	}
	if d.connectionLost() {
		t.Fatal("valid telemetry closed the connection")
	}
}

// TestViolationsCloseConnection covers what IoT Hub answers by closing the
// connection: forbidden topics (also another device's), QoS 2, malformed bags
// and oversized messages.
func TestViolationsCloseConnection(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	addDevice(t, h, "dev2")
	big := make([]byte, MaxTelemetrySize+1)
	tests := []struct {
		name    string
		topic   string
		qos     byte
		payload []byte
		reason  string
	}{
		{"other device telemetry qos 1", "devices/dev2/messages/events/", 1, []byte("x"), "forbidden topic"},
		{"other device telemetry qos 0", "devices/dev2/messages/events/", 0, []byte("x"), "forbidden topic"},
		{"devicebound publish", "devices/dev1/messages/devicebound/", 1, []byte("x"), "forbidden topic"},
		{"method request publish", "$iothub/methods/POST/m/?$rid=1", 0, nil, "forbidden topic"},
		{"desired patch publish", "$iothub/twin/PATCH/properties/desired/?$version=9", 0, []byte("{}"), "forbidden topic"},
		{"arbitrary topic", "hello/world", 1, []byte("x"), "forbidden topic"},
		{"module telemetry", "devices/dev1/modules/m1/messages/events/", 1, []byte("x"), "forbidden topic"},
		{"qos 2", "devices/dev1/messages/events/", 2, []byte("x"), "QoS 2"},
		{"malformed bag", "devices/dev1/messages/events/k=%zz", 1, []byte("x"), "malformed property bag"},
		{"empty key in bag", "devices/dev1/messages/events/=v", 1, []byte("x"), "malformed property bag"},
		{"oversized", "devices/dev1/messages/events/", 1, big, "exceeds"},
		{"wildcard in topic", "devices/dev1/messages/events/k=a+b", 1, []byte("x"), "connection lost"},
		{"twin request without rid", "$iothub/twin/GET/", 0, nil, "without $rid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, before := h.Messages("", 0)
			d := connectDevice(t, h, "dev1", key)
			tok := d.Publish(tt.topic, tt.qos, false, tt.payload)
			tok.WaitTimeout(5 * time.Second)
			eventually(t, 5*time.Second, "connection closed", d.connectionLost)
			if tt.qos > 0 && tok.Error() == nil {
				t.Fatal("publish token succeeded; want failure (no PUBACK)")
			}
			if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
				t.Fatal(err)
			}
			conns := h.Connections()
			if r := conns[len(conns)-1].Reason; !strings.Contains(r, tt.reason) {
				t.Fatalf("disconnect reason = %q; want it to contain %q", r, tt.reason)
			}
			if msgs, _ := h.Messages("", before); len(msgs) != 0 {
				t.Fatalf("rejected publish was recorded: %+v", msgs)
			}
		})
	}
}

func TestSubscribeACL(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	addDevice(t, h, "dev2")
	d := connectDevice(t, h, "dev1", key)
	tests := []struct {
		filter string
		want   byte
	}{
		{"devices/dev2/messages/devicebound/#", 0x80},
		{"devices/dev1/messages/events/#", 0x80},
		{"#", 0x80},
		{"$iothub/#", 0x80},
		{"$iothub/twin/res/+", 0x80},
		{"devices/dev1/messages/devicebound/#", 1},
		{"$iothub/twin/res/#", 1},
		{"$iothub/twin/PATCH/properties/desired/#", 1},
		{"$iothub/methods/POST/#", 1},
		{"devices/+/messages/devicebound/#", 1},
		{"$iothub/twin/res/#", 1}, // re-subscribing does not count twice
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if got := d.subscribe(t, tt.filter); got[0] != tt.want {
				t.Fatalf("SUBACK for %q = %#x; want %#x", tt.filter, got[0], tt.want)
			}
		})
	}
	t.Run("all five filters at once", func(t *testing.T) {
		d2 := connectDevice(t, h, "dev2", mustKey(t, h, "dev2"))
		codes := d2.subscribe(t, "devices/dev2/messages/devicebound/#", "$iothub/twin/res/#",
			"$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#", "devices/+/messages/devicebound/#")
		for i, c := range codes {
			if c != 1 {
				t.Fatalf("subscription %d code %#x", i, c)
			}
		}
		if n := len(mustConn(t, h, "dev2").cl.State.Subscriptions.GetAll()); n != MaxSubscriptions {
			t.Fatalf("subscriptions = %d; want %d", n, MaxSubscriptions)
		}
	})
	if d.connectionLost() {
		t.Fatal("denied SUBSCRIBE closed the connection")
	}
}

func mustKey(t *testing.T, h *Hub, id string) string {
	t.Helper()
	d, ok := h.Device(id)
	if !ok {
		t.Fatalf("device %q missing", id)
	}
	return d.PrimaryKey
}

func mustConn(t *testing.T, h *Hub, id string) *conn {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.current[id]
	if c == nil {
		t.Fatalf("device %q not connected", id)
	}
	return c
}

func TestWithholdPubacks(t *testing.T) {
	fc := clockwork.NewFakeClock()
	h := startHub(t, Options{Clock: fc})
	key := addDevice(t, h, "dev1")
	d := connectDevice(t, h, "dev1", key)
	h.WithholdPubacks(time.Minute)
	tok := d.Publish("devices/dev1/messages/events/", 1, false, []byte("held"))
	if tok.WaitTimeout(200 * time.Millisecond) {
		t.Fatalf("PUBACK arrived while withheld (err %v)", tok.Error())
	}
	if msgs, _ := h.Messages("", 0); len(msgs) != 0 {
		t.Fatalf("withheld message was recorded: %+v", msgs)
	}
	if s := h.Stats(); s.TelemetryWithheld != 1 {
		t.Fatalf("TelemetryWithheld = %d", s.TelemetryWithheld)
	}
	d.publish(t, "devices/dev1/messages/events/", 0, []byte("qos0")) // QoS 0 is not held
	fc.Advance(time.Minute)                                          // the window ends on the emulator clock
	d.publish(t, "devices/dev1/messages/events/", 1, []byte("after"))
	msgs, _ := h.Messages("", 0)
	if len(msgs) != 2 || string(msgs[0].Body) != "qos0" || string(msgs[1].Body) != "after" {
		t.Fatalf("Messages = %+v; want qos0, after", msgs)
	}
}

func TestTwin(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	d := connectDevice(t, h, "dev1", key)
	d.subscribe(t, "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#")

	getTwin := func(rid string) map[string]map[string]any {
		t.Helper()
		d.publish(t, "$iothub/twin/GET/?$rid="+rid, 0, nil)
		m := d.next(t, "$iothub/twin/res/")
		if m.Topic != "$iothub/twin/res/200/?$rid="+rid {
			t.Fatalf("twin GET response topic = %q", m.Topic)
		}
		var doc map[string]map[string]any
		if err := json.Unmarshal(m.Payload, &doc); err != nil {
			t.Fatalf("twin document %s: %v", m.Payload, err)
		}
		return doc
	}
	doc := getTwin("1")
	if doc["desired"]["$version"] != 1.0 || doc["reported"]["$version"] != 1.0 {
		t.Fatalf("fresh twin = %v", doc)
	}

	t.Run("reported patch", func(t *testing.T) {
		steps := []struct {
			patch   string
			status  string
			version int64
		}{
			{`{"fw":"1.0","net":{"ip":"10.0.0.2","rssi":-60},"gone":true}`, "204", 2},
			{`{"net":{"rssi":null,"ssid":"x"},"gone":null}`, "204", 3},
			{`{"bad`, "400", 3},
			{`[1,2]`, "400", 3},
			{`{"a.b":1}`, "400", 3},
		}
		for i, s := range steps {
			rid := "p" + string(rune('a'+i))
			d.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid="+rid, 0, []byte(s.patch))
			m := d.next(t, "$iothub/twin/res/")
			want := "$iothub/twin/res/" + s.status + "/?$rid=" + rid
			if s.status == "204" {
				want += "&$version=" + string(rune('0'+s.version))
			}
			if m.Topic != want {
				t.Fatalf("patch %s: response topic %q; want %q", s.patch, m.Topic, want)
			}
		}
		tw, err := h.Twin("dev1")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"fw": "1.0", "net": map[string]any{"ip": "10.0.0.2", "ssid": "x"}}
		if !reflect.DeepEqual(tw.Reported, want) || tw.ReportedVersion != 3 {
			t.Fatalf("reported = %v v%d; want %v v3", tw.Reported, tw.ReportedVersion, want)
		}
	})

	t.Run("desired push", func(t *testing.T) {
		tw, err := h.PatchDesired("dev1", map[string]any{"interval": 5, "led": map[string]any{"on": true}})
		if err != nil {
			t.Fatal(err)
		}
		if tw.DesiredVersion != 2 {
			t.Fatalf("desired version = %d", tw.DesiredVersion)
		}
		m := d.next(t, "$iothub/twin/PATCH/properties/desired/")
		if m.Topic != "$iothub/twin/PATCH/properties/desired/?$version=2" || m.Qos != 0 {
			t.Fatalf("push topic = %q qos %d", m.Topic, m.Qos)
		}
		var body map[string]any
		if err := json.Unmarshal(m.Payload, &body); err != nil {
			t.Fatal(err)
		}
		if body["interval"] != 5.0 || body["$version"] != 2.0 || body["led"].(map[string]any)["on"] != true {
			t.Fatalf("push body = %s", m.Payload)
		}
		if _, err := h.PatchDesired("dev1", map[string]any{"interval": nil}); err != nil {
			t.Fatal(err)
		}
		d.next(t, "$iothub/twin/PATCH/properties/desired/")
		doc := getTwin("2")
		if _, ok := doc["desired"]["interval"]; ok || doc["desired"]["$version"] != 3.0 {
			t.Fatalf("desired after delete = %v", doc["desired"])
		}
		if _, err := h.PatchDesired("ghost", map[string]any{"a": 1}); !errors.Is(err, ErrDeviceNotFound) {
			t.Fatalf("PatchDesired(ghost) = %v", err)
		}
		if _, err := h.PatchDesired("dev1", map[string]any{"a b": 1}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("PatchDesired(bad name) = %v", err)
		}
	})
}

// TestRepliesReachOnlyTheRequester checks cross-device isolation of
// $iothub replies: both devices ask with the same $rid at once and each gets
// its own twin, nothing else.
func TestRepliesReachOnlyTheRequester(t *testing.T) {
	h := startHub(t, Options{})
	devs := map[string]*device{}
	for _, id := range []string{"dev1", "dev2"} {
		devs[id] = connectDevice(t, h, id, addDevice(t, h, id))
		devs[id].subscribe(t, "$iothub/twin/res/#", "$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#")
		devs[id].publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=0", 0, []byte(`{"me":"`+id+`"}`))
		devs[id].next(t, "$iothub/twin/res/204/")
	}
	for _, id := range []string{"dev1", "dev2"} {
		devs[id].publish(t, "$iothub/twin/GET/?$rid=7", 0, nil)
	}
	for _, id := range []string{"dev1", "dev2"} {
		m := devs[id].next(t, "$iothub/twin/res/")
		if !strings.Contains(string(m.Payload), `"me":"`+id+`"`) {
			t.Fatalf("%s got twin %s", id, m.Payload)
		}
	}
	if _, err := h.PatchDesired("dev1", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	devs["dev1"].next(t, "$iothub/twin/PATCH/properties/desired/")
	devs["dev2"].none(t, 150*time.Millisecond)
}

func TestMethods(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	key2 := addDevice(t, h, "dev2")
	d := connectDevice(t, h, "dev1", key)

	if _, err := h.InvokeMethod(ctxT(t), "dev1", "reboot", nil, time.Second); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("InvokeMethod before subscribing = %v; want ErrDeviceOffline", err)
	}
	if _, err := h.InvokeMethod(ctxT(t), "ghost", "reboot", nil, time.Second); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("InvokeMethod(ghost) = %v; want ErrDeviceNotFound", err)
	}
	d.subscribe(t, "$iothub/methods/POST/#")
	other := connectDevice(t, h, "dev2", key2)

	type call struct {
		res MethodResult
		err error
	}
	done := make(chan call, 1)
	go func() {
		r, err := h.InvokeMethod(context.Background(), "dev1", "readSensors", json.RawMessage(`{"sensor":"env"}`), 5*time.Second)
		done <- call{r, err}
	}()
	req := d.next(t, "$iothub/methods/POST/")
	name, query, _ := strings.Cut(strings.TrimPrefix(req.Topic, "$iothub/methods/POST/"), "/")
	if name != "readSensors" || string(req.Payload) != `{"sensor":"env"}` || req.Qos != 0 {
		t.Fatalf("method request %q %s qos %d", req.Topic, req.Payload, req.Qos)
	}
	pairs, err := propbag.Decode(query)
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := propbag.Lookup(pairs, "$rid")
	// Another device answering with this rid is ignored.
	other.publish(t, "$iothub/methods/res/500/?$rid="+rid, 0, []byte(`"hijack"`))
	d.publish(t, "$iothub/methods/res/200/?$rid="+rid, 1, []byte(`{"temperature_c":21.5}`))
	c := <-done
	if c.err != nil || c.res.Status != 200 || string(c.res.Payload) != `{"temperature_c":21.5}` {
		t.Fatalf("InvokeMethod = %+v, %v", c.res, c.err)
	}

	t.Run("non-JSON and empty answers", func(t *testing.T) {
		for _, tc := range []struct{ body, want string }{{"plain", `"plain"`}, {"", "null"}} {
			go func() {
				r, err := h.InvokeMethod(context.Background(), "dev1", "m", nil, 5*time.Second)
				done <- call{r, err}
			}()
			req := d.next(t, "$iothub/methods/POST/m/")
			d.publish(t, "$iothub/methods/res/404/"+req.Topic[strings.Index(req.Topic, "?"):], 0, []byte(tc.body))
			c := <-done
			if c.err != nil || c.res.Status != 404 || string(c.res.Payload) != tc.want {
				t.Fatalf("InvokeMethod = %+v, %v; want 404 %s", c.res, c.err, tc.want)
			}
		}
	})
	t.Run("invalid arguments", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			payload string
		}{{"a/b", ""}, {"", ""}, {"ok", "{bad"}} {
			if _, err := h.InvokeMethod(ctxT(t), "dev1", tc.name, json.RawMessage(tc.payload), time.Second); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("InvokeMethod(%q, %q) = %v; want ErrInvalidArgument", tc.name, tc.payload, err)
			}
		}
	})
}

func TestMethodTimeout(t *testing.T) {
	fc := clockwork.NewFakeClock()
	h := startHub(t, Options{Clock: fc})
	key := addDevice(t, h, "dev1")
	d := connectDevice(t, h, "dev1", key)
	d.subscribe(t, "$iothub/methods/POST/#")
	errc := make(chan error, 1)
	go func() {
		_, err := h.InvokeMethod(context.Background(), "dev1", "slow", nil, 10*time.Second)
		errc <- err
	}()
	d.next(t, "$iothub/methods/POST/slow/")
	// Waiters: the token-expiry timer and the method timer.
	if err := fc.BlockUntilContext(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	fc.Advance(10 * time.Second)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("InvokeMethod = %v; want ErrTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("InvokeMethod did not time out")
	}
	// A late answer is ignored and does not break the connection.
	d.publish(t, "$iothub/methods/res/200/?$rid=1", 0, nil)
	if d.connectionLost() {
		t.Fatal("late method response closed the connection")
	}
}
