package hw

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("ads1115", func(c config.Sensor, env Env) (Sensor, error) { return newADS1115(c, env) })
}

// The ADS1115 is driven through conn/i2c rather than periph's ads1x15
// driver: that driver sleeps exactly 1/data-rate after starting a
// conversion and never checks the OS bit, so a conversion stretched by the
// chip's ±10 % oscillator tolerance is read stale — the previous channel's
// value on a multi-channel sensor. Here the OS bit is polled.
//
// Registers and config bits: TI ADS1115 datasheet (SBAS444) §9.6.1–§9.6.3.
const (
	adsRegConversion = 0x00
	adsRegConfig     = 0x01

	adsOS         = 0x8000 // write: start a single conversion; read: 1 = idle
	adsModeSingle = 0x0100
	adsDR128      = 0x0080 // 128 samples/s: 7.8 ms per conversion
	adsCompOff    = 0x0003
	adsConvTime   = time.Second / 128
	adsMaxPolls   = 20 // × 1 ms beyond the nominal conversion time
)

// adsMux maps inputs to MUX[14:12].
var adsMux = map[string]uint16{
	"A0-A1": 0, "A0-A3": 1, "A1-A3": 2, "A2-A3": 3,
	"A0": 4, "A1": 5, "A2": 6, "A3": 7,
}

// adsPGA maps full-scale volts to PGA[11:9].
var adsPGA = map[float64]uint16{6.144: 0, 4.096: 1, 2.048: 2, 1.024: 3, 0.512: 4, 0.256: 5}

type adsChannel struct {
	cfg    config.ADCChannel
	config uint16 // config register value that starts this conversion
}

// ads1115Sensor converts each configured channel in turn: one value per
// channel, volts × scale + offset.
type ads1115Sensor struct {
	name  string
	bus   i2c.BusCloser
	dev   *i2c.Dev
	chans []adsChannel
	sleep func(time.Duration)
}

func newADS1115(c config.Sensor, env Env) (*ads1115Sensor, error) {
	addr, err := chipAddress(c, 0x48, 0x48, 0x4b, "the ADDR pin")
	if err != nil {
		return nil, err
	}
	if len(c.Channels) == 0 {
		return nil, fmt.Errorf("hw: ads1115 %s: no channels; add a [[sensor.channels]] table with input = \"A0\"", c.Name)
	}
	s := &ads1115Sensor{name: c.Name, sleep: time.Sleep}
	for _, ch := range c.Channels {
		mux, ok := adsMux[ch.Input]
		if !ok {
			return nil, fmt.Errorf("hw: ads1115 %s: input %q is not A0..A3 or a pair A0-A1, A0-A3, A1-A3, A2-A3", c.Name, ch.Input)
		}
		fs := ch.FullScaleV
		if fs == 0 {
			fs = config.DefaultFullScaleV
		}
		pga, ok := adsPGA[fs]
		if !ok {
			return nil, fmt.Errorf("hw: ads1115 %s: full_scale_v %v is not one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256", c.Name, ch.FullScaleV)
		}
		ch.FullScaleV = fs
		if ch.Scale == 0 {
			ch.Scale = 1
		}
		if ch.Value == "" {
			ch.Value = strings.ToLower(strings.ReplaceAll(ch.Input, "-", "_")) + "_v"
		}
		s.chans = append(s.chans, adsChannel{cfg: ch, config: adsOS | mux<<12 | pga<<9 | adsModeSingle | adsDR128 | adsCompOff})
	}
	bus, err := env.I2C(c.Bus)
	if err != nil {
		return nil, err
	}
	s.bus, s.dev = bus, &i2c.Dev{Bus: bus, Addr: uint16(addr)}
	// The chip has no ID register: reading the config register proves
	// something answers (its reset value is 0x8583).
	var b [2]byte
	if err := s.dev.Tx([]byte{adsRegConfig}, b[:]); err != nil {
		bus.Close()
		return nil, i2cError("ads1115", c.Bus, addr, err)
	}
	return s, nil
}

func (s *ads1115Sensor) Name() string { return s.name }
func (s *ads1115Sensor) Kind() string { return "ads1115" }

// Read converts every channel once (about 8 ms each).
func (s *ads1115Sensor) Read(ctx context.Context) (Values, error) {
	v := make(Values, len(s.chans))
	for _, ch := range s.chans {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		raw, err := s.convert(ch.config)
		if err != nil {
			return nil, fmt.Errorf("hw: ads1115 %s input %s: %w", s.name, ch.cfg.Input, err)
		}
		if raw == math.MaxInt16 || raw == math.MinInt16 {
			return nil, fmt.Errorf("hw: ads1115 %s input %s: the input is at or beyond the ±%.3f V range (reading saturated); choose a larger full_scale_v or divide the signal",
				s.name, ch.cfg.Input, ch.cfg.FullScaleV)
		}
		volts := float64(raw) * ch.cfg.FullScaleV / 32768
		v[ch.cfg.Value] = volts*ch.cfg.Scale + ch.cfg.Offset
	}
	return v, nil
}

// convert starts a single-shot conversion, waits until the OS bit reports it
// done, and returns the conversion register.
func (s *ads1115Sensor) convert(config uint16) (int16, error) {
	var w [3]byte
	w[0] = adsRegConfig
	binary.BigEndian.PutUint16(w[1:], config)
	if err := s.dev.Tx(w[:], nil); err != nil {
		return 0, err
	}
	s.sleep(adsConvTime)
	var b [2]byte
	for i := 0; ; i++ {
		if err := s.dev.Tx([]byte{adsRegConfig}, b[:]); err != nil {
			return 0, err
		}
		if binary.BigEndian.Uint16(b[:])&adsOS != 0 {
			break
		}
		if i == adsMaxPolls {
			return 0, errors.New("conversion did not finish (OS bit still 0): check the chip's supply")
		}
		s.sleep(time.Millisecond)
	}
	if err := s.dev.Tx([]byte{adsRegConversion}, b[:]); err != nil {
		return 0, err
	}
	return int16(binary.BigEndian.Uint16(b[:])), nil
}

// Close releases the bus (single-shot mode leaves the chip powered down).
func (s *ads1115Sensor) Close() error {
	return s.bus.Close()
}

var _ Sensor = (*ads1115Sensor)(nil)
