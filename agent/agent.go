// Package agent is fieldgate's lifecycle and data flow: it samples sensors
// into the durable spool from boot, gets trustworthy time, loads the device
// identity, provisions through DPS (or a cached assignment), keeps an IoT Hub
// session and publishes spooled readings in batches, removing each record only
// after the PUBACK of the message that carried it. It answers twin desired
// properties, direct methods and cloud-to-device messages.
//
// main builds an Agent from a validated config and calls Run; cancellation of
// Run's context is a clean shutdown, not an error.
package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/hub"
	"github.com/fieldgate/fieldgate/agent/spool"
	"github.com/fieldgate/fieldgate/agent/timesync"
	"github.com/fieldgate/fieldgate/hw"
	"github.com/fieldgate/fieldgate/internal/identity"
	"github.com/fieldgate/fieldgate/provisioning"
	"github.com/fieldgate/fieldgate/sas"
)

// ErrRestartRequested is returned by Run after the "restart" direct method:
// main exits cleanly and systemd starts the agent again.
var ErrRestartRequested = errors.New("agent: restart requested by a direct method")

// reprovisionAfter is the number of consecutive hub authentication refusals,
// with a verified clock, after which the device registers with DPS again.
const reprovisionAfter = 3

// flushTimeout bounds the final flush at shutdown.
const flushTimeout = 5 * time.Second

// Options configure an Agent. Only Config is required.
type Options struct {
	Config  *config.Config
	Logger  *slog.Logger
	Version string
	// Clock drives timers (sampling, batching, backoff); nil → real clock.
	Clock clockwork.Clock
	// Notify receives systemd notify states ("READY=1", "STATUS=...",
	// "WATCHDOG=1", "STOPPING=1"); nil → none.
	Notify func(state string)
	// WatchdogInterval > 0 sends WATCHDOG=1 at this interval while healthy.
	WatchdogInterval time.Duration
	// Getenv reads the environment ($CREDENTIALS_DIRECTORY); nil → os.Getenv.
	Getenv func(string) string
	// HostFacts fill the registration-id placeholders; nil → read from /.
	HostFacts *config.HostFacts
	// ForceProvision ignores the cached assignment once.
	ForceProvision bool
	// Time overrides parts of the time synchroniser (tests).
	Time timesync.Options
	// Dial replaces the hub network dial (tests: proxies and faults).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HW supplies hardware access to sensors and outputs (tests: fake I2C
	// buses and GPIO pins); its Logger, Clock and StateDir are filled in.
	HW hw.Env
	// KeepAlive overrides hub.keep_alive (the config allows ≥ 30s; the
	// chaos suite uses seconds to detect black holes quickly).
	KeepAlive time.Duration
	// TokenTTL overrides hub.token_ttl (the config allows ≥ 1m; tests and
	// the chaos suite use seconds).
	TokenTTL time.Duration
	// WebSocketHost overrides the mqtt-ws host[:port] (the emulator serves
	// WebSocket on its HTTPS port).
	WebSocketHost string
}

// Agent is one running fieldgate. Create it with New.
type Agent struct {
	o     Options
	cfg   *config.Config
	log   *slog.Logger
	clk   clockwork.Clock
	start time.Time

	sync     *timesync.Syncer
	spool    *spool.Spool
	outputs  *outputSet
	notify   func(string)
	appended chan struct{} // signalled (non-blocking) after each spool commit

	// mu guards the fields below.
	mu         sync.Mutex
	hubClient  *hub.Client
	assignment provisioning.Assignment
	provErr    string
	published  uint64 // records acknowledged by the hub since start
	messages   uint64 // messages acknowledged
	restart    bool
	twin       twinState
	restartFn  context.CancelFunc
	sampler    *sampler
	stopSample context.CancelFunc
}

// New prepares an Agent: it opens the spool and the sensors but touches no
// network. Errors name what to fix.
func New(o Options) (*Agent, error) {
	if o.Config == nil {
		return nil, errors.New("agent: no configuration")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Notify == nil {
		o.Notify = func(string) {}
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	cfg := o.Config
	a := &Agent{o: o, cfg: cfg, log: o.Logger, clk: o.Clock, notify: o.Notify, appended: make(chan struct{}, 1)}

	to := o.Time
	to.Servers = cfg.Time.NTPServers
	if to.Timeout == 0 {
		to.Timeout = cfg.Time.SyncTimeout.D()
	}
	if to.ResyncInterval == 0 {
		to.ResyncInterval = cfg.Time.ResyncInterval.D()
	}
	to.StepSystemClock = cfg.Time.StepSystemClock
	if to.Clock == nil {
		to.Clock = o.Clock
	}
	to.Logger = o.Logger.With("component", "timesync")
	a.sync = timesync.New(to)
	a.start = a.sync.Now()

	sp, err := spool.OpenOrMemory(cfg.State.Dir, spool.Options{
		MaxBytes: int64(cfg.State.SpoolMaxBytes),
		Logger:   o.Logger.With("component", "spool"),
		Clock:    o.Clock,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: spool: %w", err)
	}
	a.spool = sp

	outs, err := openOutputs(cfg.Outputs, a.hwEnv(o.Logger.With("component", "hw")))
	if err != nil {
		sp.Close()
		return nil, err
	}
	a.outputs = outs
	a.sampler = newSampler(a, cfg)
	return a, nil
}

// hwEnv is the hardware environment for one sensor or output.
func (a *Agent) hwEnv(log *slog.Logger) hw.Env {
	e := a.o.HW
	e.Logger, e.Clock, e.StateDir = log, a.clk, a.cfg.State.Dir
	return e
}

// Spool gives tests and diagnostics access to the spool.
func (a *Agent) Spool() *spool.Spool { return a.spool }

// Now is the corrected wall clock.
func (a *Agent) Now() time.Time { return a.sync.Now() }

// Run runs the agent until ctx is cancelled (returning nil after a clean
// shutdown), a restart is requested (ErrRestartRequested), or a fatal error.
func (a *Agent) Run(ctx context.Context) error {
	defer a.spool.Close()
	defer a.outputs.closeAll(a.log)
	a.log.Info("fieldgate starting", "version", a.o.Version, "state_dir", a.cfg.State.Dir,
		"sensors", len(a.cfg.Sensors), "spool_in_memory", a.spool.Stats().InMemory)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	a.mu.Lock()
	a.restartFn = stopRun
	a.mu.Unlock()

	var wg sync.WaitGroup
	syncCtx, stopSync := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); a.sync.Run(syncCtx) }()

	// Sampling starts at once: it never waits for time, identity or network.
	a.startSampler(a.sampler)
	a.notify("READY=1")
	a.setStatus("waiting for trusted time")

	if a.o.WatchdogInterval > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); a.watchdog(syncCtx) }()
	}

	// Hub work runs under its own context so that at shutdown the publisher
	// can flush for a few seconds after sampling stopped.
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- a.connectLoop(runCtx, hubCtx) }()

	var runErr error
	select {
	case <-runCtx.Done():
	case runErr = <-hubDone:
		hubDone = nil
	}
	a.notify("STOPPING=1")
	a.log.Info("shutting down: sampling stopped, flushing the spool", "timeout", flushTimeout)
	a.stopSampler()
	if hubDone != nil {
		a.flush(flushTimeout)
		stopHub()
		<-hubDone
	} else {
		stopHub()
	}
	stopSync()
	wg.Wait()
	st := a.spool.Stats()
	a.log.Info("fieldgate stopped", "queued", st.Depth, "published", a.publishedCount())
	a.mu.Lock()
	restart := a.restart
	a.mu.Unlock()
	if restart {
		return ErrRestartRequested
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return nil
}

// connectLoop waits for time, loads the key, provisions and keeps the hub
// session, re-provisioning after repeated authentication refusals. It
// returns when hubCtx is done, or with a fatal error.
func (a *Agent) connectLoop(runCtx, hubCtx context.Context) error {
	ctx, cancel := context.WithCancel(hubCtx)
	defer cancel()
	go func() {
		select {
		case <-runCtx.Done():
			// hubCtx stays alive for the flush; only the connect phase stops.
		case <-ctx.Done():
		}
	}()

	wait := 3 * a.cfg.Time.SyncTimeout.D()
	if !a.sync.WaitSynced(runCtx, wait) && runCtx.Err() == nil {
		a.log.Warn("no trusted time yet: continuing on the system clock; tokens may be rejected until NTP answers",
			"waited", wait, "status", a.sync.Status().LastError)
	}
	if runCtx.Err() != nil {
		return nil
	}
	key, regID, err := a.loadIdentity()
	if err != nil {
		a.setProvErr(err)
		return err
	}
	defer key.Destroy()

	force := a.o.ForceProvision
	pub := newPublisher(a)
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	for {
		asg, err := a.provision(runCtx, key, regID, force)
		if err != nil {
			if runCtx.Err() != nil {
				return nil
			}
			a.setProvErr(err)
			return err
		}
		force = false
		a.setAssignment(asg)
		hc, err := a.newHubClient(asg, key)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.hubClient = hc
		a.mu.Unlock()
		pub.attach(hc)
		go pub.run(pubCtx)
		err = hc.Run(ctx)
		if errors.Is(err, hub.ErrAuthRejected) && a.cfg.Provisioning.Source == config.SourceDPS && runCtx.Err() == nil {
			a.log.Warn("the hub keeps refusing the device with a verified clock: registering with DPS again", "err", err)
			force = true
			continue
		}
		if ctx.Err() != nil || runCtx.Err() != nil {
			return nil
		}
		return err
	}
}

// flush gives the publisher up to d to empty the spool at shutdown.
func (a *Agent) flush(d time.Duration) {
	deadline := a.clk.Now().Add(d)
	for a.clk.Now().Before(deadline) {
		if a.spool.Stats().Depth == 0 {
			return
		}
		a.mu.Lock()
		hc := a.hubClient
		a.mu.Unlock()
		if hc == nil || hc.Current() == nil {
			return
		}
		<-a.clk.After(50 * time.Millisecond)
	}
	a.log.Warn("flush timed out; records stay in the spool for the next start", "queued", a.spool.Stats().Depth)
}

func (a *Agent) loadIdentity() (*sas.Key, string, error) {
	p := a.cfg.Provisioning
	regID := p.DeviceID
	if p.Source == config.SourceDPS {
		facts := a.o.HostFacts
		if facts == nil {
			f, err := config.ReadHostFacts("/")
			if err != nil {
				a.log.Debug("host facts incomplete", "err", err)
			}
			facts = &f
		}
		r, err := config.ExpandRegistrationID(p.RegistrationID, *facts)
		if err != nil {
			return nil, "", fmt.Errorf("agent: provisioning.registration_id: %w", err)
		}
		regID = r
	}
	key, err := identity.LoadKey(identity.Source{
		KeyFile:        p.Attestation.KeyFile,
		GroupKeyFile:   p.Attestation.GroupKeyFile,
		Credential:     p.Attestation.KeyCredential,
		RegistrationID: regID,
		CredentialsDir: a.o.Getenv("CREDENTIALS_DIRECTORY"),
	})
	if err != nil {
		return nil, "", fmt.Errorf("agent: device key: %w", err)
	}
	return key, regID, nil
}

// tlsConfig returns the TLS settings for DPS and the hub: system roots plus
// hub.ca_file, TLS ≥ 1.2, validity checked on the corrected clock. There is
// deliberately no way to skip verification.
func (a *Agent) tlsConfig() (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if f := a.cfg.Hub.CAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("agent: hub.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("agent: hub.ca_file %s holds no PEM certificate — point it at a CA certificate such as the emulator's ca.pem", f)
		}
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Time: a.sync.Now}, nil
}

func (a *Agent) httpClient() (*http.Client, error) {
	tc, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 15 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		MaxIdleConns:        2,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

func (a *Agent) newHubClient(asg provisioning.Assignment, key *sas.Key) (*hub.Client, error) {
	tc, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	h := a.cfg.Hub
	return hub.New(hub.Options{
		Host:            asg.Hub,
		DeviceID:        asg.DeviceID,
		Signer:          key,
		Transport:       h.Transport,
		WebSocketHost:   a.o.WebSocketHost,
		TLSConfig:       tc,
		Now:             a.sync.Now,
		Clock:           a.clk,
		TokenTTL:        cmp.Or(a.o.TokenTTL, h.TokenTTL.D()),
		KeepAlive:       cmp.Or(a.o.KeepAlive, h.KeepAlive.D()),
		ModelID:         h.ModelID,
		Handler:         &handler{a: a},
		Logger:          a.log.With("component", "hub"),
		MaxAuthFailures: reprovisionAfter,
		ClockVerified:   func() bool { return a.sync.Status().Synced },
		Dial:            a.o.Dial,
	})
}

func (a *Agent) setStatus(s string) { a.notify("STATUS=" + s) }

func (a *Agent) setProvErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.provErr = err.Error()
}

func (a *Agent) setAssignment(asg provisioning.Assignment) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.assignment = asg
	a.provErr = ""
}

func (a *Agent) publishedCount() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.published
}

// requestRestart ends Run with ErrRestartRequested.
func (a *Agent) requestRestart() {
	a.mu.Lock()
	a.restart = true
	fn := a.restartFn
	a.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// startSampler starts s sampling.
func (a *Agent) startSampler(s *sampler) {
	ctx, cancel := context.WithCancel(context.Background())
	a.mu.Lock()
	a.sampler, a.stopSample = s, cancel
	a.mu.Unlock()
	s.start(ctx)
}

// stopSampler stops sampling and waits until every sensor is closed.
func (a *Agent) stopSampler() {
	a.mu.Lock()
	s, cancel := a.sampler, a.stopSample
	a.stopSample = nil
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		s.wait()
	}
}

func (a *Agent) currentSampler() *sampler {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sampler
}

// Reload applies a new configuration's sensors and intervals (SIGHUP). Other
// sections need a restart; their changes are reported, not applied.
func (a *Agent) Reload(cfg *config.Config) []string {
	var ignored []string
	if cfg.Provisioning.Source != a.cfg.Provisioning.Source || cfg.Provisioning.IDScope != a.cfg.Provisioning.IDScope ||
		cfg.Provisioning.RegistrationID != a.cfg.Provisioning.RegistrationID || cfg.Provisioning.Attestation != a.cfg.Provisioning.Attestation ||
		cfg.Provisioning.HubHost != a.cfg.Provisioning.HubHost || cfg.Provisioning.DeviceID != a.cfg.Provisioning.DeviceID {
		ignored = append(ignored, "provisioning")
	}
	if cfg.Hub != a.cfg.Hub {
		ignored = append(ignored, "hub")
	}
	if cfg.State != a.cfg.State {
		ignored = append(ignored, "state")
	}
	a.stopSampler()
	a.mu.Lock()
	a.cfg.Sensors = cfg.Sensors
	a.cfg.Telemetry = cfg.Telemetry
	a.mu.Unlock()
	a.startSampler(newSampler(a, cfg))
	a.log.Info("configuration reloaded: sensors and intervals applied", "sensors", len(cfg.Sensors), "needs_restart", ignored)
	return ignored
}

func (a *Agent) watchdog(ctx context.Context) {
	t := a.clk.NewTicker(a.o.WatchdogInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			if a.currentSampler().healthy() {
				a.notify("WATCHDOG=1")
			}
		}
	}
}
