package hw

import (
	"context"
	"errors"
	"fmt"
	"math"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ina219"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("ina219", func(c config.Sensor, env Env) (Sensor, error) { return newINA219(c, env) })
}

// ina219Sensor reads a TI INA219 through periph's ina219 driver:
// bus_voltage_v, shunt_voltage_v, current_a and power_w.
type ina219Sensor struct {
	name string
	bus  i2c.BusCloser
	dev  *ina219.Dev
}

func newINA219(c config.Sensor, env Env) (*ina219Sensor, error) {
	addr, err := chipAddress(c, 0x40, 0x40, 0x4f, "pins A0 and A1")
	if err != nil {
		return nil, err
	}
	shunt, maxI := c.ShuntOhms, c.MaxCurrentA
	if shunt == 0 {
		shunt = config.DefaultShuntOhms
	}
	if maxI == 0 {
		maxI = config.DefaultMaxCurrentA
	}
	if !(shunt > 0 && shunt <= 100) || !(maxI > 0 && maxI <= 100) {
		return nil, fmt.Errorf("hw: ina219 %s: shunt_ohms %v and max_current_a %v must be more than 0 and at most 100", c.Name, shunt, maxI)
	}
	bus, err := env.I2C(c.Bus)
	if err != nil {
		return nil, err
	}
	dev, err := ina219.New(bus, &ina219.Opts{
		Address:       addr,
		SenseResistor: physic.ElectricResistance(math.Round(shunt * float64(physic.Ohm))),
		MaxCurrent:    physic.ElectricCurrent(math.Round(maxI * float64(physic.Ampere))),
	})
	if err != nil {
		bus.Close()
		if err.Error() == "calibration would exceed maximum scaling" {
			return nil, fmt.Errorf("hw: ina219 %s: shunt_ohms %v with max_current_a %v is below the chip's resolution; raise max_current_a or use a larger shunt: %w", c.Name, shunt, maxI, err)
		}
		return nil, i2cError("ina219", c.Bus, addr, err)
	}
	return &ina219Sensor{name: c.Name, bus: bus, dev: dev}, nil
}

func (s *ina219Sensor) Name() string { return s.name }
func (s *ina219Sensor) Kind() string { return "ina219" }

// Read reads the shunt, bus, current and power registers.
func (s *ina219Sensor) Read(ctx context.Context) (Values, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pm, err := s.dev.Sense()
	if err != nil {
		if err.Error() == "bus voltage register overflow" {
			return nil, fmt.Errorf("hw: ina219 %s: the current or power calculation overflowed: the current exceeds max_current_a or ±320 mV across the shunt; raise max_current_a: %w", s.name, err)
		}
		return nil, fmt.Errorf("hw: ina219 %s: %w", s.name, err)
	}
	v := Values{
		"bus_voltage_v":   float64(pm.Voltage) / float64(physic.Volt),
		"shunt_voltage_v": float64(pm.Shunt) / float64(physic.Volt),
		"current_a":       float64(pm.Current) / float64(physic.Ampere),
		"power_w":         float64(pm.Power) / float64(physic.Watt),
	}
	if v["bus_voltage_v"] > 26 {
		return nil, fmt.Errorf("hw: ina219 %s: bus voltage %.3f V is beyond the chip's 26 V: wiring or a wrong chip at the address", s.name, v["bus_voltage_v"])
	}
	return v, nil
}

// Close releases the bus.
func (s *ina219Sensor) Close() error {
	return errors.Join(s.bus.Close())
}

var _ Sensor = (*ina219Sensor)(nil)
