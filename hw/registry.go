package hw

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/fieldgate/fieldgate/agent/config"
)

// SensorFactory opens one sensor of a kind from its configuration. The
// configuration has been validated by package config.
type SensorFactory func(cfg config.Sensor, env Env) (Sensor, error)

// OutputFactory opens one output of a kind from its configuration.
type OutputFactory func(cfg config.Output, env Env) (Output, error)

// mu guards the registries; they are written from init and read at runtime.
var (
	mu      sync.RWMutex
	sensors = map[string]SensorFactory{}
	outputs = map[string]OutputFactory{}
)

// RegisterSensor makes a sensor kind available. Each kind's file calls it
// from init. It panics on an empty kind, a nil factory or a duplicate, which
// are programming errors.
func RegisterSensor(kind string, f SensorFactory) {
	mu.Lock()
	defer mu.Unlock()
	if kind == "" || f == nil {
		panic("hw: RegisterSensor needs a kind and a factory")
	}
	if _, dup := sensors[kind]; dup {
		panic("hw: sensor kind " + kind + " registered twice")
	}
	sensors[kind] = f
}

// RegisterOutput makes an output kind available; see RegisterSensor.
func RegisterOutput(kind string, f OutputFactory) {
	mu.Lock()
	defer mu.Unlock()
	if kind == "" || f == nil {
		panic("hw: RegisterOutput needs a kind and a factory")
	}
	if _, dup := outputs[kind]; dup {
		panic("hw: output kind " + kind + " registered twice")
	}
	outputs[kind] = f
}

// OpenSensor opens the sensor described by cfg with the factory registered
// for cfg.Kind. An unknown kind is an error naming the kinds this build has.
func OpenSensor(cfg config.Sensor, env Env) (Sensor, error) {
	mu.RLock()
	f, ok := sensors[cfg.Kind]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("hw: sensor %q: kind %q is not available in this build (available: %s)",
			cfg.Name, cfg.Kind, strings.Join(Kinds(), ", "))
	}
	s, err := f(cfg, env.withDefaults())
	if err != nil {
		return nil, err
	}
	return s, nil
}

// OpenOutput opens the output described by cfg; see OpenSensor.
func OpenOutput(cfg config.Output, env Env) (Output, error) {
	mu.RLock()
	f, ok := outputs[cfg.Kind]
	mu.RUnlock()
	if !ok {
		avail := strings.Join(OutputKinds(), ", ")
		if avail == "" {
			avail = "none yet; outputs arrive with the hardware issue"
		}
		return nil, fmt.Errorf("hw: output %q: kind %q is not available in this build (available: %s)",
			cfg.Name, cfg.Kind, avail)
	}
	return f(cfg, env.withDefaults())
}

// Kinds lists the registered sensor kinds, sorted.
func Kinds() []string {
	mu.RLock()
	defer mu.RUnlock()
	return sortedNames(sensors)
}

// OutputKinds lists the registered output kinds, sorted.
func OutputKinds() []string {
	mu.RLock()
	defer mu.RUnlock()
	return sortedNames(outputs)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
