package config

import (
	"reflect"
	"strings"
	"testing"
)

const manualBase = `
[provisioning]
source = "manual"
hub_host = "myhub.azure-devices.net"
device_id = "gw-1"
[provisioning.attestation]
key_file = "/k"
`

func sensor(extra string) string {
	return minimal + "[[sensor]]\nname = \"env\"\nkind = \"simulated\"\nvalues = [\"temperature_c\"]\n" + extra
}

// TestValidateProblems checks each rule: the document yields a problem for
// wantKey whose text contains every wantText.
func TestValidateProblems(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		wantKey  string
		wantText []string
	}{
		{"log_level enum", "log_level = \"verbose\"\n" + minimal, "log_level", []string{`"verbose"`, `"debug"`}},
		{"log_level case", "log_level = \"INFO\"\n" + minimal, "log_level", []string{`lower case: "info"`}},
		{"log_format enum", "log_format = \"xml\"\n" + minimal, "log_format", []string{`"json"`}},
		{"spool too small", minimal + "[state]\nspool_max_bytes = \"10KB\"\n", "state.spool_max_bytes", []string{`"10KB"`, "256KiB"}},
		{"spool too large", minimal + "[state]\nspool_max_bytes = \"2GiB\"\n", "state.spool_max_bytes", []string{"1GiB"}},
		{"spool plain zero", minimal + "[state]\nspool_max_bytes = 0\n", "state.spool_max_bytes", []string{"between"}},
		{"ntp bad port", minimal + "[time]\nntp_servers = [\"pool.ntp.org:0\"]\n", "time.ntp_servers[0]", []string{"1 to 65535"}},
		{"ntp port too big", minimal + "[time]\nntp_servers = [\"a\", \"b:70000\"]\n", "time.ntp_servers[1]", []string{`"70000"`}},
		{"ntp url", minimal + "[time]\nntp_servers = [\"udp://pool.ntp.org\"]\n", "time.ntp_servers[0]", []string{"not a URL"}},
		{"ntp bad host", minimal + "[time]\nntp_servers = [\"bad host\"]\n", "time.ntp_servers[0]", []string{"not a valid host name"}},
		{"ntp empty", minimal + "[time]\nntp_servers = [\"\"]\n", "time.ntp_servers[0]", []string{"must not be empty"}},
		{"sync_timeout zero", minimal + "[time]\nsync_timeout = \"0s\"\n", "time.sync_timeout", []string{"at least 100ms"}},
		{"resync too often", minimal + "[time]\nresync_interval = \"10s\"\n", "time.resync_interval", []string{"at least 1m", "public NTP"}},
		{"source enum", "[provisioning]\nsource = \"x509\"\n", "provisioning.source", []string{`"dps", "manual"`}},
		{"method enum", minimal + "method = \"x509\"\n", "provisioning.attestation.method", []string{`"symmetric_key"`, "X.509"}},
		{"dps needs id_scope", "[provisioning]\nregistration_id = \"a\"\n[provisioning.attestation]\nkey_file = \"/k\"\n", "provisioning.id_scope", []string{`source = "dps"`, "ID Scope"}},
		{"id_scope chars", strings.Replace(minimal, "0ne00000A0A", "0ne/../x", 1), "provisioning.id_scope", []string{"letters and digits"}},
		{"dps needs registration_id", "[provisioning]\nid_scope = \"0ne1\"\n[provisioning.attestation]\nkey_file = \"/k\"\n", "provisioning.registration_id", []string{"required", "{serial}"}},
		{"unknown placeholder", strings.Replace(minimal, "gw-{serial}", "gw-{uuid}", 1), "provisioning.registration_id", []string{"{uuid}", "{machine_id}"}},
		{"unclosed placeholder", strings.Replace(minimal, "gw-{serial}", "gw-{serial", 1), "provisioning.registration_id", []string{"without '}'"}},
		{"bad literal char", strings.Replace(minimal, "gw-{serial}", "gw/{serial}", 1), "provisioning.registration_id", []string{`'/'`}},
		{"bad last char", strings.Replace(minimal, "gw-{serial}", "{serial}.", 1), "provisioning.registration_id", []string{"must end"}},
		{"too long", strings.Replace(minimal, "gw-{serial}", strings.Repeat("a", 129), 1), "provisioning.registration_id", []string{"128"}},
		{"dps needs a key", "[provisioning]\nid_scope = \"0ne1\"\nregistration_id = \"a\"\n", "provisioning.attestation", []string{"key_file", "group_key_file", "key_credential"}},
		{"dps one key only", minimal + "key_credential = \"dev\"\n", "provisioning.attestation.key_credential", []string{"only one", "key_file, key_credential"}},
		{"dps rejects hub_host", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\nhub_host = \"h\"\n", 1), "provisioning.hub_host", []string{`only used with source = "manual"`}},
		{"dps rejects device_id", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\ndevice_id = \"d\"\n", 1), "provisioning.device_id", []string{`source = "manual"`}},
		{"endpoint http", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\nglobal_endpoint = \"http://dps\"\n", 1), "provisioning.global_endpoint", []string{"https"}},
		{"endpoint path", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\nglobal_endpoint = \"https://dps/x\"\n", 1), "provisioning.global_endpoint", []string{"path"}},
		{"endpoint port", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\nglobal_endpoint = \"https://dps:0\"\n", 1), "provisioning.global_endpoint", []string{"65535"}},
		{"endpoint userinfo", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\nglobal_endpoint = \"https://u:p@dps\"\n", 1), "provisioning.global_endpoint", []string{"user name"}},
		{"payload not json", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\npayload = { x = nan }\n", 1), "provisioning.payload", []string{"JSON"}},
		{"credential name with slash", strings.Replace(minimal, `key_file = "/etc/fieldgate/device.key"`, `key_credential = "../key"`, 1), "provisioning.attestation.key_credential", []string{"credential name"}},
		{"manual needs hub_host", strings.Replace(manualBase, "hub_host = \"myhub.azure-devices.net\"\n", "", 1), "provisioning.hub_host", []string{"required"}},
		{"manual hub_host url", strings.Replace(manualBase, "\"myhub.azure-devices.net\"", "\"https://myhub\"", 1), "provisioning.hub_host", []string{"not a URL"}},
		{"manual needs device_id", strings.Replace(manualBase, "device_id = \"gw-1\"\n", "", 1), "provisioning.device_id", []string{"required"}},
		{"manual device_id chars", strings.Replace(manualBase, "\"gw-1\"", "\"gw 1\"", 1), "provisioning.device_id", []string{"not a valid IoT Hub device id"}},
		{"manual needs a key", strings.Replace(manualBase, "key_file = \"/k\"\n", "", 1), "provisioning.attestation", []string{"key_file or key_credential"}},
		{"manual rejects group key", strings.Replace(manualBase, "key_file", "group_key_file", 1), "provisioning.attestation.group_key_file", []string{"derive-key"}},
		{"manual rejects id_scope", strings.Replace(manualBase, "device_id", "id_scope = \"s\"\ndevice_id", 1), "provisioning.id_scope", []string{`source = "dps"`}},
		{"manual rejects explicit endpoint", strings.Replace(manualBase, "device_id", "global_endpoint = \"https://dps.example\"\ndevice_id", 1), "provisioning.global_endpoint", []string{`source = "dps"`}},
		{"manual rejects payload", strings.Replace(manualBase, "device_id", "payload = {a = 1}\ndevice_id", 1), "provisioning.payload", []string{`source = "dps"`}},
		{"manual two keys", manualBase + "key_credential = \"c\"\n", "provisioning.attestation.key_credential", []string{"only one"}},
		{"transport enum", minimal + "[hub]\ntransport = \"amqp\"\n", "hub.transport", []string{`"mqtt-ws"`}},
		{"token_ttl too short", minimal + "[hub]\ntoken_ttl = \"10s\"\n", "hub.token_ttl", []string{"at least 1m", "80%"}},
		{"token_ttl too long", minimal + "[hub]\ntoken_ttl = \"48h\"\n", "hub.token_ttl", []string{"at most 24h"}},
		{"keep_alive too long", minimal + "[hub]\nkeep_alive = \"20m\"\n", "hub.keep_alive", []string{"at most 1177s", "1767s"}},
		{"keep_alive too short", minimal + "[hub]\nkeep_alive = \"5s\"\n", "hub.keep_alive", []string{"at least 30s"}},
		{"model_id", minimal + "[hub]\nmodel_id = \"com:example;1\"\n", "hub.model_id", []string{"dtmi:"}},
		{"interval too short", minimal + "[telemetry]\ninterval = \"500ms\"\n", "telemetry.interval", []string{`"500ms"`, "at least 1s"}},
		{"max_message_bytes small", minimal + "[telemetry]\nmax_message_bytes = 100\n", "telemetry.max_message_bytes", []string{"512 and 262144"}},
		{"max_message_bytes large", minimal + "[telemetry]\nmax_message_bytes = 300000\n", "telemetry.max_message_bytes", []string{"256 KiB"}},
		{"batch_window negative", minimal + "[telemetry]\nbatch_window = \"-1s\"\n", "telemetry.batch_window", []string{"negative"}},
		{"rate zero", minimal + "[telemetry]\nmax_messages_per_second = 0\n", "telemetry.max_messages_per_second", []string{"more than 0"}},
		{"rate too high", minimal + "[telemetry]\nmax_messages_per_second = 1000\n", "telemetry.max_messages_per_second", []string{"at most 100"}},
		{"sensor name missing", minimal + "[[sensor]]\nkind = \"simulated\"\nvalues = [\"a\"]\n", "sensor[0].name", []string{"required"}},
		{"sensor name chars", sensor("") + "[[sensor]]\nname = \"Living Room\"\nkind = \"simulated\"\nvalues = [\"a\"]\n", "sensor[1].name", []string{"a-z", `"living_room"`}},
		{"sensor name duplicate", sensor("") + "[[sensor]]\nname = \"env\"\nkind = \"simulated\"\nvalues = [\"a\"]\n", "sensor[1].name", []string{"sensor[0]", "unique"}},
		{"sensor kind missing", minimal + "[[sensor]]\nname = \"a\"\n", "sensor[0].kind", []string{"required", "simulated"}},
		{"sensor kind unknown", minimal + "[[sensor]]\nname = \"a\"\nkind = \"bme281\"\n", "sensor[0].kind", []string{`"bme281"`, "one of: ads1115, aht20, bme280, bmp280, ds18b20, gpio_in, i2c_register, ina219, mcp9808, simulated, system"}},
		{"sensor interval", sensor("interval = \"50ms\"\n"), "sensor[0].interval", []string{"at least 100ms"}},
		{"hardware key on simulated", sensor("pin = \"GPIO4\"\n"), "sensor[0].pin", []string{`not used by sensor kind "simulated"`, "values, period, seed"}},
		{"zero-valued hardware key still counts", sensor("address = 0\n"), "sensor[0].address", []string{"not used"}},
		{"debounce on simulated", sensor("debounce = \"20ms\"\n"), "sensor[0].debounce", []string{"not used"}},
		{"values missing", minimal + "[[sensor]]\nname = \"a\"\nkind = \"simulated\"\n", "sensor[0].values", []string{`required for sensor kind "simulated"`}},
		{"values empty", minimal + "[[sensor]]\nname = \"a\"\nkind = \"simulated\"\nvalues = []\n", "sensor[0].values", []string{"at least one"}},
		{"values bad name", sensor("") + "[[sensor]]\nname = \"b\"\nkind = \"simulated\"\nvalues = [\"ok\", \"Temp C\"]\n", "sensor[1].values[1]", []string{`"Temp C"`, "a-z, 0-9 and _"}},
		{"values duplicate", sensor("") + "[[sensor]]\nname = \"b\"\nkind = \"simulated\"\nvalues = [\"x\", \"x\"]\n", "sensor[1].values[1]", []string{"twice"}},
		{"period too short", sensor("period = \"100ms\"\n"), "sensor[0].period", []string{"at least 1s"}},
		{"bme280 without bus", minimal + "[[sensor]]\nname = \"a\"\nkind = \"bme280\"\n", "sensor[0].bus", []string{"required"}},
		{"bme280 bad address", minimal + "[[sensor]]\nname = \"a\"\nkind = \"bme280\"\nbus = \"1\"\naddress = 0x80\n", "sensor[0].address", []string{"0x03..0x77"}},
		{"ina219 zero shunt", minimal + "[[sensor]]\nname = \"pwr\"\nkind = \"ina219\"\nbus = \"1\"\nshunt_ohms = 0.0\n", "sensor[0].shunt_ohms", []string{"more than 0", "R100"}},
		{"ina219 negative current", minimal + "[[sensor]]\nname = \"pwr\"\nkind = \"ina219\"\nbus = \"1\"\nmax_current_a = -1.0\n", "sensor[0].max_current_a", []string{"more than 0"}},
		{"ads1115 without channels", minimal + "[[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nbus = \"1\"\n", "sensor[0].channels", []string{`required for sensor kind "ads1115"`}},
		{"ads1115 bad input", minimal + "[[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nbus = \"1\"\n[[sensor.channels]]\ninput = \"A4\"\n", "sensor[0].channels[0].input", []string{`"A4"`, "A0-A1"}},
		{"ads1115 bad gain", minimal + "[[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nbus = \"1\"\n[[sensor.channels]]\ninput = \"A0\"\nfull_scale_v = 5.0\n", "sensor[0].channels[0].full_scale_v", []string{"6.144", "0.256"}},
		{"ads1115 duplicate input", minimal + "[[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nbus = \"1\"\n[[sensor.channels]]\ninput = \"A0\"\n[[sensor.channels]]\ninput = \"A0\"\nvalue = \"other_v\"\n", "sensor[0].channels[1].input", []string{"channels[0]"}},
		{"ads1115 duplicate value", minimal + "[[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nbus = \"1\"\n[[sensor.channels]]\ninput = \"A0\"\nvalue = \"x_v\"\n[[sensor.channels]]\ninput = \"A1\"\nvalue = \"x_v\"\n", "sensor[0].channels[1].value", []string{"channels[0]"}},
		{"ads1115 zero scale", minimal + "[[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nbus = \"1\"\n[[sensor.channels]]\ninput = \"A0\"\nscale = 0.0\n", "sensor[0].channels[0].scale", []string{"must not be 0"}},
		{"i2c_register without value", minimal + "[[sensor]]\nname = \"t\"\nkind = \"i2c_register\"\nbus = \"1\"\naddress = 0x48\n", "sensor[0].value", []string{"required"}},
		{"i2c_register length", minimal + "[[sensor]]\nname = \"t\"\nkind = \"i2c_register\"\nbus = \"1\"\naddress = 0x48\nvalue = \"t_c\"\nlength = 8\n", "sensor[0].length", []string{"1 to 4"}},
		{"i2c_register register", minimal + "[[sensor]]\nname = \"t\"\nkind = \"i2c_register\"\nbus = \"1\"\naddress = 0x48\nvalue = \"t_c\"\nregister = 0x100\n", "sensor[0].register", []string{"0x100", "0x00..0xff"}},
		{"i2c_register byte order", minimal + "[[sensor]]\nname = \"t\"\nkind = \"i2c_register\"\nbus = \"1\"\naddress = 0x48\nvalue = \"t_c\"\nbyte_order = \"msb\"\n", "sensor[0].byte_order", []string{`"big", "little"`}},
		{"i2c_register value name", minimal + "[[sensor]]\nname = \"t\"\nkind = \"i2c_register\"\nbus = \"1\"\naddress = 0x48\nvalue = \"Temp\"\n", "sensor[0].value", []string{`"Temp"`, "a-z"}},
		{"aht20 address fixed", minimal + "[[sensor]]\nname = \"th\"\nkind = \"aht20\"\nbus = \"1\"\naddress = 0x39\n", "sensor[0].address", []string{"0x39", "aht20", "no address pin"}},
		{"mcp9808 address range", minimal + "[[sensor]]\nname = \"t\"\nkind = \"mcp9808\"\nbus = \"1\"\naddress = 0x48\n", "sensor[0].address", []string{"0x48", "0x18..0x1f"}},
		{"ads1115 address range", minimal + "[[sensor]]\nname = \"adc\"\nkind = \"ads1115\"\nbus = \"1\"\naddress = 0x40\n[[sensor.channels]]\ninput = \"A0\"\n", "sensor[0].address", []string{"0x48..0x4b"}},
		{"ds18b20 bad device", minimal + "[[sensor]]\nname = \"probe\"\nkind = \"ds18b20\"\ndevice = \"10-abc\"\n", "sensor[0].device", []string{`"10-abc"`, "/sys/bus/w1/devices"}},
		{"gpio_in bad edge", minimal + "[[sensor]]\nname = \"door\"\nkind = \"gpio_in\"\npin = \"GPIO17\"\nedge = \"up\"\n", "sensor[0].edge", []string{"rising"}},
		{"output kind unknown", minimal + "[[output]]\nname = \"relay\"\nkind = \"pwm\"\n", "output[0].kind", []string{"not a known output kind"}},
		{"output initial", minimal + "[[output]]\nname = \"relay\"\nkind = \"gpio\"\npin = \"GPIO27\"\ninitial = \"on\"\n", "output[0].initial", []string{`"low", "high"`}},
		{"output pin missing", minimal + "[[output]]\nname = \"relay\"\nkind = \"gpio\"\n", "output[0].pin", []string{"required"}},
		{"output name duplicate", minimal + "[[output]]\nname = \"r\"\nkind = \"gpio\"\npin = \"GPIO1\"\n[[output]]\nname = \"r\"\nkind = \"gpio\"\npin = \"GPIO2\"\n", "output[1].name", []string{"output[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), "test.toml")
			if err == nil {
				t.Fatalf("no error; want a problem for %s", tt.wantKey)
			}
			for _, p := range problemsOf(t, err) {
				if p.Key != tt.wantKey {
					continue
				}
				text := p.String()
				ok := true
				for _, w := range tt.wantText {
					ok = ok && strings.Contains(text, w)
				}
				if ok {
					if p.Line == 0 {
						t.Fatalf("problem %q has no line number", text)
					}
					return
				}
			}
			t.Fatalf("no problem for %s containing %q in:\n%v", tt.wantKey, tt.wantText, err)
		})
	}
}

func TestValidConfigs(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"minimal dps", minimal},
		{"manual with key file", manualBase},
		{"manual with credential and port", strings.Replace(strings.Replace(manualBase, "key_file = \"/k\"", "key_credential = \"fieldgate-key\"", 1), "myhub.azure-devices.net", "localhost:8883", 1)},
		{"group key", strings.Replace(minimal, "key_file", "group_key_file", 1)},
		{"emulator endpoint with port", strings.Replace(minimal, "[provisioning]\n", "[provisioning]\nglobal_endpoint = \"https://localhost:8443\"\npayload = { site = \"plant-7\", n = 3 }\n", 1)},
		{"every placeholder", strings.Replace(minimal, "gw-{serial}", "{serial}-{machine_id}-{hostname}-{mac}", 1)},
		{"ntp variants", minimal + "[time]\nntp_servers = [\"pool.ntp.org\", \"10.0.0.1:123\", \"[::1]:123\", \"::1\", \"time.example.com.\"]\n"},
		{"all bounds", minimal + `
[hub]
transport = "mqtt-ws"
token_ttl = "1m"
keep_alive = "1177s"
model_id = "dtmi:com:example:Gateway;1"
[telemetry]
interval = "1s"
max_message_bytes = 262144
batch_window = "0s"
max_messages_per_second = 0.5
[state]
spool_max_bytes = 262144
`},
		{"sensors", sensor("interval = \"100ms\"\nperiod = \"1s\"\nseed = -7\n") + "[[sensor]]\nname = \"power_1\"\nkind = \"simulated\"\nvalues = [\"voltage_v\", \"current_a\"]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.doc), "test.toml"); err != nil {
				t.Fatalf("unexpected problems:\n%v", err)
			}
		})
	}
}

func TestValidateReportsAllAtOnceInLineOrder(t *testing.T) {
	doc := `log_level = "loud"
[state]
spool_max_bytes = "1KiB"
[provisioning]
source = "manual"
[hub]
keep_alive = "1h"
[telemetry]
interval = "0s"
[[sensor]]
name = "env"
kind = "simulated"
values = []
`
	_, err := Parse([]byte(doc), "/etc/fieldgate/config.toml")
	ps := problemsOf(t, err)
	want := []struct {
		key  string
		line int
	}{
		{"log_level", 1},
		{"state.spool_max_bytes", 3},
		{"provisioning.hub_host", 4},
		{"provisioning.device_id", 4},
		{"provisioning.attestation", 4},
		{"hub.keep_alive", 7},
		{"telemetry.interval", 9},
		{"sensor[0].values", 13},
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), err)
	}
	for i, w := range want {
		if ps[i].Key != w.key || ps[i].Line != w.line {
			t.Errorf("problem %d = %s at line %d, want %s at line %d", i, ps[i].Key, ps[i].Line, w.key, w.line)
		}
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("Error() has %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	if got := lines[6]; got != `/etc/fieldgate/config.toml:9: telemetry.interval = "0s": must be at least 1s (e.g. "30s")` {
		t.Fatalf("line 7 of Error() = %q", got)
	}
}

func TestValidateCodeBuiltConfig(t *testing.T) {
	c := Default()
	c.Provisioning.Source = SourceManual
	c.Provisioning.HubHost = "hub.example"
	c.Provisioning.DeviceID = "d1"
	c.Provisioning.Attestation.KeyFile = "/k"
	c.Sensors = []Sensor{{Name: "s", Kind: "simulated", Values: []string{"temperature_c"}, Pin: "GPIO4"}}
	c.ApplyDefaults()
	err := c.Validate()
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Key != "sensor[0].pin" || ps[0].Line != 0 {
		t.Fatalf("problems = %v", err)
	}
	if !strings.HasPrefix(err.Error(), "config: sensor[0].pin: ") {
		t.Fatalf("Error() = %q", err)
	}
	c.Sensors[0].Pin = ""
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestHardwareKeyChecks(t *testing.T) {
	// No kind uses these keys yet; exercise the per-key checks directly so
	// the hardware kinds inherit working validators.
	tests := []struct {
		name    string
		s       Sensor
		key     string
		wantErr string
	}{
		{"bus number", Sensor{Bus: "1"}, "bus", ""},
		{"bus path", Sensor{Bus: "/dev/i2c-20"}, "bus", ""},
		{"bus bad", Sensor{Bus: "i2c1"}, "bus", "not an I2C bus"},
		{"address ok", Sensor{Address: 0x76}, "address", ""},
		{"address too high", Sensor{Address: 0x80}, "address", "0x80"},
		{"pin ok", Sensor{Pin: "GPIO17"}, "pin", ""},
		{"pin bad", Sensor{Pin: "17 "}, "pin", "not a GPIO name"},
		{"pull ok", Sensor{Pull: "up"}, "pull", ""},
		{"pull bad", Sensor{Pull: "pullup"}, "pull", `"up", "down", "none"`},
		{"edge ok", Sensor{Edge: "both"}, "edge", ""},
		{"edge bad", Sensor{Edge: "any"}, "edge", "rising"},
		{"debounce ok", Sensor{Debounce: Duration{20e6}}, "debounce", ""},
		{"debounce too long", Sensor{Debounce: Duration{2e9}}, "debounce", "at most 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := &problems{}
			sensorKeyChecks[tt.key](tt.s, "sensor[0]."+tt.key, ps)
			if tt.wantErr == "" {
				if len(ps.list) != 0 {
					t.Fatalf("unexpected problems %v", ps.list)
				}
				return
			}
			if len(ps.list) != 1 || !strings.Contains(ps.list[0].String(), tt.wantErr) {
				t.Fatalf("problems = %v, want one containing %q", ps.list, tt.wantErr)
			}
		})
	}
}

func TestHardwareKindDefaults(t *testing.T) {
	doc := minimal + `
[[sensor]]
name = "pwr"
kind = "ina219"
bus = "1"

[[sensor]]
name = "adc"
kind = "ads1115"
bus = "/dev/i2c-1"
[[sensor.channels]]
input = "A0"
[[sensor.channels]]
input = "A2-A3"
full_scale_v = 0.256
value = "shunt_v"
scale = 2.5
offset = -1.0

[[sensor]]
name = "tmp102"
kind = "i2c_register"
bus = "1"
address = 0x48
value = "temperature_c"
signed = true
scale = 0.00390625

[[sensor]]
name = "probe"
kind = "ds18b20"

[[sensor]]
name = "th"
kind = "aht20"
bus = "1"

[[sensor]]
name = "precise"
kind = "mcp9808"
bus = "1"
`
	c, err := Parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"ina219 address", c.Sensors[0].Address, 0x40},
		{"ina219 shunt", c.Sensors[0].ShuntOhms, DefaultShuntOhms},
		{"ina219 max current", c.Sensors[0].MaxCurrentA, DefaultMaxCurrentA},
		{"ads1115 address", c.Sensors[1].Address, 0x48},
		{"ads1115 default channel", c.Sensors[1].Channels[0], ADCChannel{Input: "A0", FullScaleV: DefaultFullScaleV, Value: "a0_v", Scale: 1}},
		{"ads1115 explicit channel", c.Sensors[1].Channels[1], ADCChannel{Input: "A2-A3", FullScaleV: 0.256, Value: "shunt_v", Scale: 2.5, Offset: -1}},
		{"i2c_register register", c.Sensors[2].Register, 0},
		{"i2c_register length", c.Sensors[2].Length, 2},
		{"i2c_register byte order", c.Sensors[2].ByteOrder, "big"},
		{"i2c_register scale", c.Sensors[2].Scale, 0.00390625},
		{"i2c_register signed", c.Sensors[2].Signed, true},
		{"ds18b20 device", c.Sensors[3].Device, ""},
		{"aht20 address", c.Sensors[4].Address, 0x38},
		{"mcp9808 address", c.Sensors[5].Address, 0x18},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}
