package hw_test

import (
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
)

// ina219Ops: calibration and configuration at open, then one read of the
// shunt (0x01), bus (0x02), current (0x04) and power (0x03) registers.
// TI INA219 datasheet SBOS448 §8.5: Current_LSB = max current / 2^15,
// Cal = trunc(0.04096 / (Current_LSB · R_shunt)), Power_LSB = 20 · Current_LSB;
// 3.2 A and 0.1 Ω give Current_LSB = 97.656 µA and Cal = 4194 (0x1062).
func ina219Ops(addr uint16, cal uint16, shunt, bus, current, power uint16) []i2ctest.IO {
	be := func(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
	ops := []i2ctest.IO{
		{Addr: addr, W: []byte{0x05, byte(cal >> 8), byte(cal)}},
		{Addr: addr, W: []byte{0x00, 0x1F, 0xFF}}, // 32 V range, ±320 mV, 12-bit ×128 averaging, continuous
		{Addr: addr, W: []byte{0x01}, R: be(shunt)},
		{Addr: addr, W: []byte{0x02}, R: be(bus)},
	}
	if bus&1 != 0 { // overflow: the read stops here
		return ops
	}
	return append(ops,
		i2ctest.IO{Addr: addr, W: []byte{0x04}, R: be(current)},
		i2ctest.IO{Addr: addr, W: []byte{0x03}, R: be(power)})
}

func TestINA219(t *testing.T) {
	cfg := config.Sensor{Name: "pwr", Kind: "ina219", Bus: "1", Address: 0x40, ShuntOhms: 0.1, MaxCurrentA: 3.2}
	// 0.4 A through 0.1 Ω at 12 V: shunt 40 mV = 4000 × 10 µV; bus 12 V =
	// 3000 × 4 mV in bits 15..3 (+ CNVR bit 1); current = shunt·Cal/4096 =
	// 4095 → 0.39990 A; power = current·bus/5000 = 2457 → 2457 · 1.953 mW = 4.7988 W.
	busReg := uint16(3000<<3 | 0x02)
	neg := func(v int16) uint16 { return uint16(v) }
	halfOhm := cfg
	halfOhm.ShuntOhms, halfOhm.MaxCurrentA, halfOhm.Address = 0.5, 0.4, 0x45
	runKindCases(t, []kindCase{
		{name: "0.4 A at 12 V", cfg: cfg, ops: ina219Ops(0x40, 4194, 4000, busReg, 4095, 2457),
			want: hw.Values{"shunt_voltage_v": 0.04, "bus_voltage_v": 12, "current_a": 0.39990, "power_w": 4.7988}, tol: 1e-4},
		// Reverse current: the shunt and current registers are two's complement.
		{name: "reverse current", cfg: cfg, ops: ina219Ops(0x40, 4194, neg(-4000), busReg, neg(-4095), 2457),
			want: hw.Values{"shunt_voltage_v": -0.04, "bus_voltage_v": 12, "current_a": -0.39990, "power_w": 4.7988}, tol: 1e-4},
		// 0.5 Ω, 0.4 A: Current_LSB = 12.207 µA, Cal = trunc(0.04096/(12.207e-6·0.5)) = 6710 (0x1A36);
		// 100 mA → shunt 50 mV = 5000; current = 5000·6710/4096 = 8190 → 99.98 mA;
		// power = 8190·1250/5000 = 2047 → 2047 · 244.14 µW = 0.49976 W.
		{name: "0.5 ohm shunt at 0x45", cfg: halfOhm, ops: ina219Ops(0x45, 6710, 5000, uint16(1250<<3|0x02), 8190, 1250*8190/5000),
			want: hw.Values{"shunt_voltage_v": 0.05, "bus_voltage_v": 5, "current_a": 0.099976, "power_w": 0.49976}, tol: 1e-4},
		// OVF (bit 0 of the bus register): current or power out of range.
		{name: "math overflow", cfg: cfg, ops: ina219Ops(0x40, 4194, 0x7FFF, busReg|1, 0, 0), readErr: "raise max_current_a"},
		{name: "address out of range", cfg: config.Sensor{Name: "pwr", Kind: "ina219", Bus: "1", Address: 0x60}, openErr: "0x40..0x4f"},
	})
}
