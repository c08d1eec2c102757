// Package hw owns the agent's view of hardware: the Sensor, EdgeSensor and
// Output interfaces, the registry that maps a configured kind ("simulated",
// and the periph-backed kinds of the hardware issue) to a factory, and one
// file per kind. Kinds register themselves from init; the agent opens
// sensors and outputs with OpenSensor and OpenOutput from their
// agent/config tables.
//
// Readings are plain maps from SI-style value names with units
// ("temperature_c", "humidity_pct", "pressure_hpa", "voltage_v") to numbers.
package hw

import (
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"

	"context"
	"io"
	"log/slog"

	"github.com/jonboulle/clockwork"
)

// Values is one reading: value name (with unit suffix) → value.
type Values map[string]float64

// Sensor is one configured sensor.
type Sensor interface {
	// Name is the configured sensor name.
	Name() string
	// Kind is the configured kind, e.g. "simulated".
	Kind() string
	// Read takes one sample. Errors name the sensor and carry a fix hint
	// when one is known (wiring, permissions, bus not enabled).
	Read(ctx context.Context) (Values, error)
	// Close releases the sensor; Read fails afterwards.
	Close() error
}

// EdgeSensor is implemented by sensors that also emit event readings (gpio_in
// edges) between samples. The channel is closed by Close.
type EdgeSensor interface {
	Sensor
	Events() <-chan Values
}

// Output is one configured actuator (a relay on a GPIO line).
type Output interface {
	// Name is the configured output name.
	Name() string
	// Set switches the output on or off (logical state; active_low is
	// applied by the implementation).
	Set(on bool) error
	// State is the last state set.
	State() bool
	// Close restores the safe (initial) state and releases the line.
	Close() error
}

// Env carries what a sensor or output may use from its surroundings.
type Env struct {
	// Logger receives the kind's diagnostics; nil discards them.
	Logger *slog.Logger
	// Clock drives every time-dependent behaviour; nil means the real clock.
	Clock clockwork.Clock
	// I2C opens an I2C bus by number or device path; nil means periph's
	// registry after host initialisation (tests pass a fake bus).
	I2C func(bus string) (i2c.BusCloser, error)
	// GPIO finds a GPIO line by name; nil means periph's registry after host
	// initialisation (tests pass gpiotest pins).
	GPIO func(name string) (gpio.PinIO, error)
	// Root prefixes /proc and /sys paths (tests); "" means "/".
	Root string
	// StateDir is reported on by the system sensor (disk free).
	StateDir string
}

// withDefaults returns env with a discarding logger and the real clock
// filled in.
func (e Env) withDefaults() Env {
	if e.Logger == nil {
		e.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if e.Clock == nil {
		e.Clock = clockwork.NewRealClock()
	}
	if e.I2C == nil {
		e.I2C = openI2C(e.Logger)
	}
	if e.GPIO == nil {
		e.GPIO = openGPIO(e.Logger)
	}
	if e.Root == "" {
		e.Root = "/"
	}
	return e
}
