package hw_test

import (
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
)

// crc8AHT20 is the AHT20 datasheet's CRC (§5.4.4): polynomial
// x^8 + x^5 + x^4 + 1 (0x31), initial value 0xFF, over the status and the
// five data bytes.
func crc8AHT20(b []byte) byte {
	crc := byte(0xFF)
	for _, x := range b {
		crc ^= x
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// aht20Frame builds the 7-byte measurement frame (§5.4): status, 20-bit
// humidity signal S_RH, 20-bit temperature signal S_T, CRC.
func aht20Frame(status byte, srh, st uint32, badCRC bool) []byte {
	f := []byte{status, byte(srh >> 12), byte(srh >> 4), byte(srh<<4) | byte(st>>16&0x0F), byte(st >> 8), byte(st)}
	crc := crc8AHT20(f)
	if badCRC {
		crc ^= 0xFF
	}
	return append(f, crc)
}

// aht20Ops: status check (0x71, calibrated bit 3 set), a triggered
// measurement (0xAC 0x33 0x00) and the frame read.
func aht20Ops(frame []byte) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: 0x38, W: []byte{0x71}, R: []byte{0x18}},
		{Addr: 0x38, W: []byte{0xAC, 0x33, 0x00}},
		{Addr: 0x38, R: frame},
	}
}

func TestAHT20(t *testing.T) {
	cfg := config.Sensor{Name: "th", Kind: "aht20", Bus: "1", Address: 0x38}
	// §6.1/§6.2: RH = S_RH / 2^20 · 100 %, T = S_T / 2^20 · 200 − 50 °C.
	// S_RH = 0x80000 → 50 %; S_T = 0x66666 = 419430 → 29.99992 °C.
	// S_RH = 0x33333 = 209715 → 19.99998 %; S_T = 0x1999A = 104858 → −29.99985 °C.
	runKindCases(t, []kindCase{
		{name: "datasheet formula", cfg: cfg, ops: aht20Ops(aht20Frame(0x18, 0x80000, 0x66666, false)),
			want: hw.Values{"temperature_c": 29.99992, "humidity_pct": 50}, tol: 1e-4},
		{name: "below zero", cfg: cfg, ops: aht20Ops(aht20Frame(0x18, 0x33333, 0x1999A, false)),
			want: hw.Values{"temperature_c": -29.99985, "humidity_pct": 19.99998}, tol: 1e-4},
		{name: "CRC mismatch", cfg: cfg, ops: aht20Ops(aht20Frame(0x18, 0x80000, 0x66666, true)), readErr: "CRC mismatch"},
		// Status without the calibration bit: the sensor is re-calibrated
		// (0xBE 0x08 0x00) and the read reports it.
		{name: "lost calibration", cfg: cfg, ops: append(aht20Ops(aht20Frame(0x10, 0x80000, 0x66666, false)),
			i2ctest.IO{Addr: 0x38, W: []byte{0xBE, 0x08, 0x00}}), readErr: "re-initialised"},
		// 0xFFFFF everywhere: 100 % and 150 °C, beyond the chip's range.
		{name: "out of range", cfg: cfg, ops: aht20Ops(aht20Frame(0x18, 0xFFFFF, 0xFFFFF, false)), readErr: "out of the chip's range"},
		{name: "uncalibrated at open", cfg: cfg, ops: []i2ctest.IO{
			{Addr: 0x38, W: []byte{0x71}, R: []byte{0x10}},
			{Addr: 0x38, W: []byte{0xBE, 0x08, 0x00}},
			{Addr: 0x38, W: []byte{0xAC, 0x33, 0x00}},
			{Addr: 0x38, R: aht20Frame(0x18, 0x80000, 0x66666, false)},
		}, want: hw.Values{"temperature_c": 29.99992, "humidity_pct": 50}, tol: 1e-4},
		{name: "address is fixed", cfg: config.Sensor{Name: "th", Kind: "aht20", Bus: "1", Address: 0x39}, openErr: "always answers at 0x38"},
	})
}
