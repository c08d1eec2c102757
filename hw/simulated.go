package hw

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/config"
)

// KindSimulated is the kind name of Simulated.
const KindSimulated = "simulated"

func init() {
	RegisterSensor(KindSimulated, func(cfg config.Sensor, env Env) (Sensor, error) {
		return NewSimulated(cfg, env)
	})
}

// waveform is base + amplitude·sin(2π·phase + shift) + noise·u, u ∈ [-1, 1).
type waveform struct {
	base, amplitude, shift, noise float64
	lo, hi                        float64 // clamp; lo == hi means none
}

// waveforms are the well-known value names; any other name gets a generic
// waveform (50 ± 10) with a phase derived from the name.
var waveforms = map[string]waveform{
	"temperature_c": {base: 21, amplitude: 3, shift: 0, noise: 0.05},
	"humidity_pct":  {base: 45, amplitude: 10, shift: math.Pi, noise: 0.2, lo: 0, hi: 100},
	"pressure_hpa":  {base: 1013.25, amplitude: 2, shift: math.Pi / 2, noise: 0.05},
	"voltage_v":     {base: 12, amplitude: 0.3, shift: math.Pi / 3, noise: 0.01},
	"current_a":     {base: 1.5, amplitude: 0.5, shift: 2 * math.Pi / 3, noise: 0.01, lo: 0, hi: math.MaxFloat64},
}

func waveformFor(name string) waveform {
	if w, ok := waveforms[name]; ok {
		return w
	}
	w := waveform{base: 50, amplitude: 10, shift: 2 * math.Pi * float64(hash64(name)%1000) / 1000, noise: 0.1}
	if strings.HasSuffix(name, "_pct") {
		w.lo, w.hi = 0, 100
	}
	return w
}

// Simulated is a sensor producing deterministic waveforms for demos and
// tests: each value is a sine over the configured period plus small noise
// derived from the seed, the value name and the millisecond of the reading,
// all computed from the clock, so a fake clock gives exact, repeatable
// values. temperature_c is 21 ± 3 °C, humidity_pct 45 ± 10 % (in antiphase),
// pressure_hpa 1013.25 ± 2, voltage_v 12 ± 0.3, current_a 1.5 ± 0.5, any
// other name 50 ± 10. Values are rounded to 3 decimals.
type Simulated struct {
	name   string
	values []string
	period time.Duration
	seed   int64
	clock  clockwork.Clock

	// mu guards closed.
	mu     sync.Mutex
	closed bool
}

// NewSimulated opens a simulated sensor. cfg.Values must be non-empty;
// cfg.Period defaults to config.DefaultSimulatedPeriod.
func NewSimulated(cfg config.Sensor, env Env) (*Simulated, error) {
	env = env.withDefaults()
	if len(cfg.Values) == 0 {
		return nil, fmt.Errorf("hw: simulated sensor %q: no values configured — add values = [\"temperature_c\"]", cfg.Name)
	}
	period := cfg.Period.Duration
	if period <= 0 {
		period = config.DefaultSimulatedPeriod
	}
	return &Simulated{
		name:   cfg.Name,
		values: slices.Clone(cfg.Values),
		period: period,
		seed:   cfg.Seed,
		clock:  env.Clock,
	}, nil
}

// Name implements Sensor.
func (s *Simulated) Name() string { return s.name }

// Kind implements Sensor.
func (s *Simulated) Kind() string { return KindSimulated }

// Read implements Sensor: the values at the clock's current time.
func (s *Simulated) Read(ctx context.Context) (Values, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hw: simulated sensor %q: %w", s.name, err)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("hw: simulated sensor %q is closed", s.name)
	}
	return s.At(s.clock.Now()), nil
}

// At returns the values the sensor reports at time t.
func (s *Simulated) At(t time.Time) Values {
	p := s.period.Nanoseconds()
	n := t.UnixNano()
	phase := float64(((n%p)+p)%p) / float64(p)
	ms := uint64(t.UnixMilli())
	out := make(Values, len(s.values))
	for _, name := range s.values {
		w := waveformFor(name)
		u := unit(splitmix64(uint64(s.seed) ^ hash64(name) ^ splitmix64(ms)))
		v := w.base + w.amplitude*math.Sin(2*math.Pi*phase+w.shift) + w.noise*u
		if w.lo != w.hi {
			v = math.Max(w.lo, math.Min(w.hi, v))
		}
		out[name] = math.Round(v*1000) / 1000
	}
	return out
}

// Close implements Sensor.
func (s *Simulated) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// splitmix64 is a small, well-mixed integer hash (Steele, Lea, Flood 2014).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// unit maps a hash to [-1, 1).
func unit(x uint64) float64 {
	return float64(x>>11)/float64(1<<53)*2 - 1
}

var _ Sensor = (*Simulated)(nil)
