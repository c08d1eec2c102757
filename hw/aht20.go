package hw

import (
	"context"
	"errors"
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/aht20"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("aht20", func(c config.Sensor, env Env) (Sensor, error) { return newAHT20(c, env) })
}

// aht20Addr is the AHT20's only address (it has no address pin).
const aht20Addr = 0x38

// aht20Sensor reads an Aosong AHT20 through periph's aht20 driver (CRC
// checked): temperature_c and humidity_pct.
type aht20Sensor struct {
	name string
	bus  i2c.BusCloser
	dev  *aht20.Dev
}

func newAHT20(c config.Sensor, env Env) (*aht20Sensor, error) {
	if c.Address != 0 && c.Address != aht20Addr {
		return nil, fmt.Errorf("hw: aht20 %s: address 0x%02x: the AHT20 always answers at 0x38; remove the address key", c.Name, c.Address)
	}
	bus, err := env.I2C(c.Bus)
	if err != nil {
		return nil, err
	}
	opts := aht20.DefaultOpts // CRC validation on
	dev, err := aht20.NewI2C(bus, &opts)
	if err != nil {
		bus.Close()
		return nil, i2cError("aht20", c.Bus, aht20Addr, err)
	}
	return &aht20Sensor{name: c.Name, bus: bus, dev: dev}, nil
}

func (s *aht20Sensor) Name() string { return s.name }
func (s *aht20Sensor) Kind() string { return "aht20" }

// Read triggers one measurement (about 80 ms).
func (s *aht20Sensor) Read(ctx context.Context) (Values, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		var crc *aht20.DataCorruptionError
		var uninit *aht20.NotInitializedError
		switch {
		case errors.As(err, &crc):
			return nil, fmt.Errorf("hw: aht20 %s: CRC mismatch (bus noise, long wires or a missing pull-up); the next read retries: %w", s.name, err)
		case errors.As(err, &uninit):
			// A brown-out resets the calibration bit: calibrate again so the
			// next read succeeds.
			if ierr := s.dev.Initialize(); ierr != nil {
				return nil, fmt.Errorf("hw: aht20 %s: the sensor lost its calibration (brown-out?) and re-initialising failed: %w", s.name, ierr)
			}
			return nil, fmt.Errorf("hw: aht20 %s: the sensor had lost its calibration (brown-out?); re-initialised, the next read retries: %w", s.name, err)
		}
		return nil, fmt.Errorf("hw: aht20 %s: %w", s.name, err)
	}
	t := e.Temperature.Celsius()
	h := float64(e.Humidity) / float64(physic.PercentRH)
	if t < -40 || t > 85 || h < 0 || h > 100 {
		return nil, fmt.Errorf("hw: aht20 %s: reading out of the chip's range (%.2f °C, %.2f %%RH): wiring or a failing sensor", s.name, t, h)
	}
	return Values{"temperature_c": t, "humidity_pct": h}, nil
}

// Close releases the bus.
func (s *aht20Sensor) Close() error {
	return errors.Join(s.dev.Halt(), s.bus.Close())
}

var _ Sensor = (*aht20Sensor)(nil)
