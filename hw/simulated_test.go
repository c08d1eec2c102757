package hw

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/config"
)

var epoch = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) // a multiple of 10m

func simCfg(values ...string) config.Sensor {
	return config.Sensor{Name: "env", Kind: KindSimulated, Values: values, Period: config.Duration{Duration: 10 * time.Minute}}
}

func TestSimulatedWaveforms(t *testing.T) {
	// At phase 0 and a quarter period the sine terms are known exactly, so
	// each value is base + amplitude·sin(shift[+π/2]) within the noise band.
	tests := []struct {
		name       string
		at         time.Duration // offset into the period
		want, band float64
	}{
		{"temperature_c", 0, 21, 0.05},
		{"temperature_c", 150 * time.Second, 24, 0.05},
		{"temperature_c", 450 * time.Second, 18, 0.05},
		{"humidity_pct", 0, 45, 0.2},
		{"humidity_pct", 150 * time.Second, 35, 0.2},
		{"pressure_hpa", 0, 1015.25, 0.05},
		{"pressure_hpa", 150 * time.Second, 1013.25, 0.05},
		{"voltage_v", 0, 12 + 0.3*math.Sin(math.Pi/3), 0.01},
		{"current_a", 0, 1.5 + 0.5*math.Sin(2*math.Pi/3), 0.01},
	}
	for _, tt := range tests {
		t.Run(tt.name+"@"+tt.at.String(), func(t *testing.T) {
			clk := clockwork.NewFakeClockAt(epoch.Add(tt.at))
			s, err := NewSimulated(simCfg(tt.name), Env{Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			v, err := s.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got := v[tt.name]
			if math.Abs(got-tt.want) > tt.band+0.0005 {
				t.Fatalf("%s at +%v = %v, want %v ± %v", tt.name, tt.at, got, tt.want, tt.band)
			}
			if len(v) != 1 {
				t.Fatalf("values = %v, want only %s", v, tt.name)
			}
		})
	}
}

func TestSimulatedDeterministic(t *testing.T) {
	names := []string{"temperature_c", "humidity_pct", "pressure_hpa", "voltage_v", "current_a", "co2_ppm", "fill_pct"}
	a, _ := NewSimulated(simCfg(names...), Env{})
	b, _ := NewSimulated(simCfg(names...), Env{})
	other := simCfg(names...)
	other.Seed = 42
	c, _ := NewSimulated(other, Env{})
	differs := false
	for i := range 200 {
		at := epoch.Add(time.Duration(i) * 1234567 * time.Microsecond)
		va, vb, vc := a.At(at), b.At(at), c.At(at)
		for _, n := range names {
			if va[n] != vb[n] {
				t.Fatalf("%s at %v: %v vs %v for the same seed", n, at, va[n], vb[n])
			}
			if va[n] != vc[n] {
				differs = true
			}
			if math.Round(va[n]*1000) != va[n]*1000 && math.Abs(math.Round(va[n]*1000)-va[n]*1000) > 1e-6 {
				t.Fatalf("%s = %v is not rounded to 3 decimals", n, va[n])
			}
		}
		if p := va["fill_pct"]; p < 0 || p > 100 {
			t.Fatalf("fill_pct = %v outside 0..100", p)
		}
		if g := va["co2_ppm"]; g < 39.9 || g > 60.1 {
			t.Fatalf("generic value = %v outside 50 ± 10", g)
		}
		if c := va["current_a"]; c < 0 {
			t.Fatalf("current_a = %v is negative", c)
		}
	}
	if !differs {
		t.Fatal("a different seed never changed the noise")
	}
}

func TestSimulatedFollowsTheClock(t *testing.T) {
	clk := clockwork.NewFakeClockAt(epoch)
	s, err := NewSimulated(simCfg("temperature_c"), Env{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, _ := s.Read(ctx)
	again, _ := s.Read(ctx)
	if first["temperature_c"] != again["temperature_c"] {
		t.Fatalf("two reads at the same instant differ: %v %v", first, again)
	}
	clk.Advance(150 * time.Second)
	later, _ := s.Read(ctx)
	if later["temperature_c"]-first["temperature_c"] < 2.8 {
		t.Fatalf("a quarter period later temperature went %v → %v, want ≈ +3", first, later)
	}
	clk.Advance(10 * time.Minute)
	cycle, _ := s.Read(ctx)
	if math.Abs(cycle["temperature_c"]-later["temperature_c"]) > 0.11 {
		t.Fatalf("one period later %v, want ≈ %v", cycle, later)
	}
	// Times before 1970 still give a phase in [0, 1).
	if v := s.At(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC))["temperature_c"]; v < 17.9 || v > 24.1 {
		t.Fatalf("temperature in 1960 = %v", v)
	}
}

func TestSimulatedErrors(t *testing.T) {
	if _, err := NewSimulated(config.Sensor{Name: "x", Kind: KindSimulated}, Env{}); err == nil || !strings.Contains(err.Error(), `values = ["temperature_c"]`) {
		t.Fatalf("no values: err = %v", err)
	}
	s, err := NewSimulated(config.Sensor{Name: "x", Kind: KindSimulated, Values: []string{"a"}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if s.period != config.DefaultSimulatedPeriod {
		t.Fatalf("default period = %v", s.period)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Read(ctx); err == nil {
		t.Fatal("Read with a cancelled context succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Read after Close: %v", err)
	}
	if s.Name() != "x" || s.Kind() != "simulated" {
		t.Fatalf("Name/Kind = %s/%s", s.Name(), s.Kind())
	}
}
