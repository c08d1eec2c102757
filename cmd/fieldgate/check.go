package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/internal/secretfile"
)

var checkCmd = &command{
	name:    "check",
	summary: "validate a config file and print the resolved plan (no network)",
	usage: `fieldgate check [--config FILE] [--json]

Validates the configuration (every problem at once, each with its line, the
bad value and the fix), then prints what "fieldgate run" would do: the
resolved registration id, endpoints, transport, TLS roots, where the key comes
from and whether its file permissions are safe, time servers, sensors and
spool limit. Nothing is sent over the network and no key is printed.
Exit status 0 when the plan is usable, 1 otherwise.`,
}

func init() { checkCmd.run = runCheck; register(checkCmd) }

// hostRoot is the root below which check reads the host facts that fill
// registration-id placeholders; tests point it at a fake tree.
var hostRoot = "/"

func runCheck(_ context.Context, e *env, args []string) int {
	fs := checkCmd.flags()
	path := fs.String("config", config.DefaultPath, "config `FILE`")
	asJSON := fs.Bool("json", false, "print the result as JSON on stdout")
	if code, done := checkCmd.parse(e, fs, args); done {
		return code
	}

	rep := checkReport{Config: *path}
	cfg, err := config.Load(*path)
	if err != nil {
		var ce *config.Error
		if !errors.As(err, &ce) {
			// The file itself could not be read.
			if *asJSON {
				rep.Problems = []config.Problem{{Message: err.Error()}}
				return writeJSONReport(e, checkCmd, rep)
			}
			return checkCmd.fail(e, fs, err)
		}
		rep.Problems = ce.Problems
		if *asJSON {
			return writeJSONReport(e, checkCmd, rep)
		}
		fmt.Fprintf(e.Stderr, "%v\n", err)
		fmt.Fprintf(e.Stderr, "fieldgate check: %s has %s\n", *path, plural(len(ce.Problems), "problem"))
		return exitError
	}

	facts, ferr := config.ReadHostFacts(hostRoot)
	rep.Plan = buildPlan(cfg, facts, ferr, e.Getenv)
	rep.OK = len(rep.Plan.Failures) == 0
	if *asJSON {
		return writeJSONReport(e, checkCmd, rep)
	}
	printPlan(e.Stdout, rep)
	if !rep.OK {
		fmt.Fprintf(e.Stderr, "fieldgate check: %s is valid, but %s on this host must be fixed before it can run\n",
			*path, plural(len(rep.Plan.Failures), "problem"))
		return exitError
	}
	return exitOK
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func writeJSONReport(e *env, c *command, rep checkReport) int {
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(e.Stderr, "fieldgate %s: %v\n", c.name, err)
		return exitError
	}
	if !rep.OK {
		return exitError
	}
	return exitOK
}

// checkReport is the --json output.
type checkReport struct {
	OK     bool   `json:"ok"`
	Config string `json:"config"`
	// Problems are configuration errors; the plan is absent when there are
	// any.
	Problems []config.Problem `json:"problems,omitempty"`
	Plan     *plan            `json:"plan,omitempty"`
}

// plan is what "fieldgate run" would do with a valid configuration.
type plan struct {
	Log          planLog          `json:"log"`
	Provisioning planProvisioning `json:"provisioning"`
	Key          planKey          `json:"key"`
	Hub          planHub          `json:"hub"`
	TLS          planTLS          `json:"tls"`
	Time         planTime         `json:"time"`
	State        planState        `json:"state"`
	Telemetry    planTelemetry    `json:"telemetry"`
	Sensors      []planSensor     `json:"sensors"`
	Outputs      []planOutput     `json:"outputs"`
	// Failures make the plan unusable on this host (exit 1).
	Failures []string `json:"failures,omitempty"`
	// Warnings do not stop the agent but deserve a look.
	Warnings []string `json:"warnings,omitempty"`
}

type planLog struct {
	Level  string `json:"level"`
	Format string `json:"format"`
}

type planProvisioning struct {
	Source string `json:"source"`
	// DPS
	Endpoint               string   `json:"endpoint,omitempty"`
	IDScope                string   `json:"id_scope,omitempty"`
	RegistrationIDTemplate string   `json:"registration_id_template,omitempty"`
	RegistrationID         string   `json:"registration_id,omitempty"`
	PayloadKeys            []string `json:"payload_keys,omitempty"`
	// Manual
	HubHost  string `json:"hub_host,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
}

type planKey struct {
	// Source is key_file, group_key_file or key_credential.
	Source string `json:"source"`
	// Path is the key file, or the credential file when
	// $CREDENTIALS_DIRECTORY is set. Never the key itself.
	Path       string `json:"path,omitempty"`
	Credential string `json:"credential,omitempty"`
	// Status is "ok", "missing", "unsafe permissions", ... .
	Status string `json:"status"`
	// Derived is true when the device key is derived from a group key.
	Derived bool `json:"derived,omitempty"`
}

type planHub struct {
	Transport string `json:"transport"`
	// Endpoint is how the hub is dialled ("assigned by DPS" until then).
	Endpoint     string `json:"endpoint"`
	TokenTTL     string `json:"token_ttl"`
	RefreshAfter string `json:"refresh_after"`
	KeepAlive    string `json:"keep_alive"`
	ModelID      string `json:"model_id,omitempty"`
}

type planTLS struct {
	SystemRoots bool   `json:"system_roots"`
	CAFile      string `json:"ca_file,omitempty"`
	CACerts     int    `json:"ca_certs,omitempty"`
	MinVersion  string `json:"min_version"`
}

type planTime struct {
	TrustSystemClock bool     `json:"trust_system_clock"`
	NTPServers       []string `json:"ntp_servers"`
	SyncTimeout      string   `json:"sync_timeout"`
	ResyncInterval   string   `json:"resync_interval"`
	StepSystemClock  bool     `json:"step_system_clock"`
}

type planState struct {
	Dir           string `json:"dir"`
	DirStatus     string `json:"dir_status"`
	SpoolMaxBytes int64  `json:"spool_max_bytes"`
	SpoolMax      string `json:"spool_max"`
}

type planTelemetry struct {
	Interval             string  `json:"interval"`
	MaxMessageBytes      int     `json:"max_message_bytes"`
	BatchWindow          string  `json:"batch_window"`
	MaxMessagesPerSecond float64 `json:"max_messages_per_second"`
}

type planSensor struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Interval string `json:"interval"`
	// Inherited is true when the interval follows telemetry.interval.
	Inherited bool     `json:"inherited,omitempty"`
	Values    []string `json:"values,omitempty"`
}

type planOutput struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Pin     string `json:"pin,omitempty"`
	Initial string `json:"initial,omitempty"`
}

// buildPlan resolves cfg against this host without touching the network.
func buildPlan(cfg *config.Config, facts config.HostFacts, factsErr error, getenv func(string) string) *plan {
	p := &plan{Sensors: []planSensor{}, Outputs: []planOutput{}}
	fail := func(format string, args ...any) { p.Failures = append(p.Failures, fmt.Sprintf(format, args...)) }
	warn := func(format string, args ...any) { p.Warnings = append(p.Warnings, fmt.Sprintf(format, args...)) }

	p.Log = planLog{Level: cfg.LogLevel, Format: cfg.LogFormat}

	// Identity.
	prov := cfg.Provisioning
	p.Provisioning.Source = prov.Source
	switch prov.Source {
	case config.SourceDPS:
		p.Provisioning.Endpoint = prov.GlobalEndpoint
		p.Provisioning.IDScope = prov.IDScope
		p.Provisioning.RegistrationIDTemplate = prov.RegistrationID
		if factsErr != nil {
			fail("registration id: %v", factsErr)
		} else if id, err := config.ExpandRegistrationID(prov.RegistrationID, facts); err != nil {
			fail("%v", err)
		} else {
			p.Provisioning.RegistrationID = id
		}
		for k := range prov.Payload {
			p.Provisioning.PayloadKeys = append(p.Provisioning.PayloadKeys, k)
		}
		sort.Strings(p.Provisioning.PayloadKeys)
		p.Hub.Endpoint = "assigned by DPS"
	case config.SourceManual:
		p.Provisioning.HubHost = prov.HubHost
		p.Provisioning.DeviceID = prov.DeviceID
		p.Hub.Endpoint = hubEndpoint(prov.HubHost, cfg.Hub.Transport)
	}

	// Key source: paths and permissions only, never contents.
	a := prov.Attestation
	switch {
	case a.KeyFile != "":
		p.Key = planKey{Source: "key_file", Path: a.KeyFile}
		p.Key.Status = keyFileStatus(a.KeyFile, fail)
	case a.GroupKeyFile != "":
		p.Key = planKey{Source: "group_key_file", Path: a.GroupKeyFile, Derived: true}
		p.Key.Status = keyFileStatus(a.GroupKeyFile, fail)
		warn("the enrollment-group key is on the device; deriving device keys off-device (fieldgate derive-key) keeps it in the factory")
	case a.KeyCredential != "":
		p.Key = planKey{Source: "key_credential", Credential: a.KeyCredential}
		if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" {
			p.Key.Path = filepath.Join(dir, a.KeyCredential)
			if _, err := os.Stat(p.Key.Path); err != nil {
				p.Key.Status = "missing"
				fail("key_credential %q: %s does not exist — add LoadCredential=%s:... (or LoadCredentialEncrypted=) to the unit",
					a.KeyCredential, p.Key.Path, a.KeyCredential)
			} else {
				p.Key.Status = "ok"
			}
		} else {
			p.Key.Status = "provided by systemd at run time"
			warn("key_credential %q cannot be checked here: $CREDENTIALS_DIRECTORY is only set inside the service", a.KeyCredential)
		}
	}

	// Hub session.
	ttl := cfg.Hub.TokenTTL.D()
	p.Hub.Transport = cfg.Hub.Transport
	p.Hub.TokenTTL = cfg.Hub.TokenTTL.String()
	p.Hub.RefreshAfter = config.Duration{Duration: (ttl * 8 / 10).Round(time.Second)}.String()
	p.Hub.KeepAlive = cfg.Hub.KeepAlive.String()
	p.Hub.ModelID = cfg.Hub.ModelID

	// TLS roots.
	p.TLS = planTLS{SystemRoots: true, CAFile: cfg.Hub.CAFile, MinVersion: "TLS 1.2"}
	if cfg.Hub.CAFile != "" {
		n, err := countPEMCerts(cfg.Hub.CAFile)
		if err != nil {
			fail("hub.ca_file: %v", err)
		}
		p.TLS.CACerts = n
	}

	// Time.
	p.Time = planTime{
		TrustSystemClock: cfg.Time.TrustSystemClock(),
		NTPServers:       append([]string{}, cfg.Time.NTPServers...),
		SyncTimeout:      cfg.Time.SyncTimeout.String(),
		ResyncInterval:   cfg.Time.ResyncInterval.String(),
		StepSystemClock:  cfg.Time.StepSystemClock,
	}
	if p.Time.TrustSystemClock {
		warn("ntp_servers = []: timestamps, token expiry and TLS checks use the system clock as is")
	}

	// State.
	p.State = planState{Dir: cfg.State.Dir, SpoolMaxBytes: int64(cfg.State.SpoolMaxBytes), SpoolMax: cfg.State.SpoolMaxBytes.String()}
	switch fi, err := os.Stat(cfg.State.Dir); {
	case err == nil && fi.IsDir():
		p.State.DirStatus = "exists"
	case err == nil:
		p.State.DirStatus = "not a directory"
		fail("state.dir %s is not a directory", cfg.State.Dir)
	case errors.Is(err, os.ErrNotExist):
		p.State.DirStatus = "will be created"
	default:
		p.State.DirStatus = "inaccessible"
		warn("state.dir %s: %v", cfg.State.Dir, err)
	}

	p.Telemetry = planTelemetry{
		Interval:             cfg.Telemetry.Interval.String(),
		MaxMessageBytes:      cfg.Telemetry.MaxMessageBytes,
		BatchWindow:          cfg.Telemetry.BatchWindow.String(),
		MaxMessagesPerSecond: cfg.Telemetry.MaxMessagesPerSecond,
	}
	for _, s := range cfg.Sensors {
		p.Sensors = append(p.Sensors, planSensor{
			Name: s.Name, Kind: s.Kind, Interval: s.Interval.String(),
			Inherited: s.InheritsInterval(), Values: s.Values,
		})
	}
	if len(cfg.Sensors) == 0 {
		warn("no [[sensor]] configured: the agent connects but sends no telemetry")
	}
	for _, o := range cfg.Outputs {
		p.Outputs = append(p.Outputs, planOutput{Name: o.Name, Kind: o.Kind, Pin: o.Pin, Initial: o.Initial})
	}
	return p
}

// keyFileStatus checks a key file's existence and permissions without
// reading it.
func keyFileStatus(path string, fail func(string, ...any)) string {
	err := secretfile.Check(path)
	var me *secretfile.ModeError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &me):
		fail("%v", err)
		return fmt.Sprintf("unsafe permissions %04o", uint32(me.Mode.Perm()))
	case errors.Is(err, os.ErrNotExist):
		fail("key file %s does not exist — write the base64 key into it and run: chmod 600 %s", path, path)
		return "missing"
	default:
		fail("%v", err)
		return "unusable"
	}
}

// hubEndpoint describes how a hub host is dialled for a transport.
func hubEndpoint(host, transport string) string {
	if transport == config.TransportMQTTWS {
		return "wss://" + host + "/$iothub/websocket"
	}
	if strings.Contains(host, ":") {
		return "mqtts://" + host
	}
	return "mqtts://" + host + ":8883"
}

// countPEMCerts counts the certificates in a PEM file.
func countPEMCerts(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4<<20))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return n, fmt.Errorf("%s: certificate %d does not parse: %w", path, n+1, err)
		}
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("%s holds no PEM certificate — give the CA certificate (e.g. the emulator's ca.pem)", path)
	}
	return n, nil
}

// printPlan writes the human-readable plan.
func printPlan(w io.Writer, rep checkReport) {
	p := rep.Plan
	fmt.Fprintf(w, "config %s: valid\n", rep.Config)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	section := func(name string) { fmt.Fprintf(tw, "\n%s\n", name) }
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }

	section("identity")
	switch p.Provisioning.Source {
	case config.SourceDPS:
		row("provisioning", "DPS at "+p.Provisioning.Endpoint)
		row("id scope", p.Provisioning.IDScope)
		id := p.Provisioning.RegistrationID
		if id == "" {
			id = "(cannot be resolved on this host)"
		}
		row("registration id", fmt.Sprintf("%s (from %q)", id, p.Provisioning.RegistrationIDTemplate))
		if len(p.Provisioning.PayloadKeys) > 0 {
			row("payload", "keys "+strings.Join(p.Provisioning.PayloadKeys, ", "))
		}
	case config.SourceManual:
		row("provisioning", "manual")
		row("hub host", p.Provisioning.HubHost)
		row("device id", p.Provisioning.DeviceID)
	}
	key := p.Key.Source + " "
	if p.Key.Path != "" {
		key += p.Key.Path
	} else {
		key += p.Key.Credential
	}
	key += " (" + p.Key.Status + ")"
	if p.Key.Derived {
		key += "; device key derived from it and the registration id"
	}
	row("key", key)

	section("hub")
	row("endpoint", p.Hub.Endpoint)
	row("transport", p.Hub.Transport)
	row("token ttl", p.Hub.TokenTTL+" (fresh token after "+p.Hub.RefreshAfter+")")
	row("keep-alive", p.Hub.KeepAlive)
	if p.Hub.ModelID != "" {
		row("model id", p.Hub.ModelID)
	}
	roots := "system roots"
	if p.TLS.CAFile != "" {
		roots += fmt.Sprintf(" + %s (%s)", p.TLS.CAFile, plural(p.TLS.CACerts, "certificate"))
	}
	row("tls roots", roots+", "+p.TLS.MinVersion+" or later")

	section("time")
	if p.Time.TrustSystemClock {
		row("ntp servers", "none: the system clock is trusted")
	} else {
		row("ntp servers", strings.Join(p.Time.NTPServers, ", "))
		row("sync", "timeout "+p.Time.SyncTimeout+", every "+p.Time.ResyncInterval)
	}
	if p.Time.StepSystemClock {
		row("system clock", "stepped from NTP (needs CAP_SYS_TIME)")
	} else {
		row("system clock", "left alone (the agent corrects its own clock)")
	}

	section("state")
	row("dir", p.State.Dir+" ("+p.State.DirStatus+")")
	row("spool limit", p.State.SpoolMax)

	section("telemetry")
	row("interval", p.Telemetry.Interval)
	row("messages", fmt.Sprintf("at most %d bytes, batch window %s, at most %g per second",
		p.Telemetry.MaxMessageBytes, p.Telemetry.BatchWindow, p.Telemetry.MaxMessagesPerSecond))

	section("sensors")
	if len(p.Sensors) == 0 {
		row("(none)", "")
	}
	for _, s := range p.Sensors {
		every := "every " + s.Interval
		if s.Inherited {
			every += " (telemetry.interval)"
		}
		detail := every
		if len(s.Values) > 0 {
			detail += "\t" + strings.Join(s.Values, ", ")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Name, s.Kind, detail)
	}
	if len(p.Outputs) > 0 {
		section("outputs")
		for _, o := range p.Outputs {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", o.Name, o.Kind, o.Pin)
		}
	}
	tw.Flush()

	if len(p.Warnings) > 0 {
		fmt.Fprintln(w, "\nwarnings:")
		for _, m := range p.Warnings {
			fmt.Fprintln(w, "  "+m)
		}
	}
	if len(p.Failures) > 0 {
		fmt.Fprintln(w, "\nproblems on this host:")
		for _, m := range p.Failures {
			fmt.Fprintln(w, "  "+m)
		}
	}
}
