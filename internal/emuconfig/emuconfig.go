// Package emuconfig owns emulator.toml, the configuration of the
// fieldgate-emulator binary: its schema, strict loading with every error
// reported at once (field, value, line, fix) and writing (for
// `fieldgate-emulator init`).
//
// The file holds secrets (the service policy key, enrollment and device keys);
// it is written with mode 0600 and no error of this package ever contains a key.
// Only cmd/fieldgate-emulator and tests import this package.
package emuconfig

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/fieldgate/fieldgate/sas"
)

// Defaults applied by Load to keys that are absent.
const (
	DefaultHubHost           = "localhost"
	DefaultMQTTAddr          = "127.0.0.1:8883"
	DefaultHTTPSAddr         = "127.0.0.1:8443"
	DefaultStateDir          = "state"
	DefaultCAFile            = "ca.pem"
	DefaultCAKeyFile         = "ca-key.pem"
	DefaultDPSRetryAfter     = 3
	DefaultServicePolicyName = "iothubowner"
	MaxDPSRetryAfter         = 300
)

// Config is a loaded emulator.toml. After Load every default is applied and
// StateDir, CAFile and CAKeyFile are absolute (relative values are resolved
// against the configuration file's directory). Key fields are base64 secrets:
// never log a Config.
type Config struct {
	HubHost       string        // hub_host: host name devices connect to and sign for
	IDScope       string        // id_scope: DPS ID scope
	MQTTAddr      string        // mqtt_addr: host:port of the MQTT over TLS listener
	HTTPSAddr     string        // https_addr: host:port of the HTTPS listener (DPS, WebSocket, service API)
	StateDir      string        // state_dir: where the hub and DPS emulators persist
	CAFile        string        // ca_file: CA certificate (PEM) the server certificate is issued from
	CAKeyFile     string        // ca_key_file: CA private key (PEM, mode 0600)
	TokenGrace    time.Duration // token_grace: how long a connection may outlive its SAS token
	DPSRetryAfter int           // dps_retry_after: Retry-After seconds DPS sends while assigning

	ServicePolicy    Policy
	EnrollmentGroups []EnrollmentGroup
	Enrollments      []Enrollment
	Devices          []Device
}

// Policy is the hub's shared access policy used by the service API.
type Policy struct {
	Name string // skn of service tokens
	Key  string // base64 secret
}

// EnrollmentGroup is a DPS symmetric-key enrollment group: any registration id
// whose key is derived from Key may register.
type EnrollmentGroup struct {
	ID       string
	Key      string // base64 secret
	Disabled bool
}

// Enrollment is a DPS individual enrollment.
type Enrollment struct {
	RegistrationID string
	Key            string // base64 secret
	DeviceID       string // defaults to RegistrationID
	Disabled       bool
}

// Device is an identity pre-registered in the hub (no DPS needed).
type Device struct {
	ID  string
	Key string // base64 secret
}

// file mirrors the TOML document. Pointers distinguish absent from zero.
type file struct {
	HubHost          *string         `toml:"hub_host"`
	IDScope          *string         `toml:"id_scope"`
	MQTTAddr         *string         `toml:"mqtt_addr"`
	HTTPSAddr        *string         `toml:"https_addr"`
	StateDir         *string         `toml:"state_dir"`
	CAFile           *string         `toml:"ca_file"`
	CAKeyFile        *string         `toml:"ca_key_file"`
	TokenGrace       *duration       `toml:"token_grace"`
	DPSRetryAfter    *int64          `toml:"dps_retry_after"`
	ServicePolicy    *filePolicy     `toml:"service_policy"`
	EnrollmentGroups []fileGroup     `toml:"enrollment_group"`
	Enrollments      []fileEnrolment `toml:"enrollment"`
	Devices          []fileDevice    `toml:"device"`
}

type filePolicy struct {
	Name *string `toml:"name"`
	Key  *string `toml:"key"`
}

type fileGroup struct {
	ID       string `toml:"id"`
	Key      string `toml:"key"`
	Disabled bool   `toml:"disabled"`
}

type fileEnrolment struct {
	RegistrationID string `toml:"registration_id"`
	Key            string `toml:"key"`
	DeviceID       string `toml:"device_id"`
	Disabled       bool   `toml:"disabled"`
}

type fileDevice struct {
	ID  string `toml:"id"`
	Key string `toml:"key"`
}

// duration decodes "30s"-style strings (go-toml only decodes integers into
// time.Duration).
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like \"30s\", \"5m\" or \"1h30m\"", string(b))
	}
	*d = duration(v)
	return nil
}

// FieldError is one problem in a configuration file.
type FieldError struct {
	Line    int    // 1-based line of the key, 0 when the key is absent or unknown
	Field   string // TOML key path, e.g. "enrollment[1].registration_id"
	Value   string // the offending value, quoted; empty for secrets and absent keys
	Problem string
	Fix     string
}

func (e FieldError) String() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Field)
	if e.Value != "" {
		b.WriteString(" = ")
		b.WriteString(e.Value)
	}
	b.WriteString(": ")
	b.WriteString(e.Problem)
	if e.Fix != "" {
		b.WriteString("; ")
		b.WriteString(e.Fix)
	}
	return b.String()
}

// Error lists every problem found in a configuration file.
type Error struct {
	Path   string // the file, empty when parsed from memory
	Errors []FieldError
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("emuconfig: ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if len(e.Errors) == 1 {
		b.WriteString(e.Errors[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "%d problems:", len(e.Errors))
	for _, fe := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(fe.String())
	}
	return b.String()
}

// Load reads and validates the emulator configuration at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("emuconfig: %w; create one with `fieldgate-emulator init DIR`", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("emuconfig: %s: %w", path, err)
	}
	cfg, err := Parse(data, filepath.Dir(abs))
	var ce *Error
	if errors.As(err, &ce) {
		ce.Path = path
	}
	return cfg, err
}

// Parse decodes and validates an emulator configuration held in memory;
// relative paths are resolved against baseDir. Errors are *Error.
func Parse(data []byte, baseDir string) (*Config, error) {
	var f file
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, &Error{Errors: decodeErrors(err)}
	}
	lines := locate(data)
	cfg, errs := resolve(&f, baseDir, lines)
	if len(errs) > 0 {
		return nil, &Error{Errors: errs}
	}
	return cfg, nil
}

func decodeErrors(err error) []FieldError {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		out := make([]FieldError, 0, len(sm.Errors))
		for _, de := range sm.Errors {
			line, _ := de.Position()
			out = append(out, FieldError{
				Line:    line,
				Field:   strings.Join(de.Key(), "."),
				Problem: "unknown key",
				Fix:     "check the spelling; known keys: " + knownKeys,
			})
		}
		return out
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		field := strings.Join(de.Key(), ".")
		if field == "" {
			field = "(document)"
		}
		return []FieldError{{Line: line, Field: field, Problem: strings.TrimPrefix(de.Error(), "toml: "), Fix: "fix the TOML syntax or value type"}}
	}
	return []FieldError{{Field: "(document)", Problem: err.Error()}}
}

const knownKeys = "hub_host, id_scope, mqtt_addr, https_addr, state_dir, ca_file, ca_key_file, token_grace, " +
	"dps_retry_after, [service_policy] name key, [[enrollment_group]] id key disabled, " +
	"[[enrollment]] registration_id key device_id disabled, [[device]] id key"

type validator struct {
	lines map[string]int
	errs  []FieldError
}

func (v *validator) add(field, value, problem, fix string) {
	v.errs = append(v.errs, FieldError{Line: v.line(field), Field: field, Value: value, Problem: problem, Fix: fix})
}

// line finds the line of field, or of its enclosing table.
func (v *validator) line(field string) int {
	for f := field; f != ""; {
		if l, ok := v.lines[f]; ok {
			return l
		}
		i := strings.LastIndexByte(f, '.')
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return 0
}

func (v *validator) key(field string, present bool, key string) {
	if !present || strings.TrimSpace(key) == "" {
		v.add(field, "", "missing", "set it to a base64 key, e.g. the output of `openssl rand -base64 32`, or run `fieldgate-emulator init`")
		return
	}
	if _, err := sas.ParseKey(key); err != nil {
		v.add(field, "", "is not a valid base64 key", "use standard base64 (A-Z a-z 0-9 + /, optional '=' padding), e.g. `openssl rand -base64 32`")
	}
}

func resolve(f *file, baseDir string, lines map[string]int) (*Config, []FieldError) {
	v := &validator{lines: lines}
	str := func(p *string, def string) string {
		if p == nil {
			return def
		}
		return *p
	}
	cfg := &Config{
		HubHost:       str(f.HubHost, DefaultHubHost),
		IDScope:       str(f.IDScope, ""),
		MQTTAddr:      str(f.MQTTAddr, DefaultMQTTAddr),
		HTTPSAddr:     str(f.HTTPSAddr, DefaultHTTPSAddr),
		StateDir:      str(f.StateDir, DefaultStateDir),
		CAFile:        str(f.CAFile, DefaultCAFile),
		CAKeyFile:     str(f.CAKeyFile, DefaultCAKeyFile),
		DPSRetryAfter: DefaultDPSRetryAfter,
	}
	if !validHost(cfg.HubHost) {
		v.add("hub_host", strconv.Quote(cfg.HubHost), "is not a host name", `use letters, digits, '-' and '.', e.g. "localhost"; the port is added from mqtt_addr`)
	}
	switch {
	case f.IDScope == nil || cfg.IDScope == "":
		v.add("id_scope", "", "missing", `set the DPS ID scope, e.g. "0ne00012AB3", or run fieldgate-emulator init`)
	case !validIDScope(cfg.IDScope):
		v.add("id_scope", strconv.Quote(cfg.IDScope), "must be 1 to 64 letters and digits", `e.g. "0ne00012AB3"`)
	}
	v.addr("mqtt_addr", cfg.MQTTAddr)
	v.addr("https_addr", cfg.HTTPSAddr)
	if cfg.MQTTAddr == cfg.HTTPSAddr && !strings.HasSuffix(cfg.MQTTAddr, ":0") {
		v.add("https_addr", strconv.Quote(cfg.HTTPSAddr), "is the same address as mqtt_addr", "give the two listeners different ports")
	}
	for _, p := range []struct {
		field string
		val   *string
	}{{"state_dir", &cfg.StateDir}, {"ca_file", &cfg.CAFile}, {"ca_key_file", &cfg.CAKeyFile}} {
		if strings.TrimSpace(*p.val) == "" || strings.ContainsRune(*p.val, 0) {
			v.add(p.field, strconv.Quote(*p.val), "is not a usable path", "give a directory or file path, relative to this file's directory or absolute")
			continue
		}
		if !filepath.IsAbs(*p.val) {
			*p.val = filepath.Join(baseDir, *p.val)
		}
		*p.val = filepath.Clean(*p.val)
	}
	if f.TokenGrace != nil {
		cfg.TokenGrace = time.Duration(*f.TokenGrace)
		if cfg.TokenGrace < 0 {
			v.add("token_grace", strconv.Quote(cfg.TokenGrace.String()), "is negative", `use "0s" (cut at expiry, the default) or a positive duration such as "5m"`)
		}
	}
	if f.DPSRetryAfter != nil {
		n := *f.DPSRetryAfter
		if n < 1 || n > MaxDPSRetryAfter {
			v.add("dps_retry_after", strconv.FormatInt(n, 10), fmt.Sprintf("must be between 1 and %d seconds", MaxDPSRetryAfter), "DPS usually sends 3")
		} else {
			cfg.DPSRetryAfter = int(n)
		}
	}

	cfg.ServicePolicy.Name = DefaultServicePolicyName
	var policyKeyPresent bool
	if sp := f.ServicePolicy; sp != nil {
		cfg.ServicePolicy.Name = str(sp.Name, DefaultServicePolicyName)
		if sp.Key != nil {
			policyKeyPresent = true
			cfg.ServicePolicy.Key = *sp.Key
		}
	}
	if !validName(cfg.ServicePolicy.Name, 64) {
		v.add("service_policy.name", strconv.Quote(cfg.ServicePolicy.Name), "is not a policy name", `use letters, digits, '-', '_' and '.', e.g. "iothubowner"`)
	}
	v.key("service_policy.key", policyKeyPresent, cfg.ServicePolicy.Key)

	groupIDs := map[string]int{}
	for i, g := range f.EnrollmentGroups {
		field := fmt.Sprintf("enrollment_group[%d]", i)
		switch {
		case g.ID == "":
			v.add(field+".id", "", "missing", `give the group an id, e.g. "default"`)
		case !validName(g.ID, 128):
			v.add(field+".id", strconv.Quote(g.ID), "is not a valid enrollment group id", "use letters, digits, '-', '_' and '.'")
		default:
			if j, dup := groupIDs[strings.ToLower(g.ID)]; dup {
				v.add(field+".id", strconv.Quote(g.ID), fmt.Sprintf("duplicates enrollment_group[%d].id", j), "give every group a different id")
			}
			groupIDs[strings.ToLower(g.ID)] = i
		}
		v.key(field+".key", true, g.Key)
		cfg.EnrollmentGroups = append(cfg.EnrollmentGroups, EnrollmentGroup(g))
	}

	regIDs := map[string]int{}
	enrolledDevices := map[string]int{}
	for i, e := range f.Enrollments {
		field := fmt.Sprintf("enrollment[%d]", i)
		switch {
		case e.RegistrationID == "":
			v.add(field+".registration_id", "", "missing", `set the device's registration id, e.g. "sensor-001"`)
		case !ValidRegistrationID(e.RegistrationID):
			v.add(field+".registration_id", strconv.Quote(e.RegistrationID), "is not a valid DPS registration id",
				"use at most 128 lower-case letters, digits and - . _ : ending with a letter, digit or '-'")
		default:
			if j, dup := regIDs[strings.ToLower(e.RegistrationID)]; dup {
				v.add(field+".registration_id", strconv.Quote(e.RegistrationID), fmt.Sprintf("duplicates enrollment[%d].registration_id", j), "registration ids are case-insensitive and unique")
			}
			regIDs[strings.ToLower(e.RegistrationID)] = i
		}
		v.key(field+".key", true, e.Key)
		dev := e.DeviceID
		if dev == "" {
			dev = e.RegistrationID
		}
		if e.DeviceID != "" && !ValidDeviceID(e.DeviceID) {
			v.add(field+".device_id", strconv.Quote(e.DeviceID), "is not a valid IoT Hub device id", "use at most 128 letters, digits and - . _ : ! ( ) , = @ $ ' * % (no spaces or '/')")
		} else if dev != "" {
			if j, dup := enrolledDevices[dev]; dup {
				v.add(field+".device_id", strconv.Quote(dev), fmt.Sprintf("is also the device of enrollment[%d]", j), "give each individual enrollment its own device id")
			}
			enrolledDevices[dev] = i
		}
		cfg.Enrollments = append(cfg.Enrollments, Enrollment{RegistrationID: e.RegistrationID, Key: e.Key, DeviceID: dev, Disabled: e.Disabled})
	}

	deviceIDs := map[string]int{}
	for i, d := range f.Devices {
		field := fmt.Sprintf("device[%d]", i)
		switch {
		case d.ID == "":
			v.add(field+".id", "", "missing", `set the device id, e.g. "sensor-001"`)
		case !ValidDeviceID(d.ID):
			v.add(field+".id", strconv.Quote(d.ID), "is not a valid IoT Hub device id", "use at most 128 letters, digits and - . _ : ! ( ) , = @ $ ' * % (no spaces or '/')")
		default:
			if j, dup := deviceIDs[d.ID]; dup {
				v.add(field+".id", strconv.Quote(d.ID), fmt.Sprintf("duplicates device[%d].id", j), "list every device once")
			}
			deviceIDs[d.ID] = i
		}
		v.key(field+".key", true, d.Key)
		cfg.Devices = append(cfg.Devices, Device(d))
	}
	return cfg, v.errs
}

func (v *validator) addr(field, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(field, strconv.Quote(addr), "is not host:port", `write it like "127.0.0.1:8883" (port 0 picks a free port)`)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(n, 10) != port {
		v.add(field, strconv.Quote(addr), fmt.Sprintf("port %q is not a number from 0 to 65535", port), `write it like "127.0.0.1:8883"`)
	}
	if host != "" && net.ParseIP(host) == nil && !validHost(host) {
		v.add(field, strconv.Quote(addr), fmt.Sprintf("host %q is not an IP address or host name", host), `use "127.0.0.1" (loopback, the default) or "0.0.0.0" to listen on every interface`)
	}
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 || h[0] == '-' || h[0] == '.' || h[len(h)-1] == '-' {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(isAlnum(c) || c == '-' || c == '.') {
			return false
		}
	}
	return !strings.Contains(h, "..")
}

func validIDScope(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func validName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// ValidRegistrationID reports whether s is a DPS registration id: at most 128
// characters of letters, digits and - . _ :, the last one a letter, digit or
// '-'.
func ValidRegistrationID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '-' || c == '.' || c == '_' || c == ':') {
			return false
		}
	}
	last := s[len(s)-1]
	return isAlnum(last) || last == '-'
}

// ValidDeviceID reports whether s is an IoT Hub device id: at most 128 ASCII
// letters, digits and - . _ : ! ( ) , = @ $ ' * %.
func ValidDeviceID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || strings.IndexByte("-._:!(),=@$'*%", c) >= 0) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
