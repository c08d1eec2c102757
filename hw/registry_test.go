package hw

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/config"
)

// TestKindsMatchConfig: every kind the configuration accepts has a factory,
// and every registered factory has a configuration schema.
func TestKindsMatchConfig(t *testing.T) {
	if got, want := Kinds(), config.SensorKinds(); !reflect.DeepEqual(got, want) {
		t.Fatalf("hw sensor kinds %v != config sensor kinds %v", got, want)
	}
	cfgOutputs := map[string]bool{}
	for _, k := range config.OutputKinds() {
		cfgOutputs[k] = true
	}
	for _, k := range OutputKinds() {
		if !cfgOutputs[k] {
			t.Errorf("output kind %s is registered but config does not accept it", k)
		}
	}
}

func TestOpenSensor(t *testing.T) {
	clk := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	tests := []struct {
		name    string
		cfg     config.Sensor
		wantErr []string
	}{
		{"simulated", config.Sensor{Name: "env", Kind: "simulated", Values: []string{"temperature_c"}}, nil},
		{"unknown kind", config.Sensor{Name: "th", Kind: "sht99"}, []string{`sensor "th"`, `kind "sht99"`, "available: ads1115, aht20, bme280, bmp280, ds18b20, gpio_in, i2c_register, ina219, mcp9808, simulated, system"}},
		{"factory error", config.Sensor{Name: "empty", Kind: "simulated"}, []string{"no values"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenSensor(tt.cfg, Env{Clock: clk})
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not contain %q", err, w)
					}
				}
				if !strings.HasPrefix(err.Error(), "hw: ") {
					t.Fatalf("error %q lacks the hw: prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Name() != tt.cfg.Name || s.Kind() != tt.cfg.Kind {
				t.Fatalf("opened %s/%s", s.Name(), s.Kind())
			}
			v, err := s.Read(context.Background())
			if err != nil || len(v) != 1 {
				t.Fatalf("Read = %v, %v", v, err)
			}
		})
	}
}

func TestOpenOutputUnknown(t *testing.T) {
	_, err := OpenOutput(config.Output{Name: "relay", Kind: "pwm"}, Env{})
	if err == nil || !strings.Contains(err.Error(), `output "relay"`) || !strings.Contains(err.Error(), `"pwm"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestRegisterOutputAndSensor(t *testing.T) {
	// Register under names no real kind uses; the registry is global.
	t.Cleanup(func() {
		mu.Lock()
		delete(outputs, "test-out")
		mu.Unlock()
	})
	RegisterOutput("test-out", func(cfg config.Output, env Env) (Output, error) {
		if env.Logger == nil || env.Clock == nil {
			t.Error("factory got an Env without defaults")
		}
		return &fakeOutput{name: cfg.Name}, nil
	})
	o, err := OpenOutput(config.Output{Name: "r", Kind: "test-out"}, Env{})
	if err != nil || o.Name() != "r" {
		t.Fatalf("OpenOutput = %v, %v", o, err)
	}
	if !reflect.DeepEqual(OutputKinds(), []string{"gpio", "test-out"}) {
		t.Fatalf("OutputKinds() = %v", OutputKinds())
	}
	panics := []struct {
		name string
		f    func()
	}{
		{"duplicate sensor", func() { RegisterSensor("simulated", func(config.Sensor, Env) (Sensor, error) { return nil, nil }) }},
		{"nil sensor factory", func() { RegisterSensor("x", nil) }},
		{"empty sensor kind", func() { RegisterSensor("", func(config.Sensor, Env) (Sensor, error) { return nil, nil }) }},
		{"duplicate output", func() { RegisterOutput("test-out", func(config.Output, Env) (Output, error) { return nil, nil }) }},
		{"nil output factory", func() { RegisterOutput("y", nil) }},
	}
	for _, p := range panics {
		t.Run(p.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			p.f()
		})
	}
}

type fakeOutput struct {
	name string
	on   bool
}

func (f *fakeOutput) Name() string      { return f.name }
func (f *fakeOutput) Set(on bool) error { f.on = on; return nil }
func (f *fakeOutput) State() bool       { return f.on }
func (f *fakeOutput) Close() error      { f.on = false; return nil }

func TestKindsAt(t *testing.T) {
	tests := []struct {
		addr uint16
		want string
	}{
		{0x18, "mcp9808"}, {0x1f, "mcp9808"}, {0x38, "aht20"}, {0x40, "ina219"},
		{0x48, "ina219,ads1115"}, {0x76, "bme280/bmp280"}, {0x77, "bme280/bmp280"}, {0x50, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("0x%02x", tt.addr), func(t *testing.T) {
			if got := strings.Join(KindsAt(tt.addr), ","); got != tt.want {
				t.Errorf("KindsAt(0x%02x) = %q; want %q", tt.addr, got, tt.want)
			}
		})
	}
}
