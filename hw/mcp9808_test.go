package hw_test

import (
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
)

// mcp9808Ops is the traffic of open, one read of the ambient temperature
// register (upper, lower byte) and close, at addr. Register map: Microchip
// MCP9808 datasheet DS25095A, Table 5-1.
func mcp9808Ops(addr uint16, manufacturer []byte, ta ...byte) []i2ctest.IO {
	ops := []i2ctest.IO{
		{Addr: addr, W: []byte{0x06}, R: manufacturer}, // manufacturer ID 0x0054
	}
	if manufacturer[1] != 0x54 {
		return ops
	}
	ops = append(ops,
		i2ctest.IO{Addr: addr, W: []byte{0x07}, R: []byte{0x04, 0x00}}, // device ID 0x04, revision 0
		i2ctest.IO{Addr: addr, W: []byte{0x08, 0x03}},                  // resolution 0.0625 °C
		i2ctest.IO{Addr: addr, W: []byte{0x01, 0x00, 0x00}},            // CONFIG: continuous conversion
	)
	if ta != nil {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0x05}, R: ta})
	}
	return append(ops, i2ctest.IO{Addr: addr, W: []byte{0x01, 0x01, 0x00}}) // CONFIG: shutdown
}

func TestMCP9808(t *testing.T) {
	cfg := config.Sensor{Name: "t", Kind: "mcp9808", Bus: "1", Address: 0x18}
	at := func(a int) config.Sensor { c := cfg; c.Address = a; return c }
	id := []byte{0x00, 0x54}
	runKindCases(t, []kindCase{
		// §5.1.3: T_A = (upper & 0x0F)·16 + lower/16; 0x0194 → 25.25 °C.
		{name: "25.25 °C", cfg: cfg, ops: mcp9808Ops(0x18, id, 0x01, 0x94), want: hw.Values{"temperature_c": 25.25}, tol: 1e-9},
		// The three flag bits (T_A vs T_CRIT, T_UPPER, T_LOWER) do not change the value.
		{name: "alert flags ignored", cfg: cfg, ops: mcp9808Ops(0x18, id, 0xE1, 0x94), want: hw.Values{"temperature_c": 25.25}, tol: 1e-9},
		// Sign bit 12: T_A = 256 − ((upper & 0x0F)·16 + lower/16); 0x1FF0 → −1.0 °C.
		{name: "negative", cfg: cfg, ops: mcp9808Ops(0x18, id, 0x1F, 0xF0), want: hw.Values{"temperature_c": -1}, tol: 1e-9},
		// 0x1E68: 256 − (14·16 + 0x68/16 = 230.5) → −25.5 °C; the finest step is 0.0625 °C.
		{name: "minus 25.5 °C", cfg: cfg, ops: mcp9808Ops(0x18, id, 0x1E, 0x68), want: hw.Values{"temperature_c": -25.5}, tol: 1e-9},
		{name: "0.0625 °C step", cfg: cfg, ops: mcp9808Ops(0x18, id, 0x00, 0x01), want: hw.Values{"temperature_c": 0.0625}, tol: 1e-9},
		{name: "address 0x1f", cfg: at(0x1f), ops: mcp9808Ops(0x1f, id, 0x01, 0x94), want: hw.Values{"temperature_c": 25.25}, tol: 1e-9},
		// 0x0FFF → 255.9375 °C: beyond the chip's range, a wiring fault.
		{name: "out of range", cfg: cfg, ops: mcp9808Ops(0x18, id, 0x0F, 0xFF), readErr: "outside the chip's -40..125 °C range"},
		{name: "another chip answers", cfg: cfg, ops: mcp9808Ops(0x18, []byte{0x10, 0x00}), openErr: "no device at 0x18"},
		{name: "address out of range", cfg: at(0x48), openErr: "0x18..0x1f"},
	})
}
