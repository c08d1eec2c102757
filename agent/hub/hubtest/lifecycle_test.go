package hubtest

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/provisioning/dpstest"
)

var _ dpstest.DeviceRegistry = (*Hub)(nil)

// TestLifecycle checks Start/Close rules and that a closed hub leaves no
// goroutines behind.
func TestLifecycle(t *testing.T) {
	before := runtime.NumGoroutine()
	h, err := New(Options{HubHost: testHub})
	if err != nil {
		t.Fatal(err)
	}
	if h.MQTTAddr() != "" {
		t.Fatal("MQTTAddr set before Start")
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	key := addDevice(t, h, "dev1")
	d := connectDevice(t, h, "dev1", key)
	d.subscribe(t, "$iothub/methods/POST/#")
	errc := make(chan error, 1)
	go func() {
		_, err := h.InvokeMethod(ctxT(t), "dev1", "hang", nil, time.Minute)
		errc <- err
	}()
	d.next(t, "$iothub/methods/POST/hang/")
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending method after Close = %v; want ErrClosed", err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := h.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
	eventually(t, 5*time.Second, "device saw the close", d.connectionLost)
	d.Disconnect(0)
	eventually(t, 5*time.Second, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before+2 })

	if _, err := New(Options{HubHost: "a/b"}); err == nil {
		t.Fatal("New accepted a host with '/'")
	}
	if _, err := New(Options{ServicePolicy: Policy{Key: "!!"}}); err == nil {
		t.Fatal("New accepted a bad policy key")
	}
	if _, err := New(Options{TokenGrace: -time.Second}); err == nil {
		t.Fatal("New accepted a negative grace")
	}
}
