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
	"aht20": {
		summary:  "Aosong AHT20 temperature and humidity over I2C (periph aht20)",
		required: []string{"bus"},
		optional: []string{"address"},
		defaults: defaultAddress(0x38),
		check:    addressRange(0x38, 0x38, "the AHT20 has no address pin; remove the address key"),
	},
	"mcp9808": {
		summary:  "Microchip MCP9808 ±0.25 °C temperature over I2C (periph mcp9808)",
		required: []string{"bus"},
		optional: []string{"address"},
		defaults: defaultAddress(0x18),
		check:    addressRange(0x18, 0x1f, "pins A0–A2 select 0x18..0x1f"),
	},
	"ina219": {
		summary:  "TI INA219 bus voltage, current and power over I2C (periph ina219)",
		required: []string{"bus"},
		optional: []string{"address", "shunt_ohms", "max_current_a"},
		defaults: func(s *Sensor, src *sourceIndex, i int) {
			defaultAddress(0x40)(s, src, i)
			setFloat(&s.ShuntOhms, DefaultShuntOhms, src, sensorKey(i, "shunt_ohms"))
			setFloat(&s.MaxCurrentA, DefaultMaxCurrentA, src, sensorKey(i, "max_current_a"))
		},
		check: func(s Sensor, key func(string) string, ps *problems) {
			addressRange(0x40, 0x4f, "pins A0 and A1 select 0x40..0x4f")(s, key, ps)
			checkINA219(s, key, ps)
		},
	},
	"ads1115": {
		summary:  "TI ADS1115 16-bit ADC over I2C, channels with gain (periph ads1x15)",
		required: []string{"bus", "channels"},
		optional: []string{"address"},
		defaults: func(s *Sensor, src *sourceIndex, i int) {
			defaultAddress(0x48)(s, src, i)
			for j := range s.Channels {
				c := &s.Channels[j]
				k := fmt.Sprintf("%s[%d]", sensorKey(i, "channels"), j)
				setFloat(&c.FullScaleV, DefaultFullScaleV, src, k+".full_scale_v")
				setFloat(&c.Scale, 1, src, k+".scale")
				if c.Value == "" && reADCInput.MatchString(c.Input) {
					c.Value = strings.ReplaceAll(strings.ToLower(c.Input), "-", "_") + "_v"
				}
			}
		},
		check: func(s Sensor, key func(string) string, ps *problems) {
			addressRange(0x48, 0x4b, "the ADDR pin selects 0x48..0x4b")(s, key, ps)
			checkADS1115(s, key, ps)
		},
	},
	"i2c_register": {
		summary:  "any I2C chip: read 1-4 bytes from a register, scale and offset them",
		required: []string{"bus", "address", "value"},
		optional: []string{"register", "length", "signed", "byte_order", "scale", "offset"},
		defaults: func(s *Sensor, src *sourceIndex, i int) {
			if s.Length == 0 && !src.has(sensorKey(i, "length")) {
				s.Length = 2
			}
			setStr(&s.ByteOrder, "big")
			setFloat(&s.Scale, 1, src, sensorKey(i, "scale"))
		},
		check: checkI2CRegister,
	},
	"ds18b20": {
		summary:  "Maxim DS18B20 1-wire temperature through the kernel w1 driver (dtoverlay=w1-gpio)",
		optional: []string{"device"},
	},
}

// Defaults of the hardware kinds.
const (
	DefaultShuntOhms   = 0.1 // Ω, the common breakout boards
	DefaultMaxCurrentA = 3.2 // A, the breakout's range with 0.1 Ω at ±320 mV
	DefaultFullScaleV  = 4.096
)

// ADS1115FullScales are the programmable full-scale ranges of the ADS1115, in volts.
var ADS1115FullScales = []float64{6.144, 4.096, 2.048, 1.024, 0.512, 0.256}

// addressRange checks that a chip's address is one it can have.
func addressRange(lo, hi int, fix string) func(s Sensor, key func(string) string, ps *problems) {
	return func(s Sensor, key func(string) string, ps *problems) {
		if s.Address != 0 && (s.Address < lo || s.Address > hi) && s.Address >= 0x03 && s.Address <= 0x77 {
			ps.add(key("address"), rawValue(fmt.Sprintf("0x%x", s.Address)), fmt.Sprintf("is not an address the %s answers at", s.Kind), fix)
		}
	}
}

// setFloat applies a default to an unset number; an explicit 0 in the source
// is kept so validation can name it.
func setFloat(p *float64, def float64, src *sourceIndex, key string) {
	if *p == 0 && !src.has(key) {
		*p = def
	}
}

func checkINA219(s Sensor, key func(string) string, ps *problems) {
	if !(s.ShuntOhms > 0 && s.ShuntOhms <= 100) {
		ps.add(key("shunt_ohms"), s.ShuntOhms, "must be more than 0 and at most 100 ohms",
			"the value printed on the shunt resistor, e.g. 0.1 (R100)")
	}
	if !(s.MaxCurrentA > 0 && s.MaxCurrentA <= 100) {
		ps.add(key("max_current_a"), s.MaxCurrentA, "must be more than 0 and at most 100 A",
			"the largest current the circuit draws, e.g. 3.2")
	}
}

func checkADS1115(s Sensor, key func(string) string, ps *problems) {
	if len(s.Channels) > 8 {
		ps.add(key("channels"), rawValue(fmt.Sprintf("[%d channels]", len(s.Channels))), "has more than 8 channels",
			"the ADS1115 has 4 single-ended inputs and 4 differential pairs")
	}
	seenIn, seenVal := map[string]int{}, map[string]int{}
	for j, c := range s.Channels {
		ck := func(k string) string { return fmt.Sprintf("%s[%d].%s", key("channels"), j, k) }
		switch {
		case c.Input == "":
			ps.add(ck("input"), nil, "is required", `"A0".."A3", or a pair "A0-A1", "A0-A3", "A1-A3", "A2-A3"`)
		case !reADCInput.MatchString(c.Input):
			ps.add(ck("input"), c.Input, "is not an ADS1115 input", `"A0".."A3", or a pair "A0-A1", "A0-A3", "A1-A3", "A2-A3"`)
		default:
			if prev, dup := seenIn[c.Input]; dup {
				ps.add(ck("input"), c.Input, fmt.Sprintf("is already read by channels[%d]", prev), "list each input once")
			}
			seenIn[c.Input] = j
		}
		if !slices.Contains(ADS1115FullScales, c.FullScaleV) {
			ps.add(ck("full_scale_v"), c.FullScaleV, "is not a full-scale range of the ADS1115",
				"one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256 (volts; pick the smallest above your largest input)")
		}
		checkValueName(ps, ck("value"), c.Value)
		if c.Value != "" {
			if prev, dup := seenVal[c.Value]; dup {
				ps.add(ck("value"), c.Value, fmt.Sprintf("is already the value of channels[%d]", prev), "give each channel its own value name")
			}
			seenVal[c.Value] = j
		}
		if c.Scale == 0 {
			ps.add(ck("scale"), c.Scale, "must not be 0 (every reading would be 0)", "1 for volts, or the divider ratio")
		}
	}
}

func checkI2CRegister(s Sensor, key func(string) string, ps *problems) {
	if s.Register < 0 || s.Register > 0xff {
		ps.add(key("register"), rawValue(fmt.Sprintf("0x%x", s.Register)), "is outside 0x00..0xff", "the register address from the chip's datasheet, e.g. 0x05")
	}
	if s.Length < 1 || s.Length > 4 {
		ps.add(key("length"), s.Length, "must be 1 to 4 bytes", "e.g. 2 for a 16-bit register")
	}
	checkEnum(ps, key("byte_order"), s.ByteOrder, []string{"big", "little"}, "most I2C chips send the high byte first (big)")
	checkValueName(ps, key("value"), s.Value)
	if s.Scale == 0 {
		ps.add(key("scale"), s.Scale, "must not be 0 (every reading would be 0)", "the datasheet's LSB weight, e.g. 0.0625")
	}
}

// checkValueName checks a reading value name.
func checkValueName(ps *problems, key, v string) {
	if !reValueName.MatchString(v) {
		ps.add(key, v, "value names use only a-z, 0-9 and _ (at most 64)", `name the quantity and its unit, e.g. "temperature_c"`)
	}
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
	"device": func(s Sensor, key string, ps *problems) {
		if !reW1Device.MatchString(s.Device) {
			ps.add(key, s.Device, "is not a DS18B20 1-wire id", `as listed in /sys/bus/w1/devices, e.g. "28-0316a2795aff"`)
		}
	},
	"debounce": func(s Sensor, key string, ps *problems) {
		checkDuration(ps, key, s.Debounce, 0, time.Second, "contact bounce settles within a few ms; more than 1s would swallow real events", `e.g. "20ms"`)
	},
}

var (
	reI2CBus    = regexp.MustCompile(`^([0-9]{1,3}|/dev/i2c-[0-9]{1,3})$`)
	rePin       = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)
	reValueName = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	reADCInput  = regexp.MustCompile(`^(A[0-3]|A0-A1|A0-A3|A1-A3|A2-A3)$`)
	reW1Device  = regexp.MustCompile(`^28-[0-9a-f]{12}$`)
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
