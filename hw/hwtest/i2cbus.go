package hwtest

import (
	"errors"
	"fmt"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// ErrNACK is what RegisterBus returns for an address with no chip, like the
// kernel's "remote I/O error".
var ErrNACK = errors.New("i2c: remote I/O error (NACK)")

// RegisterBus is a fake I2C bus holding register-addressed chips: a write
// [reg] selects a register, [reg, v, reg, v, ...] writes pairs (the BMx280
// convention), and a read returns consecutive registers from the selected
// one (a read without a write continues from the chip's register pointer).
// Unknown addresses NACK. It records every transaction.
type RegisterBus struct {
	mu    sync.Mutex
	chips map[uint16]*[256]byte
	ptr   map[uint16]byte // register pointer per chip
	Ops   []string
	// Err, when set, fails every transaction (e.g. permission denied).
	Err    error
	closed bool
}

// NewRegisterBus returns an empty bus.
func NewRegisterBus() *RegisterBus {
	return &RegisterBus{chips: map[uint16]*[256]byte{}, ptr: map[uint16]byte{}}
}

// Set stores bytes at reg.. of the chip at addr (creating the chip).
func (b *RegisterBus) Set(addr uint16, reg byte, data ...byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.chips[addr]
	if c == nil {
		c = new([256]byte)
		b.chips[addr] = c
	}
	copy(c[reg:], data)
}

// Get returns n bytes at reg of the chip at addr.
func (b *RegisterBus) Get(addr uint16, reg byte, n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.chips[addr][reg:int(reg)+n]...)
}

// Tx implements i2c.Bus.
func (b *RegisterBus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Ops = append(b.Ops, fmt.Sprintf("0x%02x w=% x r=%d", addr, w, len(r)))
	if b.Err != nil {
		return b.Err
	}
	if b.closed {
		return errors.New("i2c: bus closed")
	}
	c := b.chips[addr]
	if c == nil {
		return ErrNACK
	}
	reg := int(b.ptr[addr]) // a bare read continues from the register pointer
	if len(w) > 0 {
		reg = int(w[0])
	}
	b.ptr[addr] = byte(reg + len(r))
	if len(w) > 1 {
		for i := 0; i+1 < len(w); i += 2 {
			c[w[i]] = w[i+1]
		}
	}
	for i := range r {
		r[i] = c[(reg+i)&0xff]
	}
	return nil
}

// SetSpeed implements i2c.Bus.
func (b *RegisterBus) SetSpeed(physic.Frequency) error { return nil }

// Close implements i2c.BusCloser.
func (b *RegisterBus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

// String implements i2c.Bus.
func (b *RegisterBus) String() string { return "hwtest.RegisterBus" }

var _ i2c.BusCloser = (*RegisterBus)(nil)
