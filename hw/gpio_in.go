package hw

import (
	"context"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("gpio_in", func(c config.Sensor, env Env) (Sensor, error) { return newGPIOIn(c, env) })
}

// edgePoll bounds one WaitForEdge: periph's chardev driver treats -1 as
// "already expired", so the loop always passes a positive timeout.
const edgePoll = 200 * time.Millisecond

// gpioIn reads a digital input: "level" (0/1) at every interval and, when
// edge detection is on, an immediate reading {"level", "edge": 1} per
// debounced edge.
type gpioIn struct {
	name     string
	pin      gpio.PinIO
	env      Env
	debounce time.Duration
	events   chan Values
	stop     chan struct{}
	wg       sync.WaitGroup
}

func newGPIOIn(c config.Sensor, env Env) (*gpioIn, error) {
	env = env.withDefaults()
	pin, err := env.GPIO(c.Pin)
	if err != nil {
		return nil, err
	}
	pull := map[string]gpio.Pull{"up": gpio.PullUp, "down": gpio.PullDown, "none": gpio.Float, "": gpio.PullNoChange}[c.Pull]
	edge := map[string]gpio.Edge{"rising": gpio.RisingEdge, "falling": gpio.FallingEdge, "both": gpio.BothEdges}[c.Edge]
	if err := pin.In(pull, edge); err != nil {
		return nil, fmt.Errorf("hw: gpio_in %s: configuring %s as input: %w — is the service user in group gpio, and is the line free (gpioinfo)?", c.Name, c.Pin, err)
	}
	s := &gpioIn{name: c.Name, pin: pin, env: env, debounce: c.Debounce.D(), events: make(chan Values, 64), stop: make(chan struct{})}
	if edge != gpio.NoEdge {
		s.wg.Add(1)
		go s.watch()
	}
	return s, nil
}

func (s *gpioIn) Name() string { return s.name }
func (s *gpioIn) Kind() string { return "gpio_in" }

// Read returns the current level.
func (s *gpioIn) Read(ctx context.Context) (Values, error) {
	return Values{"level": level(s.pin.Read())}, ctx.Err()
}

// Events implements EdgeSensor.
func (s *gpioIn) Events() <-chan Values { return s.events }

func level(l gpio.Level) float64 {
	if l == gpio.High {
		return 1
	}
	return 0
}

// watch turns edges into readings, ignoring edges closer than debounce to
// the last accepted one (on the injected clock) unless the level changed
// back by the end of the burst.
func (s *gpioIn) watch() {
	defer s.wg.Done()
	defer close(s.events)
	var last time.Time
	lastLevel := s.pin.Read()
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		if !s.pin.WaitForEdge(edgePoll) {
			continue
		}
		now := s.env.Clock.Now()
		l := s.pin.Read()
		if s.debounce > 0 && !last.IsZero() && now.Sub(last) < s.debounce {
			continue
		}
		if l == lastLevel && s.debounce > 0 {
			continue // a bounce that ended where it started
		}
		last, lastLevel = now, l
		select {
		case s.events <- Values{"level": level(l), "edge": 1}:
		default:
			s.env.Logger.Warn("gpio_in: edge events arriving faster than they are committed; one dropped", "sensor", s.name)
		}
	}
}

// Close stops edge detection and releases the line.
func (s *gpioIn) Close() error {
	close(s.stop)
	err := s.pin.Halt()
	s.wg.Wait()
	return err
}

var _ EdgeSensor = (*gpioIn)(nil)
