package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/internal/emuconfig"
	"github.com/fieldgate/fieldgate/sas"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// env is everything a command touches outside its arguments.
type env struct {
	stdout, stderr io.Writer
	clock          clockwork.Clock // real clock in main, fake or real in tests
	random         io.Reader       // key material (crypto/rand in main)
	// ready, when set, receives the running emulator once it serves (tests).
	ready func(*emulator)
}

const usageText = `fieldgate-emulator — a local Azure IoT Hub + Device Provisioning Service for development and tests

Usage:
  fieldgate-emulator init DIR [--force]     write DIR/emulator.toml, a CA, group.key and a ready agent.toml
  fieldgate-emulator run --config FILE      serve MQTT over TLS, DPS, MQTT over WebSocket and the service API
  fieldgate-emulator watch --config FILE    print telemetry records as they arrive
  fieldgate-emulator version                print the version

Run "fieldgate-emulator COMMAND --help" for the flags of a command. Documentation: docs/emulator.md.
`

// cli runs one command and returns the process exit code.
func cli(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "init":
		return cmdInit(args[1:], e)
	case "run":
		return cmdRun(ctx, args[1:], e)
	case "watch", "tail":
		return cmdWatch(ctx, args[1:], e)
	case "version", "--version":
		fmt.Fprintln(e.stdout, "fieldgate-emulator", versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usageText)
		return exitOK
	default:
		fmt.Fprintf(e.stderr, "fieldgate-emulator: unknown command %q\n\n%s", args[0], usageText)
		return exitUsage
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// newFlagSet returns a FlagSet that reports errors instead of exiting and
// prints its usage to stderr (or stdout for --help, see parseFlags).
func newFlagSet(name, synopsis string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: fieldgate-emulator %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, allowing positional arguments between flags. It
// returns the positional arguments and an exit code (-1 to continue).
func parseFlags(fs *flag.FlagSet, args []string, e env) ([]string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(e.stdout)
				fs.Usage()
				return nil, exitOK
			}
			return nil, exitUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, -1
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), -1
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func cmdInit(args []string, e env) int {
	fs := newFlagSet("init", "init DIR [--force]", e)
	force := fs.Bool("force", false, "replace an existing DIR/emulator.toml (new keys and CA: devices must re-provision)")
	pos, code := parseFlags(fs, args, e)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(e.stderr, "fieldgate-emulator: init takes exactly one argument, the directory to create (e.g. fieldgate-emulator init ./emulator)")
		return exitUsage
	}
	res, err := initDir(pos[0], *force, e.clock.Now(), e.random)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return exitError
	}
	fmt.Fprintf(e.stdout, `Wrote %s
  %-14s emulator configuration (keys, mode 0600)
  %-14s throwaway CA certificate: give it to devices and SDKs (ca-key.pem stays private)
  %-14s enrollment group %q key, for the agent (mode 0600)
  %-14s service policy %q key, for service API tokens (mode 0600)
  %-14s agent configuration: registration id %q, simulated sensors
ID scope %s, hub host %s, MQTT %s, HTTPS %s.

Next:
  fieldgate-emulator run --config %s
  fieldgate run --config %s
  fieldgate-emulator watch --config %s
`, res.Dir, configFileName, caFileName, groupKeyFileName, demoGroupID, serviceKeyName, emuconfig.DefaultServicePolicyName, agentFileName, res.Registered,
		res.IDScope, res.HubHost, res.MQTTAddr, res.HTTPSAddr, res.Config, res.AgentTOML, res.Config)
	return exitOK
}

func cmdRun(ctx context.Context, args []string, e env) int {
	fs := newFlagSet("run", "run --config FILE [flags]", e)
	configPath := fs.String("config", "", "emulator.toml `FILE` written by fieldgate-emulator init (required)")
	mqttAddr := fs.String("mqtt-addr", "", "MQTT over TLS listen address (overrides mqtt_addr, default 127.0.0.1:8883)")
	httpsAddr := fs.String("https-addr", "", "HTTPS listen address (overrides https_addr, default 127.0.0.1:8443)")
	skew := fs.Duration("clock-skew", 0, "shift the emulator's clock (token expiry, certificate validity), e.g. 2h or -30m")
	grace := fs.Duration("token-grace", 0, "keep a connection this long after its token expired (overrides token_grace)")
	retry := fs.Int("dps-retry-after", 0, "Retry-After seconds DPS sends while assigning (overrides dps_retry_after)")
	logFormat := fs.String("log-format", "text", "log format on stderr: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	pos, code := parseFlags(fs, args, e)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(e.stderr, "fieldgate-emulator: run takes no arguments (got %q); use --config FILE\n", pos)
		return exitUsage
	}
	if *configPath == "" {
		fmt.Fprintln(e.stderr, "fieldgate-emulator: run needs --config FILE (create one with `fieldgate-emulator init DIR`)")
		return exitUsage
	}
	logger, err := newLogger(e.stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return exitUsage
	}
	cfg, err := emuconfig.Load(*configPath)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return exitError
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *mqttAddr != "" {
		cfg.MQTTAddr = *mqttAddr
	}
	if *httpsAddr != "" {
		cfg.HTTPSAddr = *httpsAddr
	}
	if set["token-grace"] {
		if *grace < 0 {
			fmt.Fprintf(e.stderr, "fieldgate-emulator: --token-grace %s is negative; use 0 or a positive duration\n", *grace)
			return exitUsage
		}
		cfg.TokenGrace = *grace
	}
	if set["dps-retry-after"] {
		if *retry < 1 || *retry > emuconfig.MaxDPSRetryAfter {
			fmt.Fprintf(e.stderr, "fieldgate-emulator: --dps-retry-after %d must be between 1 and %d\n", *retry, emuconfig.MaxDPSRetryAfter)
			return exitUsage
		}
		cfg.DPSRetryAfter = *retry
	}
	em, err := startEmulator(runOptions{Config: cfg, Skew: *skew, Clock: e.clock, Logger: logger})
	if err != nil {
		logger.Error("emulator failed to start", "err", err)
		return exitError
	}
	printBanner(e.stdout, em)
	if e.ready != nil {
		e.ready(em)
	}
	err = em.Wait(ctx)
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cerr := em.Close(closeCtx); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		logger.Error("emulator stopped with an error", "err", err)
		return exitError
	}
	logger.Info("emulator stopped")
	return exitOK
}

func printBanner(w io.Writer, em *emulator) {
	cfg := em.cfg
	fmt.Fprintf(w, `fieldgate-emulator %s
  hub host      %s
  MQTT (TLS)    %s
  HTTPS         %s   (DPS global endpoint, /$iothub/websocket, service API)
  assigned hub  %s
  ID scope      %s
  CA            %s
  state         %s
`, versionString(), cfg.HubHost, em.MQTTAddr(), em.HTTPSAddr(), em.AssignedHub(), cfg.IDScope, cfg.CAFile, cfg.StateDir)
	if em.skew != 0 {
		fmt.Fprintf(w, "  clock skew    %s (emulator time %s)\n", em.skew, em.now().UTC().Format(time.RFC3339))
	}
}

func cmdWatch(ctx context.Context, args []string, e env) int {
	fs := newFlagSet("watch", "watch --config FILE [--device ID] [--all]", e)
	configPath := fs.String("config", "", "emulator.toml `FILE` of the running emulator (required)")
	device := fs.String("device", "", "only this device's messages")
	all := fs.Bool("all", false, "print the messages already stored, then follow")
	interval := fs.Duration("interval", time.Second, "poll period")
	httpsAddr := fs.String("https-addr", "", "the emulator's HTTPS address when run with --https-addr")
	skew := fs.Duration("clock-skew", 0, "the emulator's --clock-skew, so the service token is valid on its clock")
	logFormat := fs.String("log-format", "text", "log format on stderr: text or json")
	pos, code := parseFlags(fs, args, e)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 || *configPath == "" {
		fmt.Fprintln(e.stderr, "fieldgate-emulator: watch needs --config FILE and takes no arguments")
		return exitUsage
	}
	if *interval <= 0 {
		fmt.Fprintf(e.stderr, "fieldgate-emulator: --interval %s must be positive\n", *interval)
		return exitUsage
	}
	logger, err := newLogger(e.stderr, *logFormat, "info")
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return exitUsage
	}
	cfg, err := emuconfig.Load(*configPath)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return exitError
	}
	if *httpsAddr != "" {
		cfg.HTTPSAddr = *httpsAddr
	}
	ca, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		fmt.Fprintf(e.stderr, "fieldgate-emulator: watch: %v\n", err)
		return exitError
	}
	cert, err := devcert.ParseCertPEM(ca)
	if err != nil {
		fmt.Fprintf(e.stderr, "fieldgate-emulator: watch: %s: %v\n", cfg.CAFile, err)
		return exitError
	}
	key, err := sas.ParseKey(cfg.ServicePolicy.Key)
	if err != nil {
		fmt.Fprintf(e.stderr, "fieldgate-emulator: watch: service_policy.key: %v\n", err)
		return exitError
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	err = watch(ctx, watchOptions{
		BaseURL:    "https://" + dialAddr(cfg.HTTPSAddr),
		ServerName: cfg.HubHost,
		RootCAs:    pool,
		HubHost:    cfg.HubHost,
		PolicyName: cfg.ServicePolicy.Name,
		PolicyKey:  key,
		DeviceID:   *device,
		All:        *all,
		Interval:   *interval,
		Clock:      e.clock,
		Skew:       *skew,
		Logger:     logger,
	}, e.stdout)
	if err != nil {
		fmt.Fprintln(e.stderr, "fieldgate-emulator:", err)
		return exitError
	}
	return exitOK
}

// dialAddr turns a listen address into one a client can dial: an unspecified
// host (":8443", "0.0.0.0:8443", "[::]:8443") becomes loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// newLogger builds the binary's slog logger on w.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: --log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("fieldgate-emulator: --log-format %q: use text or json", format)
	}
}
