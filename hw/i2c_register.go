package hw

import (
	"context"
	"fmt"
	"math"

	"periph.io/x/conn/v3/i2c"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("i2c_register", func(c config.Sensor, env Env) (Sensor, error) { return newI2CRegister(c, env) })
}

// registerFormat says how the bytes of a register become a number.
type registerFormat struct {
	length        int // 1..4 bytes
	signed        bool
	littleEndian  bool
	scale, offset float64
}

// decode turns the register bytes into raw*scale+offset. len(b) must be the
// format's length.
func (f registerFormat) decode(b []byte) (float64, error) {
	if len(b) != f.length || f.length < 1 || f.length > 4 {
		return 0, fmt.Errorf("register of %d bytes, want %d (1..4)", len(b), f.length)
	}
	var u uint32
	for i := range b {
		byt := b[i]
		if f.littleEndian {
			byt = b[len(b)-1-i]
		}
		u = u<<8 | uint32(byt)
	}
	raw := float64(u)
	if bits := uint(8 * f.length); f.signed && u&(1<<(bits-1)) != 0 {
		raw = float64(int64(u) - int64(1)<<bits)
	}
	return raw*f.scale + f.offset, nil
}

// i2cRegister reads any register-addressed chip: length bytes from register
// in one write-then-read transaction (repeated start), one named value.
type i2cRegister struct {
	name, value string
	reg         byte
	format      registerFormat
	bus         i2c.BusCloser
	dev         *i2c.Dev
}

func newI2CRegister(c config.Sensor, env Env) (*i2cRegister, error) {
	f := registerFormat{length: c.Length, signed: c.Signed, littleEndian: c.ByteOrder == "little", scale: c.Scale, offset: c.Offset}
	if f.length == 0 {
		f.length = 2
	}
	if f.scale == 0 {
		f.scale = 1
	}
	switch {
	case c.Address < 0x03 || c.Address > 0x77:
		return nil, fmt.Errorf("hw: i2c_register %s: address 0x%02x is outside 0x03..0x77; set address as i2cdetect shows it", c.Name, c.Address)
	case c.Register < 0 || c.Register > 0xff:
		return nil, fmt.Errorf("hw: i2c_register %s: register 0x%x is outside 0x00..0xff", c.Name, c.Register)
	case f.length < 1 || f.length > 4:
		return nil, fmt.Errorf("hw: i2c_register %s: length %d must be 1 to 4 bytes", c.Name, f.length)
	case c.Value == "":
		return nil, fmt.Errorf("hw: i2c_register %s: value (the reading's name, e.g. \"temperature_c\") is required", c.Name)
	}
	bus, err := env.I2C(c.Bus)
	if err != nil {
		return nil, err
	}
	s := &i2cRegister{name: c.Name, value: c.Value, reg: byte(c.Register), format: f, bus: bus,
		dev: &i2c.Dev{Bus: bus, Addr: uint16(c.Address)}}
	// One read at open proves the chip answers, so wiring problems show at
	// start with the fix.
	if _, err := s.read(); err != nil {
		bus.Close()
		return nil, i2cError("i2c_register", c.Bus, c.Address, err)
	}
	return s, nil
}

func (s *i2cRegister) read() ([]byte, error) {
	b := make([]byte, s.format.length)
	if err := s.dev.Tx([]byte{s.reg}, b); err != nil {
		return nil, err
	}
	return b, nil
}

func (s *i2cRegister) Name() string { return s.name }
func (s *i2cRegister) Kind() string { return "i2c_register" }

// Read reads the register and applies scale and offset.
func (s *i2cRegister) Read(ctx context.Context) (Values, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := s.read()
	if err != nil {
		return nil, fmt.Errorf("hw: i2c_register %s: reading register 0x%02x at 0x%02x: %w", s.name, s.reg, s.dev.Addr, err)
	}
	v, err := s.format.decode(b)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("hw: i2c_register %s: cannot decode % x: %v", s.name, b, err)
	}
	return Values{s.value: v}, nil
}

// Close releases the bus.
func (s *i2cRegister) Close() error { return s.bus.Close() }

var _ Sensor = (*i2cRegister)(nil)
