package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// This file is the table of sensor and output kinds. Adding a kind means one
// entry here (its keys and checks) plus its factory in package hw; a test in
// hw checks that both lists agree.

// sensorKind describes the keys of one sensor kind beyond name, kind and
// interval, which every kind has.
type sensorKind struct {
	summary  string
	required []string
	optional []string
	// defaults fills kind-specific defaults for sensor i (src may be nil).
	defaults func(s *Sensor, src *sourceIndex, i int)
	// check adds kind-specific problems; key(k) gives the full key path.
	check func(s Sensor, key func(string) string, ps *problems)
}

// commonSensorKeys are allowed for every kind.
var commonSensorKeys = []string{"name", "kind", "interval"}

var sensorKinds = map[string]sensorKind{
	"simulated": {
		summary:  "deterministic waveforms for demos and tests",
		required: []string{"values"},
		optional: []string{"period", "seed"},
		defaults: func(s *Sensor, src *sourceIndex, i int) {
			if s.Period.Duration == 0 && !src.has(sensorKey(i, "period")) {
				s.Period = Duration{DefaultSimulatedPeriod}
			}
		},
		check: checkSimulated,
	},
	"bme280": {
		summary:  "Bosch BME280 temperature, humidity and pressure over I2C (periph bmxx80)",
		required: []string{"bus"},
		optional: []string{"address"},
		defaults: defaultAddress(0x76),
	},
	"bmp280": {
		summary:  "Bosch BMP280 temperature and pressure over I2C (periph bmxx80)",
		required: []string{"bus"},
		optional: []string{"address"},
		defaults: defaultAddress(0x76),
	},
	"gpio_in": {
		summary:  "a GPIO input (door contact, button): level at each interval, edges immediately",
		required: []string{"pin"},
		optional: []string{"pull", "edge", "debounce"},
		defaults: func(s *Sensor, src *sourceIndex, i int) {
			setStr(&s.Pull, "none")
			setStr(&s.Edge, "none")
		},
	},
	"system": {
		summary: "gateway health: SoC temperature, load, memory, disk free, uptime",
	},
}

// defaultAddress fills a default I2C address.
func defaultAddress(a int) func(s *Sensor, src *sourceIndex, i int) {
	return func(s *Sensor, _ *sourceIndex, _ int) {
		if s.Address == 0 {
			s.Address = a
		}
	}
}

// sensorKeyChecks validate hardware keys wherever a kind allows them, so a
// new kind only lists the keys it uses.
var sensorKeyChecks = map[string]func(s Sensor, key string, ps *problems){
	"bus": func(s Sensor, key string, ps *problems) {
		if !reI2CBus.MatchString(s.Bus) {
			ps.add(key, s.Bus, "is not an I2C bus", `use the bus number, e.g. "1", or its device, e.g. "/dev/i2c-1"`)
		}
	},
	"address": func(s Sensor, key string, ps *problems) {
		if s.Address < 0x03 || s.Address > 0x77 {
			ps.add(key, rawValue(fmt.Sprintf("0x%x", s.Address)), "is outside the 7-bit I2C address range 0x03..0x77",
				"write it in hex as printed by i2cdetect, e.g. 0x76")
		}
	},
	"pin": func(s Sensor, key string, ps *problems) { checkPin(s.Pin, key, ps) },
	"pull": func(s Sensor, key string, ps *problems) {
		checkEnum(ps, key, s.Pull, []string{"up", "down", "none"}, "")
	},
	"edge": func(s Sensor, key string, ps *problems) {
		checkEnum(ps, key, s.Edge, []string{"none", "rising", "falling", "both"}, "")
	},
	"debounce": func(s Sensor, key string, ps *problems) {
		checkDuration(ps, key, s.Debounce, 0, time.Second, "contact bounce settles within a few ms; more than 1s would swallow real events", `e.g. "20ms"`)
	},
}

var (
	reI2CBus    = regexp.MustCompile(`^([0-9]{1,3}|/dev/i2c-[0-9]{1,3})$`)
	rePin       = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)
	reValueName = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
)

func checkPin(pin, key string, ps *problems) {
	if pin == "" {
		ps.add(key, nil, "is required", `name the pin as periph does, e.g. "GPIO17"`)
		return
	}
	if !rePin.MatchString(pin) {
		ps.add(key, pin, "is not a GPIO name", `e.g. "GPIO17"`)
	}
}

func checkSimulated(s Sensor, key func(string) string, ps *problems) {
	if len(s.Values) == 0 {
		ps.add(key("values"), s.Values, "must list at least one value name",
			`e.g. values = ["temperature_c", "humidity_pct"]`)
	}
	if len(s.Values) > 64 {
		ps.add(key("values"), rawValue(fmt.Sprintf("[%d names]", len(s.Values))), "has more than 64 names", "split them over several sensors")
	}
	seen := map[string]bool{}
	for i, v := range s.Values {
		vkey := fmt.Sprintf("%s[%d]", key("values"), i)
		switch {
		case !reValueName.MatchString(v):
			ps.add(vkey, v, "value names use only a-z, 0-9 and _ (at most 64)",
				`name the quantity and its unit, e.g. "temperature_c"`)
		case seen[v]:
			ps.add(vkey, v, "is listed twice", "remove the duplicate")
		}
		seen[v] = true
	}
	checkDuration(ps, key("period"), s.Period, time.Second, 7*24*time.Hour, "", `e.g. "10m"`)
}

// outputKind describes the keys of one output kind beyond name and kind.
type outputKind struct {
	summary  string
	required []string
	optional []string
	defaults func(o *Output)
	// pending, when set, makes every output of this kind a problem: the
	// shape is checked, but the kind is not implemented yet.
	pending string
}

var outputKinds = map[string]outputKind{
	"gpio": {
		summary:  "a GPIO line driven high or low (relays, LEDs)",
		required: []string{"pin"},
		optional: []string{"initial", "active_low"},
		defaults: func(o *Output) { setStr(&o.Initial, DefaultOutputInitial) },
	},
}

var commonOutputKeys = []string{"name", "kind"}

// SensorKinds lists the sensor kinds a configuration may use, sorted.
func SensorKinds() []string { return sortedKeys(sensorKinds) }

// OutputKinds lists the output kinds a configuration may name, sorted
// (including kinds whose implementation is still pending).
func OutputKinds() []string { return sortedKeys(outputKinds) }

// SensorKindKeys returns the kind-specific keys of a sensor kind (beyond
// name, kind and interval), and false for an unknown kind.
func SensorKindKeys(kind string) (required, optional []string, ok bool) {
	k, ok := sensorKinds[kind]
	if !ok {
		return nil, nil, false
	}
	return slices.Clone(k.required), slices.Clone(k.optional), true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sensorKey(i int, k string) string {
	if k == "" {
		return fmt.Sprintf("sensor[%d]", i)
	}
	return fmt.Sprintf("sensor[%d].%s", i, k)
}

func outputKey(i int, k string) string {
	if k == "" {
		return fmt.Sprintf("output[%d]", i)
	}
	return fmt.Sprintf("output[%d].%s", i, k)
}

// presentKeys lists the keys of a [[sensor]] or [[output]] table that are
// set: present in the source, or non-zero when built in code.
func presentKeys(v any, prefix string, src *sourceIndex) []string {
	rv := reflect.ValueOf(v)
	rt := rv.Type()
	var out []string
	for i := 0; i < rt.NumField(); i++ {
		tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if src.has(prefix+"."+tag) || !rv.Field(i).IsZero() {
			out = append(out, tag)
		}
	}
	return out
}

func (c *Config) validateSensors(ps *problems) {
	names := map[string]int{}
	for i, s := range c.Sensors {
		key := func(k string) string { return sensorKey(i, k) }
		checkName(ps, key("name"), s.Name, "sensor", names, i)
		kind, ok := sensorKinds[s.Kind]
		if !ok {
			if s.Kind == "" {
				ps.add(key("kind"), nil, "is required", "one of: "+strings.Join(SensorKinds(), ", "))
			} else {
				ps.add(key("kind"), s.Kind, "is not a known sensor kind", "one of: "+strings.Join(SensorKinds(), ", "))
			}
			// Without a kind the other keys cannot be judged.
			continue
		}
		if !s.inherited { // an inherited interval was checked as telemetry.interval
			checkDuration(ps, key("interval"), s.Interval, 100*time.Millisecond, 24*time.Hour, "", `e.g. "10s"`)
		}
		allowed := slices.Concat(commonSensorKeys, kind.required, kind.optional)
		present := presentKeys(s, sensorKey(i, ""), c.src)
		for _, k := range present {
			if !slices.Contains(allowed, k) {
				ps.add(key(k), nil, fmt.Sprintf("is not used by sensor kind %q", s.Kind),
					"remove it; keys for this kind: "+strings.Join(allowed, ", "))
				continue
			}
			if chk, ok := sensorKeyChecks[k]; ok {
				chk(s, key(k), ps)
			}
		}
		for _, k := range kind.required {
			if !slices.Contains(present, k) {
				ps.add(key(k), nil, fmt.Sprintf("is required for sensor kind %q", s.Kind), "")
			}
		}
		if kind.check != nil {
			kind.check(s, key, ps)
		}
	}
}

func (c *Config) validateOutputs(ps *problems) {
	names := map[string]int{}
	for i, o := range c.Outputs {
		key := func(k string) string { return outputKey(i, k) }
		checkName(ps, key("name"), o.Name, "output", names, i)
		kind, ok := outputKinds[o.Kind]
		if !ok {
			if o.Kind == "" {
				ps.add(key("kind"), nil, "is required", "one of: "+strings.Join(OutputKinds(), ", "))
			} else {
				ps.add(key("kind"), o.Kind, "is not a known output kind", "one of: "+strings.Join(OutputKinds(), ", "))
			}
			continue
		}
		allowed := slices.Concat(commonOutputKeys, kind.required, kind.optional)
		present := presentKeys(o, outputKey(i, ""), c.src)
		for _, k := range present {
			if !slices.Contains(allowed, k) {
				ps.add(key(k), nil, fmt.Sprintf("is not used by output kind %q", o.Kind),
					"remove it; keys for this kind: "+strings.Join(allowed, ", "))
			}
		}
		if slices.Contains(kind.required, "pin") || slices.Contains(present, "pin") {
			checkPin(o.Pin, key("pin"), ps)
		}
		if slices.Contains(allowed, "initial") {
			checkEnum(ps, key("initial"), o.Initial, []string{"low", "high"}, "the safe state set at start and restored at shutdown")
		}
		if kind.pending != "" {
			ps.add(key("kind"), o.Kind, kind.pending, "remove this [[output]] table for now")
		}
	}
}

var reName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// checkName checks a sensor or output name: non-empty, [a-z0-9_-], unique.
func checkName(ps *problems, key, name, what string, seen map[string]int, i int) {
	switch {
	case name == "":
		ps.add(key, nil, "is required", fmt.Sprintf("give every %s a short unique name, e.g. \"env\"", what))
		return
	case !reName.MatchString(name):
		ps.add(key, name, "names use only a-z, 0-9, _ and - (at most 64)",
			fmt.Sprintf("e.g. %q", suggestName(name)))
	}
	if j, dup := seen[name]; dup {
		ps.add(key, name, fmt.Sprintf("is already the name of %s[%d]", what, j), fmt.Sprintf("%s names must be unique", what))
		return
	}
	seen[name] = i
}

func suggestName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		case r == ' ' || r == '.':
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	if b.Len() == 0 {
		return "env"
	}
	return b.String()
}
