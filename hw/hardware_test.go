package hw_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
	"github.com/fieldgate/fieldgate/hw/hwtest"
)

// bme280Chip loads a fake BME280 with the calibration and raw readings of
// the Bosch datasheet's worked example (section 8.2: T = 25.08 °C,
// p = 100653.27 Pa) and humidity parameters whose result (54.997 %RH) was
// computed with the datasheet's integer formula outside periph.
func bme280Chip(bus *hwtest.RegisterBus, addr uint16, chipID byte) {
	bus.Set(addr, 0xD0, chipID)
	cal := make([]byte, 0xA2-0x88)
	le := binary.LittleEndian
	words := []uint16{27504, 26435, uint16(0xFFFF - 1000 + 1), 36477, uint16(0x10000 - 10685), 3024, 2855, 140, uint16(0x10000 - 7), 15500, uint16(0x10000 - 14600), 6000}
	for i, w := range words {
		le.PutUint16(cal[2*i:], w)
	}
	cal[0xA1-0x88] = 75 // H1
	bus.Set(addr, 0x88, cal...)
	// H2=362 (s16), H3=0, H4=313 (E4<<4 | E5&0xF), H5=50 (E6<<4 | E5>>4), H6=30.
	bus.Set(addr, 0xE1, 362&0xff, 362>>8, 0, 313>>4, byte(313&0xF)|byte((50&0xF)<<4), 50>>4, 30)
	// adc_P = 415148, adc_T = 519888 (20 bits, left-aligned), adc_H = 30000.
	bus.Set(addr, 0xF7, 0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 30000>>8, 30000&0xff)
}

func i2cEnv(bus *hwtest.RegisterBus) hw.Env {
	return hw.Env{I2C: func(string) (i2c.BusCloser, error) { return bus, nil }}
}

func TestBMx280(t *testing.T) {
	tests := []struct {
		name    string
		kind    string
		chipID  byte
		at      uint16
		cfgAddr int
		want    hw.Values
		wantErr string
	}{
		{"bme280 datasheet example", "bme280", 0x60, 0x76, 0x76, hw.Values{"temperature_c": 25.08, "pressure_hpa": 1006.5327, "humidity_pct": 54.997}, ""},
		{"bme280 at 0x77", "bme280", 0x60, 0x77, 0x77, hw.Values{"temperature_c": 25.08, "pressure_hpa": 1006.5327, "humidity_pct": 54.997}, ""},
		{"bmp280 has no humidity", "bmp280", 0x58, 0x76, 0, hw.Values{"temperature_c": 25.08, "pressure_hpa": 1006.5327}, ""},
		{"nothing at the address", "bme280", 0x60, 0x77, 0x76, nil, "no device at 0x76 on /dev/i2c-1 — check wiring or run `fieldgate sensors scan --bus 1`"},
		{"another chip answers", "bme280", 0x42, 0x76, 0x76, nil, "no device at 0x76"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := hwtest.NewRegisterBus()
			bme280Chip(bus, tt.at, tt.chipID)
			s, err := hw.OpenSensor(config.Sensor{Name: "env", Kind: tt.kind, Bus: "1", Address: tt.cfgAddr}, i2cEnv(bus))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("OpenSensor err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(v) != len(tt.want) {
				t.Errorf("values = %v, want keys of %v", v, tt.want)
			}
			for k, want := range tt.want {
				if math.Abs(v[k]-want) > 0.01 {
					t.Errorf("%s = %.4f, want %.4f", k, v[k], want)
				}
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

func TestBMx280Errors(t *testing.T) {
	t.Run("permission denied", func(t *testing.T) {
		bus := hwtest.NewRegisterBus()
		bus.Err = os.ErrPermission
		_, err := hw.OpenSensor(config.Sensor{Name: "env", Kind: "bme280", Bus: "1", Address: 0x76}, i2cEnv(bus))
		if err == nil || !strings.Contains(err.Error(), "group i2c") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("out of range reading", func(t *testing.T) {
		bus := hwtest.NewRegisterBus()
		bme280Chip(bus, 0x76, 0x60)
		bus.Set(0x76, 0xF7, 0xFF, 0xFF, 0xF0, 0xFF, 0xFF, 0xF0) // garbage ADC values
		s, err := hw.OpenSensor(config.Sensor{Name: "env", Kind: "bme280", Bus: "1", Address: 0x76}, i2cEnv(bus))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "out of the chip's range") {
			t.Fatalf("Read err = %v", err)
		}
	})
}

func gpioEnv(clk clockwork.Clock, pins ...*gpiotest.Pin) hw.Env {
	return hw.Env{Clock: clk, GPIO: func(name string) (gpio.PinIO, error) {
		for _, p := range pins {
			if p.N == name {
				return p, nil
			}
		}
		return nil, errors.New("no such pin " + name)
	}}
}

func TestGPIOInEdgesAndDebounce(t *testing.T) {
	clk := clockwork.NewFakeClock()
	pin := &gpiotest.Pin{N: "GPIO17", EdgesChan: make(chan gpio.Level)}
	s, err := hw.OpenSensor(config.Sensor{Name: "door", Kind: "gpio_in", Pin: "GPIO17", Pull: "up", Edge: "both",
		Debounce: config.Duration{Duration: 20 * time.Millisecond}}, gpioEnv(clk, pin))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if pin.P != gpio.PullUp {
		t.Errorf("pull = %v", pin.P)
	}
	v, err := s.Read(context.Background())
	if err != nil || v["level"] != 1 {
		t.Fatalf("level with pull-up = %v, %v", v, err)
	}
	events := s.(hw.EdgeSensor).Events()
	edge := func(l gpio.Level) {
		select {
		case pin.EdgesChan <- l:
		case <-time.After(5 * time.Second):
			t.Fatal("edge not consumed")
		}
	}
	expect := func(level float64) {
		t.Helper()
		select {
		case v := <-events:
			if v["level"] != level || v["edge"] != 1 {
				t.Fatalf("event = %v, want level %v", v, level)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event for level %v", level)
		}
	}
	expectNone := func() {
		t.Helper()
		select {
		case v := <-events:
			t.Fatalf("unexpected event %v", v)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Door opens: one clean edge.
	edge(gpio.Low)
	expect(0)
	// A bounce burst within the debounce window: ignored.
	clk.Advance(5 * time.Millisecond)
	edge(gpio.High)
	clk.Advance(5 * time.Millisecond)
	edge(gpio.Low)
	expectNone()
	// Door closes after the window.
	clk.Advance(time.Second)
	edge(gpio.High)
	expect(1)
}

func TestGPIOInNoEdges(t *testing.T) {
	pin := &gpiotest.Pin{N: "GPIO5", L: gpio.Low}
	s, err := hw.OpenSensor(config.Sensor{Name: "btn", Kind: "gpio_in", Pin: "GPIO5", Pull: "none", Edge: "none"}, gpioEnv(clockwork.NewFakeClock(), pin))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Read(context.Background())
	if v["level"] != 0 {
		t.Errorf("level = %v", v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := hw.OpenSensor(config.Sensor{Name: "x", Kind: "gpio_in", Pin: "GPIO99"}, gpioEnv(nil, pin)); err == nil {
		t.Error("missing pin: want error")
	}
}

func TestGPIOOutput(t *testing.T) {
	tests := []struct {
		name      string
		initial   string
		activeLow bool
		safeLevel gpio.Level
		onLevel   gpio.Level
	}{
		{"active high, safe low", "low", false, gpio.Low, gpio.High},
		{"active low relay board, safe low level means on", "high", true, gpio.High, gpio.Low},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pin := &gpiotest.Pin{N: "GPIO27"}
			o, err := hw.OpenOutput(config.Output{Name: "relay", Kind: "gpio", Pin: "GPIO27", Initial: tt.initial, ActiveLow: tt.activeLow}, gpioEnv(nil, pin))
			if err != nil {
				t.Fatal(err)
			}
			if pin.L != tt.safeLevel {
				t.Errorf("level after open = %v, want safe %v", pin.L, tt.safeLevel)
			}
			if err := o.Set(true); err != nil || pin.L != tt.onLevel || !o.State() {
				t.Errorf("Set(true): level %v state %v err %v", pin.L, o.State(), err)
			}
			if err := o.Close(); err != nil || pin.L != tt.safeLevel {
				t.Errorf("Close: level %v err %v, want safe %v", pin.L, err, tt.safeLevel)
			}
		})
	}
}

func TestSystemSensor(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"sys/class/thermal/thermal_zone0/temp": "48312\n",
		"proc/loadavg":                         "0.42 0.30 0.25 1/123 4567\n",
		"proc/meminfo":                         "MemTotal:        1000000 kB\nMemFree:  100 kB\nMemAvailable:     250000 kB\n",
		"proc/uptime":                          "12345.67 100.00\n",
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := hw.OpenSensor(config.Sensor{Name: "gw", Kind: "system"}, hw.Env{Root: root, StateDir: root})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := hw.Values{"soc_temperature_c": 48.312, "load_1m": 0.42, "mem_available_pct": 25, "uptime_s": 12345.67}
	for k, w := range want {
		if math.Abs(v[k]-w) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, v[k], w)
		}
	}
	if d := v["disk_free_pct"]; d <= 0 || d > 100 {
		t.Errorf("disk_free_pct = %v", d)
	}
	empty, _ := hw.OpenSensor(config.Sensor{Name: "gw", Kind: "system"}, hw.Env{Root: t.TempDir(), StateDir: "/nonexistent-dir"})
	if _, err := empty.Read(context.Background()); err == nil {
		t.Error("nothing readable: want error")
	}
}
