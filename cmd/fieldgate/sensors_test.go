package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/fieldgate/fieldgate/hw"
	"github.com/fieldgate/fieldgate/hw/hwtest"
)

func TestSensorsCommand(t *testing.T) {
	bus := hwtest.NewRegisterBus()
	bus.Set(0x76, 0xD0, 0x58) // a BMP280 …
	bus.Set(0x76, 0x88, 0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, 0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B, 0x27, 0x0B, 0x8C, 0x00, 0xF9, 0xFF, 0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17)
	bus.Set(0x76, 0xF7, 0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00)
	bus.Set(0x48, 0x00, 0) // … and something at 0x48
	old := sensorsEnv
	sensorsEnv = func(log *slog.Logger) hw.Env {
		return hw.Env{Logger: log, I2C: func(string) (i2c.BusCloser, error) { return nopBus{bus}, nil }}
	}
	t.Cleanup(func() { sensorsEnv = old })
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte(`[provisioning]
source = "manual"
hub_host = "h.azure-devices.net"
device_id = "d"
[provisioning.attestation]
key_file = "k"
[[sensor]]
name = "env"
kind = "bmp280"
bus = "1"
[[sensor]]
name = "missing"
kind = "bme280"
bus = "1"
address = 0x77
`), 0o600)
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"read all", []string{"sensors", "--config", cfg}, 1, []string{"env", "temperature_c=25.08", "pressure_hpa=1007", "missing", "no device at 0x77"}},
		{"json", []string{"sensors", "--config", cfg, "--json"}, 1, []string{`"temperature_c": 25.08`, `"error": "hw: bme280: no device at 0x77`}},
		{"scan", []string{"sensors", "scan", "--bus", "1"}, 0, []string{"40: -- -- -- -- -- -- -- -- 48", "70: -- -- -- -- -- -- 76", "2 device(s)", "0x48  ina219, ads1115", "0x76  bme280/bmp280"}},
		{"scan needs a bus", []string{"sensors", "scan"}, 2, nil},
		{"record", []string{"sensors", "record", "--config", cfg, "--sensor", "env"}, 0, []string{"[]i2ctest.IO{", "{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			e := &env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, now: time.Now}
			code := runMain(context.Background(), tt.args, e)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

type nopBus struct{ *hwtest.RegisterBus }

func (nopBus) Close() error { return nil }
