package hw

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/agent/config"
)

// w1Tree builds {root}/sys/bus/w1/devices with one directory per probe and
// the given files in it.
func w1Tree(t *testing.T, probes map[string]map[string]string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, w1Devices)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The bus master is listed too; it is not a probe.
	if err := os.MkdirAll(filepath.Join(dir, "w1_bus_master1"), 0o755); err != nil {
		t.Fatal(err)
	}
	for id, files := range probes {
		if err := os.MkdirAll(filepath.Join(dir, id), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, id, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

const (
	w1SlaveOK  = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
	w1SlaveBad = "72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
)

func TestDS18B20(t *testing.T) {
	tests := []struct {
		name    string
		probes  map[string]map[string]string
		device  string
		noBus   bool
		want    Values
		openErr string
		readErr string
		logged  string
	}{
		{name: "temperature file", probes: map[string]map[string]string{"28-0316a2795aff": {"temperature": "21562\n"}},
			want: Values{"temperature_c": 21.562}},
		{name: "w1_slave on older kernels", probes: map[string]map[string]string{"28-0316a2795aff": {"w1_slave": w1SlaveOK}},
			want: Values{"temperature_c": 23.125}},
		{name: "below zero", probes: map[string]map[string]string{"28-0316a2795aff": {"temperature": "-10125"}},
			want: Values{"temperature_c": -10.125}},
		{name: "several probes", probes: map[string]map[string]string{
			"28-000000000001": {"temperature": "20000"}, "28-000000000002": {"w1_slave": w1SlaveOK}},
			want: Values{"temperature_c_000000000001": 20, "temperature_c_000000000002": 23.125}},
		{name: "one probe selected", device: "28-000000000002", probes: map[string]map[string]string{
			"28-000000000001": {"temperature": "20000"}, "28-000000000002": {"temperature": "19000"}},
			want: Values{"temperature_c": 19}},
		{name: "one bad probe among several", probes: map[string]map[string]string{
			"28-000000000001": {"temperature": "85000"}, "28-000000000002": {"temperature": "19000"}},
			want: Values{"temperature_c_000000000002": 19}, logged: "28-000000000001"},
		{name: "CRC error", probes: map[string]map[string]string{"28-0316a2795aff": {"w1_slave": w1SlaveBad}}, readErr: "CRC error"},
		{name: "power-on value", probes: map[string]map[string]string{"28-0316a2795aff": {"temperature": "85000"}}, readErr: "power-on value 85 °C"},
		{name: "out of range", probes: map[string]map[string]string{"28-0316a2795aff": {"temperature": "-127000"}}, readErr: "outside the DS18B20's"},
		{name: "no probes", probes: nil, openErr: "no DS18B20 found", readErr: ""},
		{name: "selected probe missing", device: "28-0000000000ff", probes: map[string]map[string]string{"28-000000000001": {"temperature": "1"}},
			openErr: "probe 28-0000000000ff not found"},
		{name: "1-wire not enabled", noBus: true, openErr: "dtoverlay=w1-gpio"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if !tt.noBus {
				root = w1Tree(t, tt.probes)
			}
			var logs bytes.Buffer
			env := Env{Root: root, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			s, err := OpenSensor(config.Sensor{Name: "water", Kind: "ds18b20", Device: tt.device}, env)
			if tt.openErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.openErr) {
					t.Fatalf("OpenSensor err = %v; want %q", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			v, err := s.Read(context.Background())
			if tt.readErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.readErr) {
					t.Fatalf("Read = %v, %v; want error %q", v, err, tt.readErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(v) != len(tt.want) {
				t.Fatalf("values = %v; want %v", v, tt.want)
			}
			for k, w := range tt.want {
				if got, ok := v[k]; !ok || got != w {
					t.Errorf("%s = %v; want %v", k, got, w)
				}
			}
			if tt.logged != "" {
				if n := strings.Count(logs.String(), "probes failing"); n != 1 || !strings.Contains(logs.String(), "probes="+tt.logged) {
					t.Errorf("failing probe logged %d times; want once, naming %s:\n%s", n, tt.logged, logs.String())
				}
				// The same failure again is not logged again.
				if _, err := s.Read(context.Background()); err != nil {
					t.Fatal(err)
				}
				if n := strings.Count(logs.String(), "probes failing"); n != 1 {
					t.Errorf("after a second read the failing probe is logged %d times; want once", n)
				}
				// The probe recovers: its value is back and the recovery is logged once.
				if err := os.WriteFile(filepath.Join(root, w1Devices, tt.logged, "temperature"), []byte("18500\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				v, err := s.Read(context.Background())
				if err != nil || len(v) != 2 {
					t.Fatalf("after recovery Read = %v, %v; want both probes", v, err)
				}
				if n := strings.Count(logs.String(), "all reading again"); n != 1 {
					t.Errorf("recovery logged %d times; want once:\n%s", n, logs.String())
				}
			}
		})
	}
}

func TestParseW1(t *testing.T) {
	tests := []struct {
		kind, in string
		want     int
		err      error
	}{
		{"temperature", "23125\n", 23125, nil},
		{"temperature", "-55000", -55000, nil},
		{"w1_slave", w1SlaveOK, 23125, nil},
		{"w1_slave", w1SlaveBad, 0, errW1CRC},
		{"temperature", "85000", 0, errW1PowerOn},
	}
	for _, tt := range tests {
		t.Run(tt.kind+" "+strings.TrimSpace(tt.in), func(t *testing.T) {
			got, err := parseW1(tt.kind, tt.in)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Fatalf("parseW1 = %d, %v; want %d, %v", got, err, tt.want, tt.err)
			}
		})
	}
	for _, bad := range []string{"", "abc", "1\n2\n3", "x : crc=00 MAYBE\nt=1", "x : crc=00 YES\nnothing"} {
		if _, err := parseW1("w1_slave", bad); err == nil {
			t.Errorf("parseW1(%q) accepted", bad)
		}
	}
}

func FuzzParseW1(f *testing.F) {
	f.Add("temperature", "23125\n")
	f.Add("w1_slave", w1SlaveOK)
	f.Add("w1_slave", w1SlaveBad)
	f.Fuzz(func(t *testing.T, kind, s string) {
		milli, err := parseW1(kind, s)
		if err == nil && (milli < -55000 || milli > 125000 || milli == 85000) {
			t.Fatalf("parseW1 accepted %d", milli)
		}
	})
}
