package hw

import (
	"fmt"
	"sync"

	"periph.io/x/conn/v3/gpio"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterOutput("gpio", func(c config.Output, env Env) (Output, error) { return newGPIOOut(c, env) })
}

// gpioOut drives a GPIO line. Logical "on" is high unless active_low. The
// initial (safe) state is set at open and restored by Close.
type gpioOut struct {
	name      string
	pin       gpio.PinIO
	activeLow bool
	safe      bool

	// mu guards on.
	mu sync.Mutex
	on bool
}

func newGPIOOut(c config.Output, env Env) (*gpioOut, error) {
	env = env.withDefaults()
	pin, err := env.GPIO(c.Pin)
	if err != nil {
		return nil, err
	}
	o := &gpioOut{name: c.Name, pin: pin, activeLow: c.ActiveLow, safe: c.Initial == "high"}
	if c.ActiveLow {
		o.safe = c.Initial == "low"
	}
	// The safe state is a pin level; convert it to the logical state.
	if err := o.Set(o.safe); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *gpioOut) Name() string { return o.name }

// Set drives the line to the logical state on.
func (o *gpioOut) Set(on bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := gpio.Level(on != o.activeLow)
	if err := o.pin.Out(l); err != nil {
		return fmt.Errorf("hw: output %s: driving %s: %w — is the service user in group gpio?", o.name, o.pin.Name(), err)
	}
	o.on = on
	return nil
}

// State is the last logical state set.
func (o *gpioOut) State() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.on
}

// Close restores the safe state.
func (o *gpioOut) Close() error { return o.Set(o.safe) }

var _ Output = (*gpioOut)(nil)
