package hw

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// OpenI2C opens an I2C bus by number or device path after initialising the
// host drivers; errors carry the fix (I2C not enabled, group i2c).
func OpenI2C(bus string, log *slog.Logger) (i2c.BusCloser, error) {
	return Env{Logger: log}.withDefaults().I2C(bus)
}

// Scan probes every 7-bit address 0x03..0x77 with a one-byte read, like
// i2cdetect -r, and returns those that acknowledge.
func Scan(bus i2c.Bus) []uint16 {
	var found []uint16
	var b [1]byte
	for a := uint16(0x03); a <= 0x77; a++ {
		if err := bus.Tx(a, nil, b[:]); err == nil {
			found = append(found, a)
		}
	}
	return found
}

// FormatScan renders addresses as an i2cdetect-style grid.
func FormatScan(found []uint16) string {
	set := map[uint16]bool{}
	for _, a := range found {
		set[a] = true
	}
	var s strings.Builder
	s.WriteString("     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f\n")
	for row := uint16(0); row < 0x80; row += 0x10 {
		fmt.Fprintf(&s, "%02x:", row)
		for c := uint16(0); c < 0x10; c++ {
			a := row + c
			switch {
			case a < 0x03 || a > 0x77:
				s.WriteString("   ")
			case set[a]:
				fmt.Fprintf(&s, " %02x", a)
			default:
				s.WriteString(" --")
			}
		}
		s.WriteString("\n")
	}
	return s.String()
}

// RecordingBus wraps a bus and records every transaction, to turn a real
// board's traffic into a test fixture (`fieldgate sensors record`).
type RecordingBus struct {
	Bus i2c.BusCloser

	mu  sync.Mutex
	ops []IO
}

// IO is one recorded transaction.
type IO struct {
	Addr uint16
	W, R []byte
	Err  string
}

// Tx implements i2c.Bus.
func (r *RecordingBus) Tx(addr uint16, w, rd []byte) error {
	err := r.Bus.Tx(addr, w, rd)
	io := IO{Addr: addr, W: append([]byte(nil), w...), R: append([]byte(nil), rd...)}
	if err != nil {
		io.Err = err.Error()
	}
	r.mu.Lock()
	r.ops = append(r.ops, io)
	r.mu.Unlock()
	return err
}

// SetSpeed implements i2c.Bus.
func (r *RecordingBus) SetSpeed(f physic.Frequency) error { return r.Bus.SetSpeed(f) }

// Close implements i2c.BusCloser.
func (r *RecordingBus) Close() error { return r.Bus.Close() }

// String implements i2c.Bus.
func (r *RecordingBus) String() string { return "recording(" + r.Bus.String() + ")" }

// Ops returns the recorded transactions.
func (r *RecordingBus) Ops() []IO {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]IO(nil), r.ops...)
}

// GoSource renders ops as Go composite literals for periph's
// i2ctest.Playback (a test fixture).
func GoSource(ops []IO) string {
	var s strings.Builder
	s.WriteString("[]i2ctest.IO{\n")
	for _, o := range ops {
		fmt.Fprintf(&s, "\t{Addr: 0x%02x, W: %s, R: %s}, %s\n", o.Addr, goBytes(o.W), goBytes(o.R), errComment(o.Err))
	}
	s.WriteString("}\n")
	return s.String()
}

func goBytes(b []byte) string {
	if len(b) == 0 {
		return "nil"
	}
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("0x%02x", x)
	}
	return "[]byte{" + strings.Join(parts, ", ") + "}"
}

func errComment(e string) string {
	if e == "" {
		return ""
	}
	return "// error: " + e
}

var _ i2c.BusCloser = (*RecordingBus)(nil)

// chipAddresses lists, per sensor kind, the addresses its chip can answer at.
var chipAddresses = []struct {
	kind   string
	lo, hi uint16
}{
	{"mcp9808", 0x18, 0x1f},
	{"aht20", 0x38, 0x38},
	{"ina219", 0x40, 0x4f},
	{"ads1115", 0x48, 0x4b},
	{"bme280/bmp280", 0x76, 0x77},
}

// KindsAt names the sensor kinds whose chip can answer at addr, to suggest
// a kind for what a scan found; i2c_register fits any address.
func KindsAt(addr uint16) []string {
	var out []string
	for _, c := range chipAddresses {
		if addr >= c.lo && addr <= c.hi {
			out = append(out, c.kind)
		}
	}
	return out
}
