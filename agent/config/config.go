package config

import (
	"path/filepath"
	"time"
)

// DefaultPath is where fieldgate looks for its configuration when --config is
// not given.
const DefaultPath = "/etc/fieldgate/config.toml"

// Default values of the keys in Config. Each is documented in
// configs/fieldgate.toml.
const (
	DefaultLogLevel             = "info"
	DefaultLogFormat            = "text"
	DefaultStateDir             = "/var/lib/fieldgate"
	DefaultSpoolMaxBytes        = ByteSize(64 << 20)
	DefaultNTPServer            = "pool.ntp.org"
	DefaultSyncTimeout          = 5 * time.Second
	DefaultResyncInterval       = 15 * time.Minute
	DefaultSource               = SourceDPS
	DefaultGlobalEndpoint       = "https://global.azure-devices-provisioning.net"
	DefaultMethod               = MethodSymmetricKey
	DefaultTransport            = TransportMQTT
	DefaultTokenTTL             = time.Hour
	DefaultKeepAlive            = 4 * time.Minute
	DefaultTelemetryInterval    = 30 * time.Second
	DefaultMaxMessageBytes      = 4096
	DefaultBatchWindow          = time.Second
	DefaultMaxMessagesPerSecond = 10
	DefaultSimulatedPeriod      = 10 * time.Minute
	DefaultOutputInitial        = "low"
)

// Enumerated values.
const (
	SourceDPS    = "dps"
	SourceManual = "manual"

	MethodSymmetricKey = "symmetric_key"

	TransportMQTT   = "mqtt"
	TransportMQTTWS = "mqtt-ws"
)

// Config is the whole agent configuration file.
type Config struct {
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level" json:"log_level"`
	// LogFormat is text or json (slog handlers on stderr).
	LogFormat string `toml:"log_format" json:"log_format"`

	State        State        `toml:"state" json:"state"`
	Time         Time         `toml:"time" json:"time"`
	Provisioning Provisioning `toml:"provisioning" json:"provisioning"`
	Hub          Hub          `toml:"hub" json:"hub"`
	Telemetry    Telemetry    `toml:"telemetry" json:"telemetry"`
	Sensors      []Sensor     `toml:"sensor,omitempty" json:"sensors"`
	Outputs      []Output     `toml:"output,omitempty" json:"outputs"`

	// Path is the file the configuration was read from ("" when parsed from
	// memory without a name). Relative file paths in the configuration have
	// been resolved against its directory.
	Path string `toml:"-" json:"path,omitempty"`

	// src locates keys in the source text for line numbers; nil when the
	// Config was built in code.
	src *sourceIndex
}

// State is the [state] section: where the agent keeps its durable state.
type State struct {
	// Dir holds the spool, the sequence counter and the provisioning cache.
	Dir string `toml:"dir" json:"dir"`
	// SpoolMaxBytes bounds the telemetry spool; the oldest records are dropped
	// (and counted) when it is full.
	SpoolMaxBytes ByteSize `toml:"spool_max_bytes" json:"spool_max_bytes"`
}

// Time is the [time] section: NTP-corrected time.
type Time struct {
	// NTPServers are host or host:port entries. An explicit empty list means
	// "trust the system clock"; an absent key means [DefaultNTPServer].
	NTPServers []string `toml:"ntp_servers" json:"ntp_servers"`
	// SyncTimeout bounds one query to one server.
	SyncTimeout Duration `toml:"sync_timeout" json:"sync_timeout"`
	// ResyncInterval is the time between two synchronisations.
	ResyncInterval Duration `toml:"resync_interval" json:"resync_interval"`
	// StepSystemClock sets the system clock from NTP (needs CAP_SYS_TIME).
	StepSystemClock bool `toml:"step_system_clock" json:"step_system_clock"`
}

// TrustSystemClock reports whether NTP is disabled (ntp_servers = []).
func (t Time) TrustSystemClock() bool { return len(t.NTPServers) == 0 }

// Provisioning is the [provisioning] section: how the device finds its hub.
type Provisioning struct {
	// Source is "dps" (register with the Device Provisioning Service) or
	// "manual" (HubHost and DeviceID are given).
	Source string `toml:"source" json:"source"`
	// GlobalEndpoint is the DPS base URL (https).
	GlobalEndpoint string `toml:"global_endpoint" json:"global_endpoint"`
	// IDScope is the DPS instance's ID Scope.
	IDScope string `toml:"id_scope,omitempty" json:"id_scope,omitempty"`
	// RegistrationID is a template; see ExpandRegistrationID.
	RegistrationID string `toml:"registration_id,omitempty" json:"registration_id,omitempty"`
	// Payload is sent to custom allocation policies (JSON object).
	Payload map[string]any `toml:"payload,omitempty" json:"payload,omitempty"`
	// HubHost is the IoT Hub host name (source = "manual"); ":port" allowed.
	HubHost string `toml:"hub_host,omitempty" json:"hub_host,omitempty"`
	// DeviceID is the device identity on the hub (source = "manual").
	DeviceID string `toml:"device_id,omitempty" json:"device_id,omitempty"`

	Attestation Attestation `toml:"attestation" json:"attestation"`
}

// Attestation is [provisioning.attestation]: where the key comes from.
// Exactly one of KeyFile, GroupKeyFile and KeyCredential is set.
type Attestation struct {
	// Method is "symmetric_key" (the only method for now).
	Method string `toml:"method" json:"method"`
	// KeyFile holds the base64 per-device key (mode 0600 or 0400).
	KeyFile string `toml:"key_file,omitempty" json:"key_file,omitempty"`
	// GroupKeyFile holds a base64 enrollment-group key; the device key is
	// derived from it and the registration id at start (source = "dps" only).
	GroupKeyFile string `toml:"group_key_file,omitempty" json:"group_key_file,omitempty"`
	// KeyCredential names a systemd credential holding the per-device key,
	// read from $CREDENTIALS_DIRECTORY/<name>.
	KeyCredential string `toml:"key_credential,omitempty" json:"key_credential,omitempty"`
}

// KeySource describes where the key comes from, for plans and logs (never
// the key itself): "key_file /etc/fieldgate/device.key",
// "group_key_file ...", "key_credential name" or "" when none is set.
func (a Attestation) KeySource() string {
	switch {
	case a.KeyFile != "":
		return "key_file " + a.KeyFile
	case a.GroupKeyFile != "":
		return "group_key_file " + a.GroupKeyFile
	case a.KeyCredential != "":
		return "key_credential " + a.KeyCredential
	}
	return ""
}

// Hub is the [hub] section: the IoT Hub MQTT session.
type Hub struct {
	// Transport is "mqtt" (TLS on 8883) or "mqtt-ws" (WebSocket on 443).
	Transport string `toml:"transport" json:"transport"`
	// TokenTTL is the lifetime of each device SAS token; the session
	// reconnects with a fresh token at 80 % of it.
	TokenTTL Duration `toml:"token_ttl" json:"token_ttl"`
	// KeepAlive is the MQTT keep-alive.
	KeepAlive Duration `toml:"keep_alive" json:"keep_alive"`
	// CAFile holds extra PEM roots trusted for DPS and the hub.
	CAFile string `toml:"ca_file,omitempty" json:"ca_file,omitempty"`
	// ModelID is an IoT Plug and Play model id (DTMI), sent at connect.
	ModelID string `toml:"model_id,omitempty" json:"model_id,omitempty"`
}

// Telemetry is the [telemetry] section.
type Telemetry struct {
	// Interval is the default sampling interval of sensors.
	Interval Duration `toml:"interval" json:"interval"`
	// MaxMessageBytes bounds one telemetry message body.
	MaxMessageBytes int `toml:"max_message_bytes" json:"max_message_bytes"`
	// BatchWindow is how long the publisher waits to fill a message.
	BatchWindow Duration `toml:"batch_window" json:"batch_window"`
	// MaxMessagesPerSecond limits the publish rate.
	MaxMessagesPerSecond float64 `toml:"max_messages_per_second" json:"max_messages_per_second"`
}

// Sensor is one [[sensor]] table. Name, Kind and Interval apply to every kind;
// the other keys belong to particular kinds (see kinds.go) and are rejected
// for kinds that do not use them.
type Sensor struct {
	Name string `toml:"name" json:"name"`
	Kind string `toml:"kind" json:"kind"`
	// Interval is the sampling interval; defaults to telemetry.interval.
	Interval Duration `toml:"interval" json:"interval"`

	// Values lists the readings a "simulated" sensor produces.
	Values []string `toml:"values,omitempty" json:"values,omitempty"`
	// Period is the waveform period of a "simulated" sensor.
	Period Duration `toml:"period,omitempty" json:"period,omitzero"`
	// Seed varies the deterministic noise of a "simulated" sensor.
	Seed int64 `toml:"seed,omitempty" json:"seed,omitempty"`

	// Hardware keys (used by kinds of the hardware issue).

	// Bus is an I2C bus number ("1") or device path ("/dev/i2c-1").
	Bus string `toml:"bus,omitempty" json:"bus,omitempty"`
	// Address is a 7-bit I2C address, e.g. 0x76.
	Address int `toml:"address,omitempty" json:"address,omitempty"`
	// Pin is a GPIO name, e.g. "GPIO17".
	Pin string `toml:"pin,omitempty" json:"pin,omitempty"`
	// Pull is "up", "down" or "none".
	Pull string `toml:"pull,omitempty" json:"pull,omitempty"`
	// Edge is "none", "rising", "falling" or "both".
	Edge string `toml:"edge,omitempty" json:"edge,omitempty"`
	// Debounce ignores edges closer together than this.
	Debounce Duration `toml:"debounce,omitempty" json:"debounce,omitzero"`

	// Register is the first register an "i2c_register" sensor reads (default 0x00).
	Register int `toml:"register,omitempty" json:"register,omitempty"`
	// Length is how many bytes an "i2c_register" sensor reads: 1 to 4 (default 2).
	Length int `toml:"length,omitempty" json:"length,omitempty"`
	// Signed reads the "i2c_register" bytes as a two's-complement integer.
	Signed bool `toml:"signed,omitempty" json:"signed,omitempty"`
	// ByteOrder is "big" (most significant byte first, the default) or "little".
	ByteOrder string `toml:"byte_order,omitempty" json:"byte_order,omitempty"`
	// Scale multiplies the raw integer of an "i2c_register" sensor (default 1).
	Scale float64 `toml:"scale,omitempty" json:"scale,omitempty"`
	// Offset is added after scaling.
	Offset float64 `toml:"offset,omitempty" json:"offset,omitempty"`
	// Value names the reading of an "i2c_register" sensor, e.g. "temperature_c".
	Value string `toml:"value,omitempty" json:"value,omitempty"`
	// ShuntOhms is the shunt resistor of an "ina219" (default 0.1).
	ShuntOhms float64 `toml:"shunt_ohms,omitempty" json:"shunt_ohms,omitempty"`
	// MaxCurrentA is the largest current an "ina219" must measure (default 3.2).
	MaxCurrentA float64 `toml:"max_current_a,omitempty" json:"max_current_a,omitempty"`
	// Channels are the inputs an "ads1115" converts, one reading value each.
	Channels []ADCChannel `toml:"channels,omitempty" json:"channels,omitempty"`
	// Device selects one 1-wire sensor of a "ds18b20", e.g. "28-0316a2795aff";
	// empty reads every DS18B20 the kernel lists.
	Device string `toml:"device,omitempty" json:"device,omitempty"`

	// inherited is true when Interval came from telemetry.interval.
	inherited bool
}

// ADCChannel is one [[sensor.channels]] table of an "ads1115".
type ADCChannel struct {
	// Input is "A0".."A3" (single-ended against GND) or a differential pair
	// "A0-A1", "A0-A3", "A1-A3", "A2-A3".
	Input string `toml:"input" json:"input"`
	// FullScaleV selects the gain: ±6.144, 4.096 (default), 2.048, 1.024,
	// 0.512 or 0.256 volts.
	FullScaleV float64 `toml:"full_scale_v,omitempty" json:"full_scale_v,omitempty"`
	// Value names the reading; default "a0_v" (or "a0_a1_v" for a pair).
	Value string `toml:"value,omitempty" json:"value,omitempty"`
	// Scale multiplies the measured volts (default 1); Offset is added after,
	// so a 0–10 V divider or a 4–20 mA shunt reads in its own unit.
	Scale  float64 `toml:"scale,omitempty" json:"scale,omitempty"`
	Offset float64 `toml:"offset,omitempty" json:"offset,omitempty"`
}

// InheritsInterval reports whether the sensor has no interval of its own and
// follows telemetry.interval (so a change of the telemetry interval, e.g. from
// the twin, applies to it).
func (s Sensor) InheritsInterval() bool { return s.inherited }

// SetInterval gives the sensor an interval of its own (as a twin
// "sensors.<name>.interval" update does); it no longer follows
// telemetry.interval.
func (s *Sensor) SetInterval(d time.Duration) {
	s.Interval = Duration{d}
	s.inherited = false
}

// Output is one [[output]] table (GPIO outputs arrive with the hardware
// issue; see kinds.go).
type Output struct {
	Name string `toml:"name" json:"name"`
	Kind string `toml:"kind" json:"kind"`
	// Pin is a GPIO name, e.g. "GPIO27".
	Pin string `toml:"pin,omitempty" json:"pin,omitempty"`
	// Initial is the safe state, "low" or "high", set at start and restored
	// on shutdown.
	Initial string `toml:"initial,omitempty" json:"initial,omitempty"`
	// ActiveLow inverts the logical on/off state relative to the pin level.
	ActiveLow bool `toml:"active_low,omitempty" json:"active_low,omitempty"`
}

// Default returns a configuration with every default applied and no
// provisioning identity; it does not validate (a dps source without
// id_scope is incomplete).
func Default() *Config {
	c := &Config{}
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills every unset key with its default. A nil
// Time.NTPServers becomes [DefaultNTPServer]; a non-nil empty slice stays
// empty (trust the system clock). Sensors without an interval take
// telemetry.interval.
func (c *Config) ApplyDefaults() {
	setStr(&c.LogLevel, DefaultLogLevel)
	setStr(&c.LogFormat, DefaultLogFormat)
	setStr(&c.State.Dir, DefaultStateDir)
	if c.State.SpoolMaxBytes == 0 && !c.src.has("state.spool_max_bytes") {
		c.State.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
	if c.Time.NTPServers == nil {
		c.Time.NTPServers = []string{DefaultNTPServer}
	}
	setDur(&c.Time.SyncTimeout, DefaultSyncTimeout, c.src, "time.sync_timeout")
	setDur(&c.Time.ResyncInterval, DefaultResyncInterval, c.src, "time.resync_interval")
	setStr(&c.Provisioning.Source, DefaultSource)
	setStr(&c.Provisioning.GlobalEndpoint, DefaultGlobalEndpoint)
	setStr(&c.Provisioning.Attestation.Method, DefaultMethod)
	setStr(&c.Hub.Transport, DefaultTransport)
	setDur(&c.Hub.TokenTTL, DefaultTokenTTL, c.src, "hub.token_ttl")
	setDur(&c.Hub.KeepAlive, DefaultKeepAlive, c.src, "hub.keep_alive")
	setDur(&c.Telemetry.Interval, DefaultTelemetryInterval, c.src, "telemetry.interval")
	if c.Telemetry.MaxMessageBytes == 0 && !c.src.has("telemetry.max_message_bytes") {
		c.Telemetry.MaxMessageBytes = DefaultMaxMessageBytes
	}
	setDur(&c.Telemetry.BatchWindow, DefaultBatchWindow, c.src, "telemetry.batch_window")
	if c.Telemetry.MaxMessagesPerSecond == 0 && !c.src.has("telemetry.max_messages_per_second") {
		c.Telemetry.MaxMessagesPerSecond = DefaultMaxMessagesPerSecond
	}
	for i := range c.Sensors {
		s := &c.Sensors[i]
		if s.Interval.Duration == 0 && !c.src.has(sensorKey(i, "interval")) {
			s.Interval = c.Telemetry.Interval
			s.inherited = true
		}
		if k, ok := sensorKinds[s.Kind]; ok && k.defaults != nil {
			k.defaults(s, c.src, i)
		}
	}
	for i := range c.Outputs {
		o := &c.Outputs[i]
		if k, ok := outputKinds[o.Kind]; ok && k.defaults != nil {
			k.defaults(o)
		}
	}
}

// SetTelemetryInterval changes telemetry.interval and every sensor that
// inherits it (InheritsInterval), as a twin "telemetryInterval" update does.
func (c *Config) SetTelemetryInterval(d time.Duration) {
	c.Telemetry.Interval = Duration{d}
	for i := range c.Sensors {
		if c.Sensors[i].inherited {
			c.Sensors[i].Interval = Duration{d}
		}
	}
}

// Sensor returns the sensor named name, or false.
func (c *Config) Sensor(name string) (Sensor, bool) {
	for _, s := range c.Sensors {
		if s.Name == name {
			return s, true
		}
	}
	return Sensor{}, false
}

// resolvePaths makes relative file paths absolute against dir (the
// configuration file's directory), so a config and its key files can be
// moved together.
func (c *Config) resolvePaths(dir string) {
	for _, p := range []*string{
		&c.State.Dir, &c.Hub.CAFile,
		&c.Provisioning.Attestation.KeyFile, &c.Provisioning.Attestation.GroupKeyFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

func setStr(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

// setDur applies a default to an unset duration; an explicit "0s" in the
// source is kept so validation can name it.
func setDur(p *Duration, def time.Duration, src *sourceIndex, key string) {
	if p.Duration == 0 && !src.has(key) {
		p.Duration = def
	}
}
