package hw_test

import (
	"context"
	"math"
	"os"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
	"github.com/fieldgate/fieldgate/hw/hwtest"
)

// playbackEnv hands sensors a periph Playback bus replaying ops.
func playbackEnv(ops []i2ctest.IO) (hw.Env, *i2ctest.Playback) {
	p := &i2ctest.Playback{Ops: ops, DontPanic: true}
	return hw.Env{I2C: func(string) (i2c.BusCloser, error) { return p, nil }}, p
}

// kindCase is one table row shared by the I2C kinds' tests: the bus traffic
// of open + one Read + Close, and the expected values or error.
type kindCase struct {
	name    string
	cfg     config.Sensor
	ops     []i2ctest.IO
	want    hw.Values
	tol     float64
	openErr string // error of OpenSensor containing this
	readErr string // error of Read containing this
}

func runKindCases(t *testing.T, tests []kindCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, p := playbackEnv(tt.ops)
			s, err := hw.OpenSensor(tt.cfg, env)
			if tt.openErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.openErr) {
					t.Fatalf("OpenSensor err = %v; want %q", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenSensor: %v", err)
			}
			v, err := s.Read(context.Background())
			if tt.readErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.readErr) {
					t.Fatalf("Read = %v, %v; want error %q", v, err, tt.readErr)
				}
			} else {
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if len(v) != len(tt.want) {
					t.Errorf("values = %v; want the keys of %v", v, tt.want)
				}
				for k, want := range tt.want {
					got, ok := v[k]
					if !ok || math.Abs(got-want) > tt.tol || math.IsNaN(got) {
						t.Errorf("%s = %v (present %v); want %v ± %v", k, got, ok, want, tt.tol)
					}
				}
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close (all bus traffic replayed): %v", err)
			}
			if p.Count != len(p.Ops) {
				t.Errorf("replayed %d of %d bus operations", p.Count, len(p.Ops))
			}
		})
	}
}

// TestI2CKindsMissingChipAndPermission: every I2C kind names the fix when
// nothing answers at the address or the bus is not accessible.
func TestI2CKindsMissingChipAndPermission(t *testing.T) {
	kinds := []config.Sensor{
		{Name: "th", Kind: "aht20", Bus: "1", Address: 0x38},
		{Name: "t", Kind: "mcp9808", Bus: "1", Address: 0x18},
		{Name: "pwr", Kind: "ina219", Bus: "1", Address: 0x40},
		{Name: "adc", Kind: "ads1115", Bus: "1", Address: 0x48, Channels: []config.ADCChannel{{Input: "A0"}}},
		{Name: "reg", Kind: "i2c_register", Bus: "1", Address: 0x48, Value: "x", Length: 2},
	}
	for _, c := range kinds {
		t.Run(c.Kind+" no device", func(t *testing.T) {
			bus := hwtest.NewRegisterBus() // nothing on it: every address NACKs
			_, err := hw.OpenSensor(c, i2cEnv(bus))
			want := "no device at 0x" + strings.TrimPrefix(strings.ToLower(hexAddr(c.Address)), "0x") + " on /dev/i2c-1 — check wiring or run `fieldgate sensors scan --bus 1`"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v; want %q", err, want)
			}
		})
		t.Run(c.Kind+" permission denied", func(t *testing.T) {
			bus := hwtest.NewRegisterBus()
			bus.Err = os.ErrPermission
			_, err := hw.OpenSensor(c, i2cEnv(bus))
			if err == nil || !strings.Contains(err.Error(), "add the service user to group i2c") {
				t.Fatalf("err = %v; want the group i2c hint", err)
			}
		})
	}
}

func hexAddr(a int) string {
	const digits = "0123456789abcdef"
	return "0x" + string(digits[a>>4]) + string(digits[a&0xf])
}
