package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/hw"
	"github.com/fieldgate/fieldgate/hw/hwtest"
)

// TestHardwareEndToEnd: a fake BME280 on a fake I2C bus and a fake door
// contact produce telemetry; setOutput and a desired outputs.relay change
// drive the fake relay pin, and its state is reported in the twin.
func TestHardwareEndToEnd(t *testing.T) {
	bus := hwtest.NewRegisterBus()
	// Chip id 0x60 with the Bosch datasheet calibration example (25.08 °C).
	bus.Set(0x76, 0xD0, 0x60)
	bus.Set(0x76, 0x88, 0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, 0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B, 0x27, 0x0B, 0x8C, 0x00, 0xF9, 0xFF, 0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17)
	bus.Set(0x76, 0xF7, 0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x75, 0x30)
	door := &gpiotest.Pin{N: "GPIO17", EdgesChan: make(chan gpio.Level, 4)}
	relay := &gpiotest.Pin{N: "GPIO27"}
	env := hw.Env{
		I2C: func(string) (i2c.BusCloser, error) { return nopClose{bus}, nil },
		GPIO: func(name string) (gpio.PinIO, error) {
			switch name {
			case "GPIO17":
				return door, nil
			case "GPIO27":
				return relay, nil
			}
			return nil, errors.New("no pin " + name)
		},
	}
	h := newHarness(t, agenttest.AgentConfig{Sensors: `[[sensor]]
name = "env"
kind = "bme280"
bus = "1"
interval = "1s"

[[sensor]]
name = "door"
kind = "gpio_in"
pin = "GPIO17"
pull = "up"
edge = "both"
interval = "10s"
`, Extra: `[[output]]
name = "relay"
kind = "gpio"
pin = "GPIO27"
active_low = true
initial = "high"
`})
	warp(t, h.clk, 20*time.Millisecond)
	const dev = "fieldgate-test"
	_, stop := h.start(func(o *agent.Options) { o.HW = env })
	if relay.Read() != gpio.High {
		t.Fatalf("relay not in its safe state (high) at start: %v", relay.Read())
	}
	eventually(t, "bme280 telemetry", 20*time.Second, func() bool {
		for _, r := range records(t, h.emu.Hub, dev) {
			if r.Sensor == "env" && r.Values["temperature_c"] > 25.07 && r.Values["temperature_c"] < 25.09 {
				return true
			}
		}
		return false
	})
	door.EdgesChan <- gpio.Low
	eventually(t, "door edge telemetry", 20*time.Second, func() bool {
		for _, r := range records(t, h.emu.Hub, dev) {
			if r.Sensor == "door" && r.Values["edge"] == 1 && r.Values["level"] == 0 {
				return true
			}
		}
		return false
	})
	res, err := h.emu.Hub.InvokeMethod(context.Background(), dev, "setOutput", json.RawMessage(`{"name":"relay","value":true}`), 10*time.Second)
	if err != nil || res.Status != 200 {
		t.Fatalf("setOutput = %+v, %v", res, err)
	}
	if relay.Read() != gpio.Low {
		t.Errorf("relay on → pin %v, want low (active-low)", relay.Read())
	}
	if _, err := h.emu.Hub.PatchDesired(dev, map[string]any{"outputs": map[string]any{"relay": false}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "desired outputs.relay applied and reported", 20*time.Second, func() bool {
		tw, err := h.emu.Hub.Twin(dev)
		if err != nil {
			return false
		}
		fg, _ := tw.Reported["fieldgate"].(map[string]any)
		outs, _ := fg["outputs"].(map[string]any)
		ack, _ := tw.Reported["outputs"].(map[string]any)
		return relay.Read() == gpio.High && outs["relay"] == false && ack["relay"] != nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if relay.Read() != gpio.High {
		t.Errorf("relay not restored to its safe state at shutdown: %v", relay.Read())
	}
}

// nopClose keeps the shared fake bus open across sensor reopenings.
type nopClose struct{ *hwtest.RegisterBus }

func (nopClose) Close() error { return nil }
