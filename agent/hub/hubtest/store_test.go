package hubtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	h, err := New(Options{HubHost: testHub, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	key := addDevice(t, h, "dev1")
	if err := h.PutDevice(Device{ID: "dev2", Status: StatusDisabled}); err != nil {
		t.Fatal(err)
	}
	d := connectDevice(t, h, "dev1", key)
	d.subscribe(t, "$iothub/twin/res/#")
	d.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=1", 0, []byte(`{"fw":"2.1","n":12345678901234567890}`))
	d.next(t, "$iothub/twin/res/204/")
	for i := range 3 {
		d.publish(t, "devices/dev1/messages/events/%24.mid=m"+string(rune('0'+i))+"&k=v", 1, []byte{byte(i)})
	}
	if _, err := h.PatchDesired("dev1", map[string]any{"interval": 5}); err != nil {
		t.Fatal(err)
	}
	if err := h.SendC2D("dev1", C2DMessage{Body: []byte("queued"), MessageID: "q1"}); err != nil {
		t.Fatal(err)
	}
	twin1, _ := h.Twin("dev1")
	msgs1, _ := h.Messages("", 0)
	devs1 := map[string]Device{}
	for _, d := range h.Devices() {
		devs1[d.ID] = d
	}
	d.Disconnect(0)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{devicesFile, twinsFile, c2dFile, telemetryFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("state file %s: %v", name, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("state file %s mode %v is group/world accessible", name, fi.Mode())
		}
	}
	// A crash in the middle of an append leaves a torn line; it is ignored.
	f, err := os.OpenFile(filepath.Join(dir, telemetryFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"n":4,"deviceId":"dev1","bo`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	h2 := startHub(t, Options{StateDir: dir})
	devs2 := map[string]Device{}
	for _, d := range h2.Devices() {
		devs2[d.ID] = d
	}
	if !reflect.DeepEqual(devs1, devs2) {
		t.Fatalf("devices after restart = %+v; want %+v", devs2, devs1)
	}
	twin2, _ := h2.Twin("dev1")
	if !reflect.DeepEqual(twin1, twin2) {
		t.Fatalf("twin after restart = %+v; want %+v", twin2, twin1)
	}
	if b, _ := json.Marshal(twin2.Reported["n"]); string(b) != "12345678901234567890" {
		t.Fatalf("large number after restart = %s", b)
	}
	msgs2, next := h2.Messages("", 0)
	if !reflect.DeepEqual(msgs1, msgs2) || next != 3 {
		t.Fatalf("messages after restart = %+v (next %d); want %+v", msgs2, next, msgs1)
	}
	if q := h2.C2DQueue("dev1"); !reflect.DeepEqual(q, []string{"q1"}) {
		t.Fatalf("C2D queue after restart = %v", q)
	}
	// The log continues after the torn tail and the key still works.
	d = connectWith(t, h2, "dev1", key, false)
	d.subscribe(t, "devices/dev1/messages/devicebound/#")
	if m := d.next(t, "devices/dev1/messages/devicebound/"); string(m.Payload) != "queued" {
		t.Fatalf("C2D after restart = %s", m.Payload)
	}
	d.publish(t, "devices/dev1/messages/events/", 1, []byte("after"))
	if m, _ := h2.Messages("", 3); len(m) != 1 || m[0].N != 4 || string(m[0].Body) != "after" {
		t.Fatalf("message after restart = %+v", m)
	}
	b, err := os.ReadFile(filepath.Join(dir, telemetryFile))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); len(lines) != 4 || strings.Contains(string(b), `"bo`+"{") {
		t.Fatalf("telemetry log has %d lines after restart: %s", len(lines), b)
	}
}

func TestStoreRejectsCorruption(t *testing.T) {
	tests := []struct {
		name, file, content string
	}{
		{"corrupt devices", devicesFile, `{"devices":[`},
		{"bad key", devicesFile, `{"devices":[{"deviceId":"d","primaryKey":"!!","secondaryKey":"!!"}]}`},
		{"corrupt middle log line", telemetryFile, "garbage\n" + `{"n":1,"deviceId":"d"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tt.file), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if h, err := New(Options{StateDir: dir}); err == nil {
				h.Close()
				t.Fatal("New accepted a corrupt state directory")
			}
		})
	}
}

func TestTimesUseEmulatorClock(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	h := startHub(t, Options{Now: func() time.Time { return at }})
	key := addDevice(t, h, "dev1")
	d, err := dial(t, devOpts{broker: "tcp://" + h.MQTTAddr(), clientID: "dev1",
		username: testHub + "/dev1/?api-version=2021-04-12",
		password: deviceToken(t, testHub, "dev1", key, at.Add(time.Minute)), clean: true})
	if err != nil {
		t.Fatalf("token valid on the emulator clock was refused: %v", err)
	}
	d.publish(t, "devices/dev1/messages/events/", 1, nil)
	if m, _ := h.Messages("", 0); !m[0].EnqueuedTime.Equal(at) {
		t.Fatalf("EnqueuedTime = %v; want %v", m[0].EnqueuedTime, at)
	}
	if c := h.Connections(); !c[0].ConnectedAt.Equal(at) {
		t.Fatalf("ConnectedAt = %v", c[0].ConnectedAt)
	}
}
