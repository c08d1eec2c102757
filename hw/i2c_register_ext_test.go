package hw_test

import (
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
)

func TestI2CRegister(t *testing.T) {
	tmp102 := config.Sensor{Name: "board", Kind: "i2c_register", Bus: "1", Address: 0x48, Register: 0x00, Length: 2,
		Signed: true, ByteOrder: "big", Scale: 0.00390625, Value: "temperature_c"}
	little := config.Sensor{Name: "ctr", Kind: "i2c_register", Bus: "1", Address: 0x20, Register: 0x10, Length: 3,
		ByteOrder: "little", Scale: 1, Offset: 1, Value: "count"}
	// One read at open (presence), one per Read: write the register
	// pointer, read length bytes, in one transaction.
	read := func(addr uint16, reg byte, r ...byte) i2ctest.IO { return i2ctest.IO{Addr: addr, W: []byte{reg}, R: r} }
	runKindCases(t, []kindCase{
		{name: "TMP102 at 25 °C", cfg: tmp102, ops: []i2ctest.IO{read(0x48, 0, 0x19, 0x00), read(0x48, 0, 0x19, 0x00)},
			want: hw.Values{"temperature_c": 25}, tol: 1e-12},
		{name: "TMP102 below zero", cfg: tmp102, ops: []i2ctest.IO{read(0x48, 0, 0x19, 0x00), read(0x48, 0, 0xE7, 0x00)},
			want: hw.Values{"temperature_c": -25}, tol: 1e-12},
		{name: "24-bit little-endian counter plus offset", cfg: little, ops: []i2ctest.IO{read(0x20, 0x10, 0, 0, 0), read(0x20, 0x10, 0x01, 0x02, 0x03)},
			want: hw.Values{"count": 0x030201 + 1}, tol: 0},
		{name: "no value name", cfg: config.Sensor{Name: "x", Kind: "i2c_register", Bus: "1", Address: 0x48}, openErr: "value"},
		{name: "length 5", cfg: config.Sensor{Name: "x", Kind: "i2c_register", Bus: "1", Address: 0x48, Value: "v", Length: 5}, openErr: "1 to 4 bytes"},
	})
}
