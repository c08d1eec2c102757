package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// minimal is the smallest valid configuration: DPS with a key file.
const minimal = `
[provisioning]
id_scope = "0ne00000A0A"
registration_id = "gw-{serial}"
[provisioning.attestation]
key_file = "/etc/fieldgate/device.key"
`

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	return e.Problems
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimal)
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"log_level", c.LogLevel, "info"},
		{"log_format", c.LogFormat, "text"},
		{"state.dir", c.State.Dir, "/var/lib/fieldgate"},
		{"state.spool_max_bytes", c.State.SpoolMaxBytes, ByteSize(64 << 20)},
		{"time.ntp_servers", c.Time.NTPServers, []string{"pool.ntp.org"}},
		{"time.trust_system_clock", c.Time.TrustSystemClock(), false},
		{"time.sync_timeout", c.Time.SyncTimeout.D(), 5 * time.Second},
		{"time.resync_interval", c.Time.ResyncInterval.D(), 15 * time.Minute},
		{"time.step_system_clock", c.Time.StepSystemClock, false},
		{"provisioning.source", c.Provisioning.Source, "dps"},
		{"provisioning.global_endpoint", c.Provisioning.GlobalEndpoint, "https://global.azure-devices-provisioning.net"},
		{"provisioning.attestation.method", c.Provisioning.Attestation.Method, "symmetric_key"},
		{"hub.transport", c.Hub.Transport, "mqtt"},
		{"hub.token_ttl", c.Hub.TokenTTL.D(), time.Hour},
		{"hub.keep_alive", c.Hub.KeepAlive.D(), 4 * time.Minute},
		{"telemetry.interval", c.Telemetry.Interval.D(), 30 * time.Second},
		{"telemetry.max_message_bytes", c.Telemetry.MaxMessageBytes, 4096},
		{"telemetry.batch_window", c.Telemetry.BatchWindow.D(), time.Second},
		{"telemetry.max_messages_per_second", c.Telemetry.MaxMessagesPerSecond, 10.0},
		{"path", c.Path, "test.toml"},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if !reflect.DeepEqual(ch.got, ch.want) {
				t.Fatalf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
			}
		})
	}
}

func TestDefaultMatchesParsedDefaults(t *testing.T) {
	d := Default()
	c := mustParse(t, minimal)
	d.Provisioning.IDScope, d.Provisioning.RegistrationID = c.Provisioning.IDScope, c.Provisioning.RegistrationID
	d.Provisioning.Attestation.KeyFile = c.Provisioning.Attestation.KeyFile
	d.Path, d.src = c.Path, c.src
	if !reflect.DeepEqual(d, c) {
		t.Fatalf("Default() differs from a parsed minimal config:\n%#v\n%#v", d, c)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("Default() plus an identity does not validate: %v", err)
	}
}

func TestNTPServersEmptyVersusAbsent(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		want  []string
		trust bool
	}{
		{"absent uses the default", minimal, []string{"pool.ntp.org"}, false},
		{"explicit empty trusts the system clock", minimal + "[time]\nntp_servers = []\n", []string{}, true},
		{"explicit list", minimal + "[time]\nntp_servers = [\"ntp1\", \"10.0.0.1:1123\"]\n", []string{"ntp1", "10.0.0.1:1123"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.doc)
			if !reflect.DeepEqual(c.Time.NTPServers, tt.want) || c.Time.TrustSystemClock() != tt.trust {
				t.Fatalf("ntp_servers = %#v trust=%v, want %#v trust=%v", c.Time.NTPServers, c.Time.TrustSystemClock(), tt.want, tt.trust)
			}
		})
	}
	t.Run("built in code: nil vs empty", func(t *testing.T) {
		c := &Config{Time: Time{NTPServers: []string{}}}
		c.ApplyDefaults()
		if !c.Time.TrustSystemClock() {
			t.Fatalf("non-nil empty list was replaced by %v", c.Time.NTPServers)
		}
		if d := Default(); d.Time.TrustSystemClock() {
			t.Fatal("nil list did not get the default server")
		}
	})
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "configs", "fieldgate.toml"))
	if err != nil {
		t.Fatalf("configs/fieldgate.toml does not load:\n%v", err)
	}
	if len(c.Sensors) == 0 {
		t.Fatal("the example has no sensors")
	}
}

// TestExampleConfigDocumentsEveryKey checks that every key of the schema
// appears in configs/fieldgate.toml (set or in a comment).
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "fieldgate.toml"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			t.Run(prefix+tag, func(t *testing.T) {
				if !strings.Contains(doc, tag) {
					t.Fatalf("key %s%s is not documented in configs/fieldgate.toml", prefix, tag)
				}
			})
			ft := f.Type
			for ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(prefix+tag+".", ft)
			}
		}
	}
	walk("", configType)
}

func TestRelativePathsResolveAgainstConfigDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.toml")
	doc := `
[state]
dir = "state"
[provisioning]
id_scope = "0ne00000A0A"
registration_id = "demo"
[provisioning.attestation]
group_key_file = "keys/group.key"
[hub]
ca_file = "/abs/ca.pem"
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, got, want string }{
		{"state.dir", c.State.Dir, filepath.Join(dir, "state")},
		{"group_key_file", c.Provisioning.Attestation.GroupKeyFile, filepath.Join(dir, "keys", "group.key")},
		{"absolute ca_file unchanged", c.Hub.CAFile, "/abs/ca.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestSensorIntervalInheritance(t *testing.T) {
	c := mustParse(t, minimal+`
[telemetry]
interval = "20s"
[[sensor]]
name = "own"
kind = "simulated"
values = ["temperature_c"]
interval = "2s"
[[sensor]]
name = "inherits"
kind = "simulated"
values = ["voltage_v"]
`)
	own, _ := c.Sensor("own")
	inh, _ := c.Sensor("inherits")
	if own.Interval.D() != 2*time.Second || own.InheritsInterval() {
		t.Fatalf("own = %v inherits=%v", own.Interval, own.InheritsInterval())
	}
	if inh.Interval.D() != 20*time.Second || !inh.InheritsInterval() {
		t.Fatalf("inherits = %v inherits=%v", inh.Interval, inh.InheritsInterval())
	}
	if own.Period.D() != DefaultSimulatedPeriod {
		t.Fatalf("period default = %v", own.Period)
	}
	c.SetTelemetryInterval(time.Minute)
	own, _ = c.Sensor("own")
	inh, _ = c.Sensor("inherits")
	if own.Interval.D() != 2*time.Second || inh.Interval.D() != time.Minute || c.Telemetry.Interval.D() != time.Minute {
		t.Fatalf("after SetTelemetryInterval: own %v, inherits %v, telemetry %v", own.Interval, inh.Interval, c.Telemetry.Interval)
	}
	c.Sensors[1].SetInterval(5 * time.Second)
	c.SetTelemetryInterval(2 * time.Minute)
	if inh, _ = c.Sensor("inherits"); inh.Interval.D() != 5*time.Second || inh.InheritsInterval() {
		t.Fatalf("after SetInterval: %v inherits=%v", inh.Interval, inh.InheritsInterval())
	}
	if _, ok := c.Sensor("missing"); ok {
		t.Fatal("Sensor(missing) found something")
	}
}

func TestKeySource(t *testing.T) {
	tests := []struct {
		a    Attestation
		want string
	}{
		{Attestation{KeyFile: "/k"}, "key_file /k"},
		{Attestation{GroupKeyFile: "/g"}, "group_key_file /g"},
		{Attestation{KeyCredential: "c"}, "key_credential c"},
		{Attestation{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.a.KeySource(); got != tt.want {
				t.Fatalf("KeySource() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKindTables(t *testing.T) {
	if got := SensorKinds(); !reflect.DeepEqual(got, []string{"ads1115", "aht20", "bme280", "bmp280", "ds18b20", "gpio_in", "i2c_register", "ina219", "mcp9808", "simulated", "system"}) {
		t.Fatalf("SensorKinds() = %v", got)
	}
	if got := OutputKinds(); !reflect.DeepEqual(got, []string{"gpio"}) {
		t.Fatalf("OutputKinds() = %v", got)
	}
	req, opt, ok := SensorKindKeys("simulated")
	if !ok || !reflect.DeepEqual(req, []string{"values"}) || !reflect.DeepEqual(opt, []string{"period", "seed"}) {
		t.Fatalf("SensorKindKeys(simulated) = %v %v %v", req, opt, ok)
	}
	if _, _, ok := SensorKindKeys("nope"); ok {
		t.Fatal("SensorKindKeys(nope) ok")
	}
	// Every key a kind names must be a field of Sensor.
	for _, kind := range SensorKinds() {
		req, opt, _ := SensorKindKeys(kind)
		for _, k := range append(req, opt...) {
			if fieldType("sensor."+k) == nil {
				t.Errorf("kind %s names key %q, which Sensor does not have", kind, k)
			}
		}
	}
}

// TestMarshalRoundTrip: a parsed configuration written with go-toml parses
// back to the same values (tools such as the emulator's init write configs).
func TestMarshalRoundTrip(t *testing.T) {
	docs := map[string]string{
		"example":               "",
		"manual, trusted clock": manualBase + "[time]\nntp_servers = []\n[[sensor]]\nname=\"a\"\nkind=\"simulated\"\nvalues=[\"x\"]\nseed = 3\n",
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			var c *Config
			if doc == "" {
				var err error
				if c, err = Load(filepath.Join("..", "..", "configs", "fieldgate.toml")); err != nil {
					t.Fatal(err)
				}
			} else {
				c = mustParse(t, doc)
			}
			b, err := toml.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b, "")
			if err != nil {
				t.Fatalf("marshalled config does not parse:\n%v\n%s", err, b)
			}
			back.Path, back.src = c.Path, c.src
			for i := range back.Sensors {
				back.Sensors[i].inherited = c.Sensors[i].inherited
			}
			if !reflect.DeepEqual(back, c) {
				t.Fatalf("round trip differs:\n%#v\n%#v", back, c)
			}
		})
	}
}

func TestShippedConfigsParse(t *testing.T) {
	for _, p := range []string{"../../configs/hardware-example.toml", "../../packaging/config.toml"} {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if _, err := Load(p); err != nil {
				t.Fatalf("Load(%s): %v", p, err)
			}
		})
	}
}
