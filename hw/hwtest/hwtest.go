// Package hwtest provides scripted fakes of the hw interfaces for the agent's
// tests: Sensor (a queue of readings and errors that counts reads),
// EdgeSensor (adds an Events channel fed by Emit) and Output (records every
// Set and restores its initial state on Close). All are safe for concurrent
// use.
package hwtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/fieldgate/fieldgate/hw"
)

// Kind is the kind the fakes report unless WithKind changes it.
const Kind = "hwtest"

// ErrExhausted is returned by Read when the script is empty and no default
// reading was set.
var ErrExhausted = errors.New("hwtest: no scripted reading left")

// Step is one scripted Read result: Values, or Err when non-nil.
type Step struct {
	Values hw.Values
	Err    error
}

// Sensor is a scripted hw.Sensor.
type Sensor struct {
	name string

	// mu guards everything below.
	mu       sync.Mutex
	kind     string
	script   []Step
	fallback *Step
	reads    int
	closes   int
	closeErr error
}

// NewSensor returns a sensor named name that answers Read with steps in
// order, then with the default (SetDefault) or ErrExhausted.
func NewSensor(name string, steps ...Step) *Sensor {
	return &Sensor{name: name, kind: Kind, script: append([]Step(nil), steps...)}
}

// WithKind sets the kind Kind reports and returns s.
func (s *Sensor) WithKind(kind string) *Sensor {
	s.mu.Lock()
	s.kind = kind
	s.mu.Unlock()
	return s
}

// Push appends a reading to the script.
func (s *Sensor) Push(v hw.Values) {
	s.mu.Lock()
	s.script = append(s.script, Step{Values: maps.Clone(v)})
	s.mu.Unlock()
}

// PushErr appends a failing read to the script.
func (s *Sensor) PushErr(err error) {
	s.mu.Lock()
	s.script = append(s.script, Step{Err: err})
	s.mu.Unlock()
}

// SetDefault makes Read return v whenever the script is empty; nil restores
// ErrExhausted.
func (s *Sensor) SetDefault(v hw.Values) {
	s.mu.Lock()
	if v == nil {
		s.fallback = nil
	} else {
		s.fallback = &Step{Values: maps.Clone(v)}
	}
	s.mu.Unlock()
}

// SetCloseErr makes Close return err.
func (s *Sensor) SetCloseErr(err error) {
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
}

// Reads counts the Read calls that reached the script (including failing
// ones, excluding calls after Close or with a done context).
func (s *Sensor) Reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// Pending is the number of scripted steps not yet read.
func (s *Sensor) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.script)
}

// Closed reports whether Close was called.
func (s *Sensor) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closes > 0
}

// Name implements hw.Sensor.
func (s *Sensor) Name() string { return s.name }

// Kind implements hw.Sensor.
func (s *Sensor) Kind() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kind
}

// Read implements hw.Sensor: the next scripted step.
func (s *Sensor) Read(ctx context.Context) (hw.Values, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closes > 0 {
		return nil, fmt.Errorf("hwtest: sensor %q is closed", s.name)
	}
	s.reads++
	var st Step
	switch {
	case len(s.script) > 0:
		st = s.script[0]
		s.script = s.script[1:]
	case s.fallback != nil:
		st = *s.fallback
	default:
		return nil, fmt.Errorf("hwtest: sensor %q: %w", s.name, ErrExhausted)
	}
	if st.Err != nil {
		return nil, st.Err
	}
	return maps.Clone(st.Values), nil
}

// Close implements hw.Sensor.
func (s *Sensor) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closes++
	return s.closeErr
}

// EdgeSensor is a scripted hw.EdgeSensor: a Sensor plus an event channel fed
// by Emit and closed by Close.
type EdgeSensor struct {
	*Sensor
	events    chan hw.Values
	done      chan struct{}
	closeOnce sync.Once
	// emitting is held for reading by Emit while it may send, and for
	// writing by Close before it closes events.
	emitting sync.RWMutex
}

// NewEdgeSensor returns an edge sensor whose event channel buffers buffer
// events.
func NewEdgeSensor(name string, buffer int, steps ...Step) *EdgeSensor {
	return &EdgeSensor{
		Sensor: NewSensor(name, steps...),
		events: make(chan hw.Values, max(buffer, 0)),
		done:   make(chan struct{}),
	}
}

// Events implements hw.EdgeSensor.
func (e *EdgeSensor) Events() <-chan hw.Values { return e.events }

// Emit delivers an event reading, waiting for buffer space or a receiver
// until ctx is done. It fails after Close.
func (e *EdgeSensor) Emit(ctx context.Context, v hw.Values) error {
	e.emitting.RLock()
	defer e.emitting.RUnlock()
	select {
	case <-e.done:
		return fmt.Errorf("hwtest: edge sensor %q is closed", e.name)
	default:
	}
	select {
	case e.events <- maps.Clone(v):
		return nil
	case <-e.done:
		return fmt.Errorf("hwtest: edge sensor %q is closed", e.name)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close implements hw.Sensor; it also closes the event channel.
func (e *EdgeSensor) Close() error {
	e.closeOnce.Do(func() {
		close(e.done)
		e.emitting.Lock()
		close(e.events)
		e.emitting.Unlock()
	})
	return e.Sensor.Close()
}

// Output is a recording hw.Output.
type Output struct {
	name    string
	initial bool

	// mu guards the fields below.
	mu      sync.Mutex
	state   bool
	calls   []bool
	failErr error
	closes  int
}

// NewOutput returns an output in its initial (safe) state.
func NewOutput(name string, initial bool) *Output {
	return &Output{name: name, initial: initial, state: initial}
}

// FailNext makes the next Set return err without changing the state.
func (o *Output) FailNext(err error) {
	o.mu.Lock()
	o.failErr = err
	o.mu.Unlock()
}

// Calls returns every value passed to Set, in order, including failed ones.
func (o *Output) Calls() []bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]bool(nil), o.calls...)
}

// Closed reports whether Close was called.
func (o *Output) Closed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closes > 0
}

// Name implements hw.Output.
func (o *Output) Name() string { return o.name }

// Set implements hw.Output.
func (o *Output) Set(on bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, on)
	if o.closes > 0 {
		return fmt.Errorf("hwtest: output %q is closed", o.name)
	}
	if err := o.failErr; err != nil {
		o.failErr = nil
		return err
	}
	o.state = on
	return nil
}

// State implements hw.Output.
func (o *Output) State() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state
}

// Close implements hw.Output: it restores the initial state.
func (o *Output) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closes++
	o.state = o.initial
	return nil
}

var (
	_ hw.Sensor     = (*Sensor)(nil)
	_ hw.EdgeSensor = (*EdgeSensor)(nil)
	_ hw.Output     = (*Output)(nil)
)
