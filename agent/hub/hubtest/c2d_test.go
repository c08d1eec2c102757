package hubtest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/hub/propbag"
)

// c2dBag decodes the property bag of a devicebound topic.
func c2dBag(t *testing.T, id, topic string) map[string]string {
	t.Helper()
	prefix := "devices/" + id + "/messages/devicebound/"
	if !strings.HasPrefix(topic, prefix) {
		t.Fatalf("C2D topic %q lacks %q", topic, prefix)
	}
	m, err := propbag.DecodeMap(topic[len(prefix):])
	if err != nil {
		t.Fatalf("C2D bag of %q: %v", topic, err)
	}
	return m
}

func TestC2D(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")

	// Queued while offline.
	if err := h.SendC2D("dev1", C2DMessage{Body: []byte("on"), MessageID: "m1",
		Properties: map[string]string{"cmd": "led on", "$.ct": "text/plain"}}); err != nil {
		t.Fatal(err)
	}
	d := connectWith(t, h, "dev1", key, false)
	d.none(t, 100*time.Millisecond) // not subscribed yet: nothing delivered
	d.subscribe(t, "devices/dev1/messages/devicebound/#")
	m := d.next(t, "devices/dev1/messages/devicebound/")
	want := map[string]string{"$.mid": "m1", "$.to": "/devices/dev1/messages/deviceBound", "$.ct": "text/plain", "cmd": "led on"}
	if got := c2dBag(t, "dev1", m.Topic); !reflect.DeepEqual(got, want) || string(m.Payload) != "on" || m.Qos != 1 {
		t.Fatalf("C2D = %v %q qos %d; want %v", got, m.Payload, m.Qos, want)
	}
	if !strings.Contains(m.Topic, "%24.mid=m1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound") {
		t.Fatalf("C2D topic %q is not encoded as IoT Hub does", m.Topic)
	}
	eventually(t, 5*time.Second, "PUBACK completes the message", func() bool { return len(h.C2DQueue("dev1")) == 0 })

	// Sent while connected and subscribed: delivered at once.
	if err := h.SendC2D("dev1", C2DMessage{Body: []byte("live")}); err != nil {
		t.Fatal(err)
	}
	if m := d.next(t, "devices/dev1/messages/devicebound/"); string(m.Payload) != "live" || c2dBag(t, "dev1", m.Topic)["$.mid"] == "" {
		t.Fatalf("live C2D = %q %q", m.Topic, m.Payload)
	}

	t.Run("errors", func(t *testing.T) {
		if err := h.SendC2D("ghost", C2DMessage{}); !errors.Is(err, ErrDeviceNotFound) {
			t.Fatalf("SendC2D(ghost) = %v", err)
		}
		if err := h.SendC2D("dev1", C2DMessage{Body: make([]byte, MaxC2DSize+1)}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("SendC2D(oversized) = %v", err)
		}
		if err := h.SendC2D("dev1", C2DMessage{Properties: map[string]string{"$.mid": "x"}}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("SendC2D($.mid property) = %v", err)
		}
	})
}

func TestC2DRedeliveryAndCleanSession(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	token := deviceToken(t, testHub, "dev1", key, time.Now().Add(time.Hour))
	opts := devOpts{clientID: "dev1", username: testHub + "/dev1/?api-version=2021-04-12", password: token}

	// A device that never acknowledges.
	opts.broker, opts.noAck = "tcp://"+h.MQTTAddr(), true
	d, err := dial(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	d.subscribe(t, "devices/dev1/messages/devicebound/#")
	if err := h.SendC2D("dev1", C2DMessage{Body: []byte("once"), MessageID: "keep"}); err != nil {
		t.Fatal(err)
	}
	if m := d.next(t, "devices/dev1/messages/devicebound/"); m.Dup {
		t.Fatal("first delivery has DUP set")
	}
	d.Disconnect(0)
	if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
		t.Fatal(err)
	}
	if q := h.C2DQueue("dev1"); !reflect.DeepEqual(q, []string{"keep"}) {
		t.Fatalf("queue after un-acked delivery = %v", q)
	}

	// CleanSession=0: the broker kept the subscription; the message comes again.
	opts.noAck = false
	d, err = dial(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	m := d.next(t, "devices/dev1/messages/devicebound/")
	if c2dBag(t, "dev1", m.Topic)["$.mid"] != "keep" || !m.Dup {
		t.Fatalf("redelivery = %q dup %v", m.Topic, m.Dup)
	}
	eventually(t, 5*time.Second, "acknowledged", func() bool { return len(h.C2DQueue("dev1")) == 0 })
	d.Disconnect(0)
	if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
		t.Fatal(err)
	}

	// CleanSession=1 purges what was queued while offline.
	if err := h.SendC2D("dev1", C2DMessage{Body: []byte("stale")}); err != nil {
		t.Fatal(err)
	}
	opts.clean = true
	d, err = dial(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	if q := h.C2DQueue("dev1"); len(q) != 0 {
		t.Fatalf("queue after CleanSession=1 connect = %v", q)
	}
	d.subscribe(t, "devices/dev1/messages/devicebound/#")
	d.none(t, 100*time.Millisecond)
}

func TestC2DQueueLimitAndTTL(t *testing.T) {
	fc := clockwork.NewFakeClock()
	h := startHub(t, Options{Clock: fc})
	addDevice(t, h, "dev1")
	for i := range MaxC2DQueue {
		if err := h.SendC2D("dev1", C2DMessage{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := h.SendC2D("dev1", C2DMessage{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("51st message = %v; want ErrQueueFull", err)
	}
	fc.Advance(C2DTTL - time.Second)
	if n := len(h.C2DQueue("dev1")); n != MaxC2DQueue {
		t.Fatalf("queue before TTL = %d", n)
	}
	fc.Advance(time.Second)
	if n := len(h.C2DQueue("dev1")); n != 0 {
		t.Fatalf("queue after TTL = %d; want 0", n)
	}
	if err := h.SendC2D("dev1", C2DMessage{}); err != nil {
		t.Fatalf("send after expiry: %v", err)
	}
}

func TestC2DDeadLetterAndDelete(t *testing.T) {
	h := startHub(t, Options{})
	key := addDevice(t, h, "dev1")
	opts := devOpts{broker: "tcp://" + h.MQTTAddr(), clientID: "dev1", username: testHub + "/dev1/?api-version=2021-04-12",
		password: deviceToken(t, testHub, "dev1", key, time.Now().Add(time.Hour)), noAck: true}
	if err := h.SendC2D("dev1", C2DMessage{Body: []byte("poison")}); err != nil {
		t.Fatal(err)
	}
	for i := range MaxC2DDeliveries {
		d, err := dial(t, opts)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			d.subscribe(t, "devices/dev1/messages/devicebound/#")
		}
		d.next(t, "devices/dev1/messages/devicebound/")
		d.Disconnect(0)
		if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
			t.Fatal(err)
		}
	}
	d, err := dial(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "dead-lettered", func() bool { return len(h.C2DQueue("dev1")) == 0 })
	d.none(t, 100*time.Millisecond)

	if err := h.DeleteDevice("dev1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "deleting closes the connection", d.connectionLost)
	if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
		t.Fatal(err)
	}
	if c := h.Connections(); c[len(c)-1].Reason != "device deleted" {
		t.Fatalf("reason = %q", c[len(c)-1].Reason)
	}
	if err := h.DeleteDevice("dev1"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("second DeleteDevice = %v", err)
	}
}
