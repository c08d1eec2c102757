package hw_test

import (
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
)

// TI ADS1115 datasheet SBAS444 §9.6: pointer 0x00 = conversion, 0x01 =
// config. Config bits: OS[15] (write 1: start; read 1: idle), MUX[14:12]
// (100 = AIN0/GND … 111 = AIN3/GND, 000 = AIN0−AIN1, 011 = AIN2−AIN3),
// PGA[11:9] (000 ±6.144 V, 001 ±4.096 V … 101 ±0.256 V), MODE[8] (1 =
// single-shot), DR[7:5] (100 = 128 SPS), COMP_QUE[1:0] (11 = comparator off).
// Result = raw · FS / 2^15 (§9.3.3).

const adsReset = 0x8583 // config register after power-up

func be16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// adsOpen is the presence check at open.
func adsOpen(addr uint16) i2ctest.IO {
	return i2ctest.IO{Addr: addr, W: []byte{0x01}, R: be16(adsReset)}
}

// adsConv is one single-shot conversion: start with config, busy polls
// (OS = 0), the idle poll, the conversion register.
func adsConv(addr uint16, config uint16, busy int, raw int16) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: addr, W: []byte{0x01, byte(config >> 8), byte(config)}}}
	for range busy {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0x01}, R: be16(config &^ 0x8000)})
	}
	ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0x01}, R: be16(config | 0x8000)})
	return append(ops, i2ctest.IO{Addr: addr, W: []byte{0x00}, R: be16(uint16(raw))})
}

func cat(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestADS1115(t *testing.T) {
	sensor := func(addr int, chans ...config.ADCChannel) config.Sensor {
		return config.Sensor{Name: "adc", Kind: "ads1115", Bus: "1", Address: addr, Channels: chans}
	}
	a0 := config.ADCChannel{Input: "A0", FullScaleV: 4.096, Value: "a0_v", Scale: 1}
	pair := config.ADCChannel{Input: "A2-A3", FullScaleV: 0.256, Value: "shunt", Scale: 2.5, Offset: -1}
	// Configs: A0, ±4.096 V → 0xC383; A2−A3, ±0.256 V → 0xBB83; A1, ±6.144 V → 0xD183.
	timeout := []i2ctest.IO{adsOpen(0x48), {Addr: 0x48, W: []byte{0x01, 0xC3, 0x83}}}
	for range 21 {
		timeout = append(timeout, i2ctest.IO{Addr: 0x48, W: []byte{0x01}, R: be16(0x4383)})
	}
	runKindCases(t, []kindCase{
		// 0x4000 = 16384 → 16384 · 4.096 / 32768 = 2.048 V.
		{name: "single-ended A0", cfg: sensor(0x48, a0), ops: cat([]i2ctest.IO{adsOpen(0x48)}, adsConv(0x48, 0xC383, 0, 0x4000)),
			want: hw.Values{"a0_v": 2.048}, tol: 1e-9},
		// −4096 · 0.256 / 32768 = −0.032 V; × 2.5 − 1 = −1.08.
		{name: "differential pair, scaled", cfg: sensor(0x48, pair), ops: cat([]i2ctest.IO{adsOpen(0x48)}, adsConv(0x48, 0xBB83, 0, -4096)),
			want: hw.Values{"shunt": -1.08}, tol: 1e-9},
		// Two channels in one read, the second still converting on the first
		// poll; 1 LSB at ±6.144 V is 187.5 µV: 8000 → 1.5 V.
		{name: "two channels, busy poll", cfg: sensor(0x49, a0, config.ADCChannel{Input: "A1", FullScaleV: 6.144, Value: "a1_v", Scale: 1}),
			ops:  cat([]i2ctest.IO{adsOpen(0x49)}, adsConv(0x49, 0xC383, 0, 0x4000), adsConv(0x49, 0xD183, 1, 8000)),
			want: hw.Values{"a0_v": 2.048, "a1_v": 1.5}, tol: 1e-9},
		// The other gains, A0 at half scale: PGA 010/011/100 → 0xC583/0xC783/0xC983.
		{name: "gain ±2.048 V", cfg: sensor(0x48, config.ADCChannel{Input: "A0", FullScaleV: 2.048, Value: "v", Scale: 1}),
			ops: cat([]i2ctest.IO{adsOpen(0x48)}, adsConv(0x48, 0xC583, 0, 0x4000)), want: hw.Values{"v": 1.024}, tol: 1e-9},
		{name: "gain ±1.024 V", cfg: sensor(0x48, config.ADCChannel{Input: "A0", FullScaleV: 1.024, Value: "v", Scale: 1}),
			ops: cat([]i2ctest.IO{adsOpen(0x48)}, adsConv(0x48, 0xC783, 0, 0x4000)), want: hw.Values{"v": 0.512}, tol: 1e-9},
		{name: "gain ±0.512 V", cfg: sensor(0x48, config.ADCChannel{Input: "A0", FullScaleV: 0.512, Value: "v", Scale: 1}),
			ops: cat([]i2ctest.IO{adsOpen(0x48)}, adsConv(0x48, 0xC983, 0, 0x4000)), want: hw.Values{"v": 0.256}, tol: 1e-9},
		{name: "saturated high", cfg: sensor(0x48, a0), ops: cat([]i2ctest.IO{adsOpen(0x48)}, adsConv(0x48, 0xC383, 0, 0x7FFF)),
			readErr: "beyond the ±4.096 V range"},
		{name: "saturated low", cfg: sensor(0x48, a0), ops: cat([]i2ctest.IO{adsOpen(0x48)}, adsConv(0x48, 0xC383, 0, -0x8000)),
			readErr: "choose a larger full_scale_v"},
		{name: "conversion never finishes", cfg: sensor(0x48, a0), ops: timeout, readErr: "OS bit still 0"},
		{name: "address out of range", cfg: sensor(0x40, a0), openErr: "0x48..0x4b"},
		{name: "bad input", cfg: sensor(0x48, config.ADCChannel{Input: "A5"}), openErr: `input "A5"`},
	})
}
