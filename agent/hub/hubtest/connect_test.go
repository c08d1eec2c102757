package hubtest

import (
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/sas"
)

func TestConnectAuth(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	otherKey := addDevice(t, h, "dev2")
	if err := h.PutDevice(Device{ID: "off", Status: StatusDisabled}); err != nil {
		t.Fatal(err)
	}
	offDev, _ := h.Device("off")
	dev1, _ := h.Device("dev1")
	policyKey, err := sas.ParseKey(h.ServicePolicy().Key)
	if err != nil {
		t.Fatal(err)
	}
	policyTok := func(sr, name string) string {
		tok, err := sas.New(sr, name, time.Now().Add(time.Hour).Unix(), policyKey)
		if err != nil {
			t.Fatal(err)
		}
		return tok.String()
	}
	soon := time.Now().Add(time.Hour)
	user := func(id string) string { return testHub + "/" + id + "/?api-version=2021-04-12" }
	tests := []struct {
		name     string
		clientID string
		username string
		password string
		version  uint
		ok       bool
	}{
		{"device key", "dev1", user("dev1"), deviceToken(t, testHub, "dev1", key, soon), 4, true},
		{"secondary key", "dev1", user("dev1"), deviceToken(t, testHub, "dev1", dev1.SecondaryKey, soon), 4, true},
		{"hub host in other case", "dev1", strings.ToUpper(testHub) + "/dev1/?api-version=2021-04-12", deviceToken(t, strings.ToUpper(testHub), "dev1", key, soon), 4, true},
		{"host with port", "dev1", testHub + ":8883/dev1/?api-version=2021-04-12", deviceToken(t, testHub, "dev1", key, soon), 4, true},
		{"model id recorded", "dev1", user("dev1") + "&model-id=dtmi%3Acom%3Aexample%3B1", deviceToken(t, testHub, "dev1", key, soon), 4, true},
		{"policy key with skn", "dev1", user("dev1"), policyTok(testHub+"/devices/dev1", "iothubowner"), 4, true},
		{"policy key for whole hub", "dev1", user("dev1"), policyTok(testHub, "iothubowner"), 4, true},
		{"policy key wrong name", "dev1", user("dev1"), policyTok(testHub+"/devices/dev1", "registryRead"), 4, false},
		{"other device's key", "dev1", user("dev1"), deviceToken(t, testHub, "dev1", otherKey, soon), 4, false},
		{"expired token", "dev1", user("dev1"), deviceToken(t, testHub, "dev1", key, time.Now().Add(-time.Second)), 4, false},
		{"wrong device in sr", "dev1", user("dev1"), deviceToken(t, testHub, "dev2", key, soon), 4, false},
		{"sibling device id prefix", "dev1", user("dev1"), deviceToken(t, testHub, "dev", key, soon), 4, false},
		{"wrong hub in sr", "dev1", user("dev1"), deviceToken(t, "other-hub", "dev1", key, soon), 4, false},
		{"wrong hub in username", "dev1", "other-hub/dev1/?api-version=2021-04-12", deviceToken(t, testHub, "dev1", key, soon), 4, false},
		{"username device differs", "dev1", user("dev2"), deviceToken(t, testHub, "dev1", key, soon), 4, false},
		{"no api-version", "dev1", testHub + "/dev1/", deviceToken(t, testHub, "dev1", key, soon), 4, false},
		{"unknown device", "ghost", user("ghost"), deviceToken(t, testHub, "ghost", key, soon), 4, false},
		{"disabled device", "off", user("off"), deviceToken(t, testHub, "off", offDev.PrimaryKey, soon), 4, false},
		{"malformed password", "dev1", user("dev1"), "not a token", 4, false},
		{"empty password", "dev1", user("dev1"), "", 4, false},
		{"mqtt 3.1", "dev1", user("dev1"), deviceToken(t, testHub, "dev1", key, soon), 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.Stats()
			d, err := dial(t, devOpts{broker: "tcp://" + h.MQTTAddr(), clientID: tt.clientID, username: tt.username,
				password: tt.password, version: tt.version, clean: true})
			if tt.ok {
				if err != nil {
					t.Fatalf("connect error = %v; want success", err)
				}
				d.Disconnect(0)
				if err := h.WaitDisconnected(ctxT(t), tt.clientID); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("connect succeeded; want CONNACK 5")
			}
			if tt.version == 4 {
				if d.rc != 5 {
					t.Fatalf("connect error = %v (rc %d); want CONNACK 5", err, d.rc)
				}
			}
			if got := h.Stats(); got.ConnectRefused != before.ConnectRefused+1 {
				t.Fatalf("ConnectRefused = %d; want %d", got.ConnectRefused, before.ConnectRefused+1)
			}
		})
	}
	// Every accepted connection is on record with its metadata.
	var model bool
	for _, c := range h.Connections() {
		if c.ModelID == "dtmi:com:example;1" && c.APIVersion == "2021-04-12" && c.Transport == "mqtt" {
			model = true
		}
		if c.DisconnectedAt.IsZero() || c.Reason == "" {
			t.Errorf("connection %+v not closed with a reason", c)
		}
	}
	if !model {
		t.Errorf("no connection recorded the model id: %+v", h.Connections())
	}
}

func TestOneConnectionPerDevice(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	first := connectDevice(t, h, "dev1", key)
	second := connectDevice(t, h, "dev1", key)
	eventually(t, 5*time.Second, "first connection closed", first.connectionLost)
	if second.connectionLost() || !second.IsConnectionOpen() {
		t.Fatal("second connection was closed")
	}
	eventually(t, 5*time.Second, "first connection recorded as replaced", func() bool {
		c := h.Connections()
		return len(c) == 2 && c[0].Reason == "replaced" && !c[0].DisconnectedAt.IsZero()
	})
	if c := h.Connections(); !c[1].DisconnectedAt.IsZero() {
		t.Fatalf("Connections = %+v; want the second live", c)
	}
	// The new connection works.
	second.publish(t, "devices/dev1/messages/events/", 1, []byte("x"))
	if msgs, _ := h.Messages("dev1", 0); len(msgs) != 1 {
		t.Fatalf("Messages = %v; want 1", msgs)
	}
}

func TestTokenExpiryDisconnect(t *testing.T) {
	for _, grace := range []time.Duration{0, 5 * time.Minute} {
		t.Run("grace "+grace.String(), func(t *testing.T) {
			// The emulator's clock is skewed one day ahead of the fake clock
			// that runs its timers; durations still come out right.
			fc := clockwork.NewFakeClockAt(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
			skew := 24 * time.Hour
			h := startHub(t, Options{Clock: fc, Now: func() time.Time { return fc.Now().Add(skew) }, TokenGrace: grace})
			key := addDevice(t, h, "dev1")
			exp := fc.Now().Add(skew + time.Minute)
			d, err := dial(t, devOpts{broker: "tcp://" + h.MQTTAddr(), clientID: "dev1",
				username: testHub + "/dev1/?api-version=2021-04-12",
				password: deviceToken(t, testHub, "dev1", key, exp), clean: true})
			if err != nil {
				t.Fatal(err)
			}
			fc.Advance(time.Minute + grace - time.Second)
			time.Sleep(50 * time.Millisecond) // give a wrongly armed timer the chance to fire
			if d.connectionLost() {
				t.Fatal("connection closed before token expiry + grace")
			}
			fc.Advance(2 * time.Second)
			eventually(t, 5*time.Second, "connection closed at token expiry", d.connectionLost)
			if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
				t.Fatal(err)
			}
			if c := h.Connections()[0]; c.Reason != "token expired" || !c.TokenExpiry.Equal(exp.Truncate(time.Second)) {
				t.Fatalf("connection = %+v; want reason token expired, expiry %v", c, exp)
			}
		})
	}
}

func TestTLSListener(t *testing.T) {
	srv, cli := selfSignedTLS(t)
	h := startHub(t, Options{TLSConfig: srv})
	key := addDevice(t, h, "dev1")
	d, err := dial(t, devOpts{broker: "ssl://" + h.MQTTAddr(), clientID: "dev1",
		username: testHub + "/dev1/?api-version=2021-04-12",
		password: deviceToken(t, testHub, "dev1", key, time.Now().Add(time.Hour)), clean: true, tls: cli})
	if err != nil {
		t.Fatal(err)
	}
	d.publish(t, "devices/dev1/messages/events/", 1, []byte("over tls"))
	if msgs, _ := h.Messages("dev1", 0); len(msgs) != 1 || string(msgs[0].Body) != "over tls" {
		t.Fatalf("Messages = %+v", msgs)
	}
}

func TestFaults(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	h.RefuseConnects(2)
	for i := range 2 {
		if _, err := dial(t, devOpts{broker: "tcp://" + h.MQTTAddr(), clientID: "dev1",
			username: testHub + "/dev1/?api-version=2021-04-12",
			password: deviceToken(t, testHub, "dev1", key, time.Now().Add(time.Hour)), clean: true}); err == nil {
			t.Fatalf("connect %d succeeded during RefuseConnects", i)
		}
	}
	d := connectDevice(t, h, "dev1", key)
	h.DropConnections("")
	eventually(t, 5*time.Second, "dropped connection", d.connectionLost)
	if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
		t.Fatal(err)
	}
	if c := h.Connections(); c[len(c)-1].Reason != "dropped by fault injection" {
		t.Fatalf("reason = %q", c[len(c)-1].Reason)
	}
	h.RefuseConnects(5)
	h.ClearFaults()
	connectDevice(t, h, "dev1", key)
}

func TestWill(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	tests := []struct {
		name  string
		topic string
		ok    bool
	}{
		{"telemetry topic", "devices/dev1/messages/events/%24.mid=w&k=v", true},
		{"other topic", "devices/dev1/messages/devicebound/", false},
		{"other device", "devices/dev2/messages/events/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			po := paho.NewClientOptions().AddBroker("tcp://"+h.MQTTAddr()).SetClientID("dev1").
				SetUsername(testHub+"/dev1/?api-version=2021-04-12").
				SetPassword(deviceToken(t, testHub, "dev1", key, time.Now().Add(time.Hour))).
				SetProtocolVersion(4).SetAutoReconnect(false).SetWill(tt.topic, "gone", 1, false)
			c := paho.NewClient(po)
			tok := c.Connect()
			if !tok.WaitTimeout(5 * time.Second) {
				t.Fatal("connect hung")
			}
			if (tok.Error() == nil) != tt.ok {
				t.Fatalf("connect error = %v; want ok=%v", tok.Error(), tt.ok)
			}
			if !tt.ok {
				return
			}
			_, before := h.Messages("", 0)
			// A protocol violation ends the connection without DISCONNECT: the will fires.
			c.Publish("hello/world", 1, false, []byte("x"))
			eventually(t, 5*time.Second, "will recorded", func() bool {
				m, _ := h.Messages("", before)
				return len(m) == 1 && string(m[0].Body) == "gone" && m[0].Properties["iothub-MessageType"] == "Will" &&
					m[0].Properties["k"] == "v" && m[0].SystemProperties["$.mid"] == "w"
			})
			c.Disconnect(0)
		})
	}
}
