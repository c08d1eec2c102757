package main

import (
	"github.com/fieldgate/fieldgate/internal/atomicfile"

	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/internal/emuconfig"
)

// File names written by init inside DIR.
const (
	configFileName   = "emulator.toml"
	caFileName       = "ca.pem"
	caKeyFileName    = "ca-key.pem"
	groupKeyFileName = "group.key"
	serviceKeyName   = "service.key"
	agentFileName    = "agent.toml"
	agentStateName   = "agent-state"
	demoGroupID      = "default"
	demoRegistration = "fieldgate-demo"
)

// initResult names what initDir wrote.
type initResult struct {
	Dir        string
	Config     string
	CA         string
	GroupKey   string
	ServiceKey string
	AgentTOML  string
	IDScope    string
	HubHost    string
	HTTPSAddr  string
	MQTTAddr   string
	Registered string
}

// initDir creates dir (0700) and writes a fresh emulator.toml, CA, group key
// and agent.toml into it. It refuses to overwrite an existing emulator.toml
// unless force is set. random supplies key material (crypto/rand in main).
func initDir(dir string, force bool, now time.Time, random io.Reader) (*initResult, error) {
	if dir == "" {
		return nil, errors.New("fieldgate-emulator: init: DIR is empty; give the directory to create, e.g. ./emulator")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: create %s: %w", abs, err)
	}
	cfgPath := filepath.Join(abs, configFileName)
	if _, err := os.Stat(cfgPath); err == nil && !force {
		return nil, fmt.Errorf("fieldgate-emulator: init: %s already exists; keep it, or pass --force to replace its keys and CA (devices provisioned against it must then re-provision)", cfgPath)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}

	policyKey, err := randomKey(random)
	if err != nil {
		return nil, err
	}
	groupKey, err := randomKey(random)
	if err != nil {
		return nil, err
	}
	scope := make([]byte, 4)
	if _, err := io.ReadFull(random, scope); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: random id scope: %w", err)
	}
	cfg := &emuconfig.Config{
		HubHost:       emuconfig.DefaultHubHost,
		IDScope:       "0ne" + strings.ToUpper(hex.EncodeToString(scope)),
		MQTTAddr:      emuconfig.DefaultMQTTAddr,
		HTTPSAddr:     emuconfig.DefaultHTTPSAddr,
		StateDir:      emuconfig.DefaultStateDir,
		CAFile:        caFileName,
		CAKeyFile:     caKeyFileName,
		DPSRetryAfter: emuconfig.DefaultDPSRetryAfter,
		ServicePolicy: emuconfig.Policy{Name: emuconfig.DefaultServicePolicyName, Key: policyKey},
		EnrollmentGroups: []emuconfig.EnrollmentGroup{
			{ID: demoGroupID, Key: groupKey},
		},
	}

	ca, err := devcert.NewCA(now)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}
	res := &initResult{
		Dir:        abs,
		Config:     cfgPath,
		CA:         filepath.Join(abs, caFileName),
		GroupKey:   filepath.Join(abs, groupKeyFileName),
		ServiceKey: filepath.Join(abs, serviceKeyName),
		AgentTOML:  filepath.Join(abs, agentFileName),
		IDScope:    cfg.IDScope,
		HubHost:    cfg.HubHost,
		HTTPSAddr:  cfg.HTTPSAddr,
		MQTTAddr:   cfg.MQTTAddr,
		Registered: demoRegistration,
	}
	if err := ca.WriteFiles(res.CA, filepath.Join(abs, caKeyFileName)); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}
	if err := atomicfile.Write(res.GroupKey, []byte(groupKey+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}
	if err := atomicfile.Write(res.ServiceKey, []byte(policyKey+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}
	agent, err := agentTOML(cfg, abs)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(res.AgentTOML, agent, 0o644); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}
	// emulator.toml last: its presence marks a complete init.
	if err := emuconfig.Write(cfgPath, cfg); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: %w", err)
	}
	return res, nil
}

func randomKey(random io.Reader) (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(random, b); err != nil {
		return "", fmt.Errorf("fieldgate-emulator: init: random key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// agentTOML renders a fieldgate agent configuration (schema of agent/config)
// that provisions against this emulator through the "default" enrollment
// group. dir is absolute.
func agentTOML(cfg *emuconfig.Config, dir string) ([]byte, error) {
	_, port, err := net.SplitHostPort(cfg.HTTPSAddr)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: init: https_addr %q: %w", cfg.HTTPSAddr, err)
	}
	endpoint := "https://" + net.JoinHostPort(cfg.HubHost, port)
	var b bytes.Buffer
	fmt.Fprintf(&b, `# fieldgate agent configuration written by `+"`fieldgate-emulator init`"+`.
# It runs the agent against the local emulator (%s):
#   fieldgate-emulator run --config %s
#   fieldgate run --config %s
log_level = "info"

[state]
dir = %s

[time]
ntp_servers = []                 # trust the system clock: the demo needs no internet

[provisioning]
source = "dps"
global_endpoint = %s   # the emulator's https_addr
id_scope = %s
registration_id = %q

[provisioning.attestation]
method = "symmetric_key"
group_key_file = %s   # enrollment group %q; the device key is derived from it

[hub]
ca_file = %s          # the emulator's throwaway CA
token_ttl = "1h"

[telemetry]
interval = "5s"

[[sensor]]
name = "env"
kind = "simulated"
interval = "2s"
values = ["temperature_c", "humidity_pct"]

[[sensor]]
name = "power"
kind = "simulated"
interval = "2s"
values = ["voltage_v"]
`,
		endpoint, filepath.Join(dir, configFileName), filepath.Join(dir, agentFileName),
		tomlString(filepath.Join(dir, agentStateName)),
		tomlString(endpoint), tomlString(cfg.IDScope), demoRegistration,
		tomlString(filepath.Join(dir, groupKeyFileName)), demoGroupID,
		tomlString(filepath.Join(dir, caFileName)))
	return b.Bytes(), nil
}

// tomlString renders s as a TOML literal string when it can (paths with
// backslashes stay readable), else as a basic string.
func tomlString(s string) string {
	if !strings.ContainsAny(s, "'\n\r") && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "'" + s + "'"
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
