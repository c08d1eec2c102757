package hw

import (
	"context"
	"errors"
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("bme280", func(c config.Sensor, env Env) (Sensor, error) { return newBMx280(c, env, true) })
	RegisterSensor("bmp280", func(c config.Sensor, env Env) (Sensor, error) { return newBMx280(c, env, false) })
}

// bmx280 reads a Bosch BME280/BMP280 through periph's bmxx80 driver:
// temperature_c, pressure_hpa and (BME280) humidity_pct.
type bmx280 struct {
	name, kind string
	bus        i2c.BusCloser
	dev        *bmxx80.Dev
	humidity   bool
}

func newBMx280(c config.Sensor, env Env, bme bool) (*bmx280, error) {
	env = env.withDefaults()
	bus, err := env.I2C(c.Bus)
	if err != nil {
		return nil, err
	}
	addr := c.Address
	if addr == 0 {
		addr = 0x76
	}
	dev, err := bmxx80.NewI2C(bus, uint16(addr), &bmxx80.DefaultOpts)
	if err != nil {
		bus.Close()
		return nil, i2cError(c.Kind, c.Bus, addr, err)
	}
	return &bmx280{name: c.Name, kind: c.Kind, bus: bus, dev: dev, humidity: bme}, nil
}

func (s *bmx280) Name() string { return s.name }
func (s *bmx280) Kind() string { return s.kind }

// Read takes one forced-mode measurement.
func (s *bmx280) Read(ctx context.Context) (Values, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		return nil, fmt.Errorf("hw: %s %s: %w", s.kind, s.name, err)
	}
	v := Values{
		"temperature_c": e.Temperature.Celsius(),
		"pressure_hpa":  float64(e.Pressure) / float64(100*physic.Pascal),
	}
	if s.humidity {
		v["humidity_pct"] = float64(e.Humidity) / float64(physic.PercentRH)
	}
	if v["temperature_c"] < -45 || v["temperature_c"] > 90 || v["pressure_hpa"] < 250 || v["pressure_hpa"] > 1150 {
		return nil, fmt.Errorf("hw: %s %s: reading out of the chip's range (%.2f °C, %.2f hPa): bad calibration or wiring", s.kind, s.name, v["temperature_c"], v["pressure_hpa"])
	}
	return v, nil
}

// Close puts the chip to sleep and releases the bus.
func (s *bmx280) Close() error {
	return errors.Join(s.dev.Halt(), s.bus.Close())
}

var _ Sensor = (*bmx280)(nil)
