package config

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// validateInto runs every rule, adding problems to ps.
func (c *Config) validateInto(ps *problems) {

	checkEnum(ps, "log_level", c.LogLevel, []string{"debug", "info", "warn", "error"}, "")
	checkEnum(ps, "log_format", c.LogFormat, []string{"text", "json"}, "")

	// [state]
	if c.State.Dir == "" {
		ps.add("state.dir", c.State.Dir, "must not be empty", `e.g. "`+DefaultStateDir+`"`)
	}
	if c.State.SpoolMaxBytes < 256<<10 || c.State.SpoolMaxBytes > 1<<30 {
		ps.add("state.spool_max_bytes", c.State.SpoolMaxBytes, "must be between 256KiB and 1GiB",
			`the spool lives in one file that must also fit a 32-bit (armv7) address space; e.g. "64MiB"`)
	}

	// [time]
	for i, s := range c.Time.NTPServers {
		if msg := checkHostPort(s, true); msg != "" {
			ps.add(fmt.Sprintf("time.ntp_servers[%d]", i), s, msg, `host or host:port, e.g. "pool.ntp.org" or "192.168.1.1:123"; use ntp_servers = [] to trust the system clock`)
		}
	}
	checkDuration(ps, "time.sync_timeout", c.Time.SyncTimeout, 100*time.Millisecond, time.Minute, "", `e.g. "5s"`)
	checkDuration(ps, "time.resync_interval", c.Time.ResyncInterval, time.Minute, 24*time.Hour,
		"more often than once a minute is abuse of public NTP servers", `e.g. "15m"`)

	c.validateProvisioning(ps)

	// [hub]
	checkEnum(ps, "hub.transport", c.Hub.Transport, []string{TransportMQTT, TransportMQTTWS},
		"mqtt-ws tunnels MQTT through HTTPS port 443 when 8883 is blocked")
	checkDuration(ps, "hub.token_ttl", c.Hub.TokenTTL, time.Minute, 24*time.Hour,
		"the session reconnects at 80% of the lifetime, so shorter tokens mean reconnect storms against the hub's connection throttle, and longer ones keep a leaked token valid for too long; Azure SDKs use 1h", `e.g. "1h"`)
	checkDuration(ps, "hub.keep_alive", c.Hub.KeepAlive, 30*time.Second, 1177*time.Second,
		"IoT Hub closes an idle connection after 1.5 × keep-alive capped at 1767s, so more than 1177s lets the load balancer cut it", `e.g. "4m"; stay below your NAT or cellular idle timeout`)
	if c.Hub.ModelID != "" && !reDTMI.MatchString(c.Hub.ModelID) {
		ps.add("hub.model_id", c.Hub.ModelID, "is not a Digital Twins model id", `e.g. "dtmi:com:example:Gateway;1"`)
	}

	// [telemetry]
	checkDuration(ps, "telemetry.interval", c.Telemetry.Interval, time.Second, 24*time.Hour, "", `e.g. "30s"`)
	if n := c.Telemetry.MaxMessageBytes; n < 512 || n > 262144 {
		ps.add("telemetry.max_message_bytes", n, "must be between 512 and 262144",
			"IoT Hub accepts at most 256 KiB per message and bills in 4 KiB units; e.g. 4096")
	}
	checkDuration(ps, "telemetry.batch_window", c.Telemetry.BatchWindow, 0, time.Minute, "", `e.g. "1s"; "0s" sends each reading at once`)
	if r := c.Telemetry.MaxMessagesPerSecond; !(r > 0 && r <= 100) {
		ps.add("telemetry.max_messages_per_second", r, "must be more than 0 and at most 100",
			"one device beyond 100 messages per second exhausts a whole S1 hub unit's throttle; e.g. 10")
	}

	c.validateSensors(ps)
	c.validateOutputs(ps)
}

var (
	reDTMI     = regexp.MustCompile(`^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}$`)
	reIDScope  = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)
	reDeviceID = regexp.MustCompile(`^[A-Za-z0-9\-.+%_#*?!(),:=@$']{1,128}$`)
	reCredName = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,255}$`)
)

func (c *Config) validateProvisioning(ps *problems) {
	p := c.Provisioning
	a := p.Attestation
	checkEnum(ps, "provisioning.source", p.Source, []string{SourceDPS, SourceManual},
		`"dps" registers with the Device Provisioning Service; "manual" connects to hub_host as device_id`)
	checkEnum(ps, "provisioning.attestation.method", a.Method, []string{MethodSymmetricKey},
		"X.509 and TPM attestation are not supported yet")
	if a.KeyCredential != "" && (!reCredName.MatchString(a.KeyCredential) || a.KeyCredential == "." || a.KeyCredential == "..") {
		ps.add("provisioning.attestation.key_credential", a.KeyCredential, "is not a systemd credential name",
			"use the name given to LoadCredential= in the unit, without a directory, e.g. \"fieldgate-device-key\"")
	}
	var keySources []string
	for _, k := range []struct{ key, val string }{
		{"key_file", a.KeyFile}, {"group_key_file", a.GroupKeyFile}, {"key_credential", a.KeyCredential},
	} {
		if k.val != "" {
			keySources = append(keySources, k.key)
		}
	}

	switch p.Source {
	case SourceDPS:
		if p.IDScope == "" {
			ps.add("provisioning.id_scope", nil, `is required when source = "dps"`, "copy the ID Scope from the DPS overview page, e.g. \"0ne00000A0A\"")
		} else if !reIDScope.MatchString(p.IDScope) {
			ps.add("provisioning.id_scope", p.IDScope, "is not a DPS ID Scope (letters and digits only)", "copy it from the DPS overview page, e.g. \"0ne00000A0A\"")
		}
		if p.RegistrationID == "" {
			ps.add("provisioning.registration_id", nil, `is required when source = "dps"`, `e.g. "gw-{serial}" for a unique id per board`)
		} else if msg, fix := checkRegistrationTemplate(p.RegistrationID); msg != "" {
			ps.add("provisioning.registration_id", p.RegistrationID, msg, fix)
		}
		if msg := checkHTTPSURL(p.GlobalEndpoint); msg != "" {
			ps.add("provisioning.global_endpoint", p.GlobalEndpoint, msg, `e.g. "`+DefaultGlobalEndpoint+`"`)
		}
		if p.Payload != nil {
			if _, err := json.Marshal(p.Payload); err != nil {
				ps.add("provisioning.payload", rawValue("{…}"), "cannot be sent as JSON", "use only strings, numbers, booleans, arrays and tables")
			}
		}
		for _, k := range []struct{ key, val string }{{"hub_host", p.HubHost}, {"device_id", p.DeviceID}} {
			if k.val != "" {
				ps.add("provisioning."+k.key, k.val, `is only used with source = "manual"`, `DPS assigns the hub and device id; remove it, or set source = "manual"`)
			}
		}
		switch len(keySources) {
		case 0:
			ps.add("provisioning.attestation", nil, "needs a key: set one of key_file, group_key_file or key_credential", "key_file = \"/etc/fieldgate/device.key\" holds the base64 device key")
		case 1:
		default:
			ps.add("provisioning.attestation."+keySources[1], nil, "only one of key_file, group_key_file and key_credential may be set (found "+strings.Join(keySources, ", ")+")", "keep the one that holds this device's key")
		}
	case SourceManual:
		if p.HubHost == "" {
			ps.add("provisioning.hub_host", nil, `is required when source = "manual"`, `the IoT Hub host name, e.g. "myhub.azure-devices.net"`)
		} else if msg := checkHostPort(p.HubHost, false); msg != "" {
			ps.add("provisioning.hub_host", p.HubHost, msg, `a host name without scheme, e.g. "myhub.azure-devices.net"`)
		}
		if p.DeviceID == "" {
			ps.add("provisioning.device_id", nil, `is required when source = "manual"`, "the device's id in the IoT Hub registry")
		} else if !reDeviceID.MatchString(p.DeviceID) {
			ps.add("provisioning.device_id", p.DeviceID, "is not a valid IoT Hub device id",
				"at most 128 of: letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '")
		}
		for _, k := range []struct{ key, val string }{{"id_scope", p.IDScope}, {"registration_id", p.RegistrationID}} {
			if k.val != "" {
				ps.add("provisioning."+k.key, k.val, `is only used with source = "dps"`, `remove it, or set source = "dps"`)
			}
		}
		// The default is tolerated: tools write every key.
		if p.GlobalEndpoint != DefaultGlobalEndpoint {
			ps.add("provisioning.global_endpoint", p.GlobalEndpoint, `is only used with source = "dps"`, `remove it, or set source = "dps"`)
		}
		if p.Payload != nil {
			ps.add("provisioning.payload", rawValue("{…}"), `is only used with source = "dps"`, `remove it, or set source = "dps"`)
		}
		if a.GroupKeyFile != "" {
			ps.add("provisioning.attestation.group_key_file", a.GroupKeyFile,
				`an enrollment-group key needs DPS: the hub only knows the derived device key`,
				"derive it off-device with `fieldgate derive-key --registration-id DEVICE_ID` and set key_file, or use source = \"dps\"")
		}
		direct := btoi(a.KeyFile != "") + btoi(a.KeyCredential != "")
		switch {
		case direct == 0 && a.GroupKeyFile == "":
			ps.add("provisioning.attestation", nil, "needs a key: set key_file or key_credential", "key_file = \"/etc/fieldgate/device.key\" holds the base64 device key")
		case direct > 1:
			ps.add("provisioning.attestation.key_credential", nil, "only one of key_file and key_credential may be set", "keep the one that holds this device's key")
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkEnum adds a problem when v is not one of allowed.
func checkEnum(ps *problems, key, v string, allowed []string, why string) {
	if slices.Contains(allowed, v) {
		return
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	fix := "one of " + strings.Join(quoted, ", ")
	if why != "" {
		fix += "; " + why
	}
	if v == "" {
		ps.add(key, nil, "is required", fix)
		return
	}
	if l := strings.ToLower(v); l != v && slices.Contains(allowed, l) {
		fix = fmt.Sprintf("values are lower case: %q", l)
	}
	ps.add(key, v, "is not allowed", fix)
}

// checkDuration adds a problem when d is outside [lo, hi].
func checkDuration(ps *problems, key string, d Duration, lo, hi time.Duration, why, example string) {
	var msg string
	switch {
	case d.Duration < lo && lo > 0:
		msg = "must be at least " + fmtDur(lo)
	case d.Duration < 0:
		msg = "must not be negative"
	case d.Duration > hi:
		msg = "must be at most " + fmtDur(hi)
	default:
		return
	}
	fix := example
	if why != "" {
		fix = why + "; " + example
	}
	ps.add(key, d, msg, fix)
}

// fmtDur prints round durations the way people write them ("1m", "24h").
// Durations that are no whole minute are printed in seconds ("1177s").
func fmtDur(d time.Duration) string {
	if d > time.Minute && d%time.Minute != 0 && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return Duration{d}.String()
}

// checkHostPort returns a message when s is not host or host:port (IPv6 in
// brackets when a port follows); "" when fine.
func checkHostPort(s string, allowBareIPv6 bool) string {
	if s == "" {
		return "must not be empty"
	}
	if strings.Contains(s, "://") {
		return "must be a host name, not a URL"
	}
	host := s
	if ip := net.ParseIP(s); ip != nil && allowBareIPv6 {
		return ""
	}
	if strings.Contains(s, ":") {
		h, port, err := net.SplitHostPort(s)
		if err != nil {
			return "is not host or host:port"
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port %q must be a number from 1 to 65535", port)
		}
		host = h
	}
	if net.ParseIP(host) != nil {
		return ""
	}
	if !validHostname(host) {
		return fmt.Sprintf("%q is not a valid host name", host)
	}
	return ""
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// checkHTTPSURL returns a message when s is not an https URL with a host.
func checkHTTPSURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "is not a URL"
	}
	if u.Scheme != "https" {
		return "must be an https URL (DPS is only reachable over TLS)"
	}
	if u.User != nil {
		return "must not carry a user name or password"
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "must not have a query or fragment"
	}
	if u.Path != "" && u.Path != "/" {
		return "must not have a path"
	}
	if msg := checkHostPort(u.Host, false); msg != "" {
		return "host " + msg
	}
	return ""
}
