package hw

import (
	"context"
	"errors"
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/mcp9808"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("mcp9808", func(c config.Sensor, env Env) (Sensor, error) { return newMCP9808(c, env) })
}

// MCP9808 identification registers (datasheet DS25095A §5.1.4, §5.1.5).
const (
	mcp9808RegManufacturer = 0x06
	mcp9808Manufacturer    = 0x0054
	mcp9808RegDevice       = 0x07
	mcp9808DeviceID        = 0x04
)

// mcp9808Sensor reads a Microchip MCP9808 (±0.25 °C, 0.0625 °C resolution)
// through periph's mcp9808 driver: temperature_c.
type mcp9808Sensor struct {
	name string
	bus  i2c.BusCloser
	dev  *mcp9808.Dev
}

func newMCP9808(c config.Sensor, env Env) (*mcp9808Sensor, error) {
	addr, err := chipAddress(c, 0x18, 0x18, 0x1f, "pins A0–A2")
	if err != nil {
		return nil, err
	}
	bus, err := env.I2C(c.Bus)
	if err != nil {
		return nil, err
	}
	// periph's driver does not check what answers; a wrong chip would give
	// plausible-looking garbage, so the identification registers are read
	// first (this also surfaces a NACK with its cause intact).
	if err := checkMCP9808ID(&i2c.Dev{Bus: bus, Addr: uint16(addr)}); err != nil {
		bus.Close()
		return nil, i2cError("mcp9808", c.Bus, addr, err)
	}
	dev, err := mcp9808.New(bus, &mcp9808.Opts{Addr: addr, Res: mcp9808.Maximum})
	if err != nil {
		bus.Close()
		return nil, i2cError("mcp9808", c.Bus, addr, err)
	}
	return &mcp9808Sensor{name: c.Name, bus: bus, dev: dev}, nil
}

func checkMCP9808ID(d *i2c.Dev) error {
	var b [2]byte
	if err := d.Tx([]byte{mcp9808RegManufacturer}, b[:]); err != nil {
		return err
	}
	if id := uint16(b[0])<<8 | uint16(b[1]); id != mcp9808Manufacturer {
		return fmt.Errorf("unexpected chip id: manufacturer 0x%04x, want 0x%04x", id, mcp9808Manufacturer)
	}
	if err := d.Tx([]byte{mcp9808RegDevice}, b[:]); err != nil {
		return err
	}
	if b[0] != mcp9808DeviceID {
		return fmt.Errorf("unexpected chip id: device 0x%02x, want 0x%02x", b[0], mcp9808DeviceID)
	}
	return nil
}

func (s *mcp9808Sensor) Name() string { return s.name }
func (s *mcp9808Sensor) Kind() string { return "mcp9808" }

// Read reads the ambient temperature register.
func (s *mcp9808Sensor) Read(ctx context.Context) (Values, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		return nil, fmt.Errorf("hw: mcp9808 %s: %w", s.name, err)
	}
	t := e.Temperature.Celsius()
	if t < -40 || t > 125 {
		return nil, fmt.Errorf("hw: mcp9808 %s: %.4f °C is outside the chip's -40..125 °C range: wiring or bus noise", s.name, t)
	}
	return Values{"temperature_c": t}, nil
}

// Close shuts the chip down (low-power mode) and releases the bus.
func (s *mcp9808Sensor) Close() error {
	return errors.Join(s.dev.Halt(), s.bus.Close())
}

var _ Sensor = (*mcp9808Sensor)(nil)
