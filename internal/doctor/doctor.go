// Package doctor diagnoses a field install of fieldgate: configuration, key,
// clock, DNS, TLS to DPS and the hub, token sanity, the cached assignment, a
// real hub CONNECT, I2C/GPIO devices, sensors, the state directory and the
// systemd unit. Each check yields a Result with a fix when it fails. It is
// what `fieldgate doctor` runs; everything it touches can be injected so the
// checks are tested against the emulators.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/hub"
	"github.com/fieldgate/fieldgate/agent/timesync"
	"github.com/fieldgate/fieldgate/hw"
	"github.com/fieldgate/fieldgate/internal/identity"
	"github.com/fieldgate/fieldgate/provisioning"
	"github.com/fieldgate/fieldgate/sas"
	"github.com/jonboulle/clockwork"
)

// Status of one check.
type Status string

// Statuses.
const (
	OK   Status = "ok"
	Fail Status = "fail"
	Warn Status = "warn"
	Skip Status = "skip"
)

// Result is one check's outcome. It never holds secrets.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// MaxClockOffset is the NTP offset above which the clock check fails:
// fieldgate corrects its own time, but other services (and TLS before the
// first NTP answer) depend on the system clock.
const MaxClockOffset = 10 * time.Second

// Options configure a diagnosis.
type Options struct {
	Config     *config.Config // nil when ConfigErr is set
	ConfigPath string
	ConfigErr  error
	Timeout    time.Duration // per network step; default 10s
	Getenv     func(string) string
	// Root is prepended to /dev, /proc, /sys paths (tests); default "/".
	Root string
	// Resolver for DNS (nil → net.DefaultResolver).
	Resolver *net.Resolver
	// Dial for TCP (nil → net.Dialer); tests route host names to loopback.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Systemctl reports "systemctl is-active fieldgate" (nil → skipped).
	Systemctl func(ctx context.Context) (string, error)
	// Clock is the system clock (nil → the real one); the clock check
	// measures the corrected clock against it.
	Clock clockwork.Clock
	// KernelSynced reports whether the kernel clock is synchronized (nil →
	// adjtimex via timesync).
	KernelSynced func() (bool, error)
	// Logger receives debug logs of the checks (nil → discarded).
	Logger *slog.Logger
}

type run struct {
	o       Options
	results []Result
	now     func() time.Time // corrected clock once measured
	key     *sas.Key
	regID   string
	asg     *provisioning.Assignment
	roots   *x509.CertPool
}

// Run performs every check in order and returns the results.
func Run(ctx context.Context, o Options) []Result {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Dial == nil {
		var d net.Dialer
		o.Dial = d.DialContext
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	r := &run{o: o, now: o.Clock.Now}
	if o.ConfigErr != nil || o.Config == nil {
		msg := "no configuration"
		if o.ConfigErr != nil {
			msg = o.ConfigErr.Error()
		}
		r.add("config", Fail, msg, "fix every problem listed, then run: fieldgate check --config "+o.ConfigPath)
		return r.results
	}
	r.add("config", OK, "valid: "+o.ConfigPath, "")
	defer func() {
		if r.key != nil {
			r.key.Destroy()
		}
	}()
	r.checkKey()
	r.checkClock(ctx)
	r.checkRoots()
	r.checkCache()
	r.checkEndpoints(ctx)
	r.checkToken()
	r.checkConnect(ctx)
	r.checkDevices()
	r.checkSensors(ctx)
	r.checkStateDir()
	r.checkSystemd(ctx)
	return r.results
}

// Failures counts failed checks.
func Failures(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == Fail {
			n++
		}
	}
	return n
}

func (r *run) add(name string, st Status, detail, fix string) {
	r.results = append(r.results, Result{Name: name, Status: st, Detail: detail, Fix: fix})
}

func (r *run) path(p string) string { return filepath.Join(r.o.Root, p) }

func (r *run) checkKey() {
	c := r.o.Config
	p := c.Provisioning
	regID := p.DeviceID
	if p.Source == config.SourceDPS {
		facts, _ := config.ReadHostFacts(r.o.Root)
		id, err := config.ExpandRegistrationID(p.RegistrationID, facts)
		if err != nil {
			r.add("registration id", Fail, err.Error(), "set provisioning.registration_id to a template this board can fill")
			return
		}
		regID = id
		r.add("registration id", OK, id, "")
	}
	r.regID = regID
	key, err := identity.LoadKey(identity.Source{
		KeyFile: p.Attestation.KeyFile, GroupKeyFile: p.Attestation.GroupKeyFile, Credential: p.Attestation.KeyCredential,
		RegistrationID: regID, CredentialsDir: r.o.Getenv("CREDENTIALS_DIRECTORY"),
	})
	if err != nil {
		fix := "create the key file with mode 0600 (chmod 600 FILE) or point provisioning.attestation at the right source"
		if p.Attestation.KeyCredential != "" && r.o.Getenv("CREDENTIALS_DIRECTORY") == "" {
			r.add("key", Warn, "key_credential "+p.Attestation.KeyCredential+" is only readable inside the service ($CREDENTIALS_DIRECTORY)",
				"run doctor with CREDENTIALS_DIRECTORY set, e.g. systemd-run -P -p LoadCredential=... fieldgate doctor")
			return
		}
		r.add("key", Fail, err.Error(), fix)
		return
	}
	r.key = key
	r.add("key", OK, p.Attestation.KeySource()+" present and private", "")
}

func (r *run) checkClock(ctx context.Context) {
	servers := r.o.Config.Time.NTPServers
	if len(servers) == 0 {
		r.add("clock", Skip, "ntp_servers = [] (trusting the system clock)", "")
		return
	}
	s := timesync.New(timesync.Options{Servers: servers, Timeout: min(r.o.Timeout, r.o.Config.Time.SyncTimeout.D()+time.Second), Logger: r.o.Logger,
		Clock: r.o.Clock, KernelSynced: r.o.KernelSynced})
	st, err := s.Sync(ctx)
	if err != nil || st.Source != timesync.Source("ntp") {
		kernel := "kernel clock not synchronized"
		if st.KernelSynced {
			kernel = "kernel reports the clock synchronized"
		}
		r.add("clock", Warn, fmt.Sprintf("no NTP server answered (%v); %s", err, kernel),
			"allow UDP 123 to "+strings.Join(servers, ", ")+" or configure reachable [time] ntp_servers")
		return
	}
	r.now = s.Now
	off := st.Offset
	kernel := "kernel clock not synchronized"
	if st.KernelSynced {
		kernel = "kernel clock synchronized"
	}
	detail := fmt.Sprintf("offset %s to %s (stratum %d, rtt %s); %s", off.Round(time.Millisecond), st.Server, st.Stratum, st.RTT.Round(time.Millisecond), kernel)
	if math.Abs(float64(off)) > float64(MaxClockOffset) {
		r.add("clock", Fail, "system clock is off: "+detail,
			"enable time sync (timedatectl set-ntp true) or set [time] step_system_clock = true with the CAP_SYS_TIME drop-in; fieldgate itself signs with the corrected time")
		return
	}
	r.add("clock", OK, detail, "")
}

func (r *run) checkRoots() {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if f := r.o.Config.Hub.CAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			r.add("ca_file", Fail, fmt.Sprintf("hub.ca_file %s unusable: %v", f, err), "point hub.ca_file at a PEM CA certificate or remove it")
		}
	}
	r.roots = pool
}

func (r *run) checkCache() {
	p := r.o.Config.Provisioning
	if p.Source == config.SourceManual {
		r.asg = &provisioning.Assignment{Hub: p.HubHost, DeviceID: p.DeviceID}
		r.add("assignment", OK, "manual: "+p.DeviceID+" on "+p.HubHost, "")
		return
	}
	a, err := provisioning.ReadCache(r.o.Config.State.Dir)
	switch {
	case errors.Is(err, provisioning.ErrNoCache):
		r.add("assignment", Warn, "no cached DPS assignment yet", "the agent registers at its next start (or run: fieldgate provision)")
		return
	case err != nil:
		r.add("assignment", Fail, err.Error(), "run: fieldgate provision --force")
		return
	}
	if r.key != nil {
		fp, _ := provisioning.KeyFingerprint(r.key)
		want := provisioning.Identity{IDScope: p.IDScope, RegistrationID: r.regID, Endpoint: p.GlobalEndpoint, KeyFingerprint: fp}
		if why := want.Mismatch(a); why != "" {
			// Still use it below: connecting with the current key to the
			// cached hub shows whether the key works there.
			r.asg = &a
			r.add("assignment", Warn, "cached assignment is for another identity: "+why, "the agent re-registers at its next start (or run: fieldgate provision --force)")
			return
		}
	}
	r.asg = &a
	r.add("assignment", OK, fmt.Sprintf("%s on %s (%s, %s)", a.DeviceID, a.Hub, a.Substatus, a.AssignedAt.UTC().Format(time.RFC3339)), "")
}

// hostPort returns host and port of a DPS URL or hub host[:port].
func hostPort(s, defPort string) (string, string) {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		s = u.Host
		if u.Port() == "" {
			return u.Hostname(), "443"
		}
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		return h, p
	}
	return s, defPort
}

func (r *run) checkEndpoints(ctx context.Context) {
	type ep struct{ name, host, port string }
	var eps []ep
	if r.o.Config.Provisioning.Source == config.SourceDPS {
		h, p := hostPort(r.o.Config.Provisioning.GlobalEndpoint, "443")
		eps = append(eps, ep{"DPS", h, p})
	}
	if r.asg != nil {
		h, p := hostPort(r.asg.Hub, "8883")
		if r.o.Config.Hub.Transport == config.TransportMQTTWS {
			p = "443"
		}
		eps = append(eps, ep{"hub", h, p})
	}
	for _, e := range eps {
		cctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		addrs, err := r.o.Resolver.LookupHost(cctx, e.host)
		cancel()
		if err != nil {
			r.add("dns "+e.name, Fail, fmt.Sprintf("%s: %v", e.host, err), "check /etc/resolv.conf and the network; the host name comes from the config or the DPS assignment")
			continue
		}
		r.add("dns "+e.name, OK, e.host+" → "+strings.Join(addrs, ", "), "")
		cctx, cancel = context.WithTimeout(ctx, r.o.Timeout)
		conn, err := r.o.Dial(cctx, "tcp", net.JoinHostPort(e.host, e.port))
		if err != nil {
			cancel()
			r.add("tls "+e.name, Fail, fmt.Sprintf("TCP %s:%s: %v", e.host, e.port, err), "allow outbound TCP "+e.port+" (firewall, proxy) or check that the service is up")
			continue
		}
		tc := tls.Client(conn, &tls.Config{ServerName: e.host, RootCAs: r.roots, MinVersion: tls.VersionTLS12, Time: r.now})
		err = tc.HandshakeContext(cctx)
		cancel()
		if err != nil {
			conn.Close()
			fix := "if the clock is wrong fix it first; otherwise install the right CA (hub.ca_file) — a TLS-inspecting proxy needs its CA"
			var hv x509.HostnameError
			if errors.As(err, &hv) {
				fix = "the certificate is not for " + e.host + ": check the endpoint / assigned hub name"
			}
			r.add("tls "+e.name, Fail, fmt.Sprintf("%s:%s: %v", e.host, e.port, err), fix)
			continue
		}
		leaf := tc.ConnectionState().PeerCertificates[0]
		days := int(leaf.NotAfter.Sub(r.now()).Hours() / 24)
		tc.Close()
		st := OK
		fix := ""
		if days < 14 {
			st, fix = Warn, "the server certificate expires soon"
		}
		r.add("tls "+e.name, st, fmt.Sprintf("%s:%s TLS %s, certificate valid %d more days, issuer %s", e.host, e.port,
			tls.VersionName(tc.ConnectionState().Version), days, leaf.Issuer.CommonName), fix)
	}
}

func (r *run) checkToken() {
	if r.key == nil || r.asg == nil {
		r.add("token", Skip, "needs a key and an assignment", "")
		return
	}
	ttl := r.o.Config.Hub.TokenTTL.D()
	now := r.now()
	h, _ := hostPort(r.asg.Hub, "")
	tok, err := sas.NewDeviceToken(h, r.asg.DeviceID, "", now.Add(ttl).Unix(), r.key)
	if err != nil {
		r.add("token", Fail, err.Error(), "")
		return
	}
	r.add(tokenSanity(tok.ExpiresAt(), now, r.o.Clock.Now(), ttl))
}

// tokenSanity judges a token signed at corrected time now with lifetime ttl,
// as seen from the system clock sys: it must lie in the future and no
// further than ttl ahead of either clock (beyond MaxClockOffset).
func tokenSanity(exp, now, sys time.Time, ttl time.Duration) (string, Status, string, string) {
	diff := now.Sub(sys).Round(time.Millisecond)
	at := exp.UTC().Format(time.RFC3339)
	switch {
	case !exp.After(now):
		return "token", Fail, fmt.Sprintf("a token signed now expires %s, not after the corrected clock", at), "set hub.token_ttl to a positive duration"
	case exp.Sub(now) > ttl+time.Second:
		return "token", Fail, fmt.Sprintf("a token signed now expires %s, beyond token_ttl %s", at, ttl), "report a bug: the signer does not honour hub.token_ttl"
	case !exp.After(sys):
		return "token", Fail, fmt.Sprintf("a token signed now expires %s, already past on the system clock (corrected - system = %s)", at, diff), "fix the system clock (timedatectl set-ntp true)"
	case exp.Sub(sys) > ttl+MaxClockOffset:
		return "token", Warn, fmt.Sprintf("a token signed now expires %s, more than token_ttl %s ahead of the system clock (corrected - system = %s)", at, ttl, diff), "fix the system clock (timedatectl set-ntp true)"
	}
	return "token", OK, fmt.Sprintf("expires %s (ttl %s; corrected - system clock = %s)", at, ttl, diff), ""
}

func (r *run) checkConnect(ctx context.Context) {
	if r.key == nil || r.asg == nil {
		r.add("hub connect", Skip, "needs a key and an assignment", "")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*r.o.Timeout)
	defer cancel()
	c, err := hub.New(hub.Options{Host: r.asg.Hub, DeviceID: r.asg.DeviceID, Signer: r.key, Transport: r.o.Config.Hub.Transport,
		TLSConfig: &tls.Config{RootCAs: r.roots}, Now: r.now, TokenTTL: 5 * time.Minute, Handler: nopHandler{},
		MaxAuthFailures: 1, ConnectTimeout: r.o.Timeout, Dial: r.o.Dial, Rand: func() float64 { return 1 }, BackoffMin: time.Hour})
	if err != nil {
		r.add("hub connect", Fail, err.Error(), "")
		return
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	for {
		st := c.Status()
		if st.Connects > 0 {
			cancel()
			<-done
			r.add("hub connect", OK, fmt.Sprintf("CONNECT accepted by %s as %s", r.asg.Hub, r.asg.DeviceID), "")
			return
		}
		if st.LastError != "" || cctx.Err() != nil {
			cancel()
			err := <-done
			msg := st.LastError
			if msg == "" && err != nil {
				msg = err.Error()
			}
			fix := "check the network path to the hub"
			if errors.Is(err, hub.ErrAuthRejected) || strings.Contains(msg, "not authorized") {
				fix = "the hub refused the device (CONNACK 5): device unknown or disabled, or wrong key — run: fieldgate provision --force"
			}
			r.add("hub connect", Fail, msg, fix)
			return
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// busKinds are the sensor kinds that need an I2C bus; pinKinds a GPIO line.
func (r *run) checkDevices() {
	var i2c, gpio bool
	for _, s := range r.o.Config.Sensors {
		if s.Bus != "" {
			i2c = true
		}
		if s.Pin != "" {
			gpio = true
		}
	}
	for _, o := range r.o.Config.Outputs {
		if o.Pin != "" {
			gpio = true
		}
	}
	if !i2c && !gpio {
		r.add("devices", Skip, "no I2C or GPIO sensors configured", "")
		return
	}
	if i2c {
		seen := map[string]bool{}
		for _, s := range r.o.Config.Sensors {
			if s.Bus == "" || seen[s.Bus] {
				continue
			}
			seen[s.Bus] = true
			dev := s.Bus
			if !strings.HasPrefix(dev, "/dev/") {
				dev = "/dev/i2c-" + dev
			}
			r.checkDevice("i2c "+dev, dev, "enable I2C (raspi-config → Interface Options → I2C, or dtparam=i2c_arm=on) and reboot", "add the service user to group i2c: usermod -aG i2c fieldgate")
		}
	}
	if gpio {
		chips, _ := filepath.Glob(r.path("/dev/gpiochip*"))
		if len(chips) == 0 {
			r.add("gpio", Fail, "no /dev/gpiochip* devices", "this kernel has no GPIO character device (needs Linux ≥ 5.10 with CONFIG_GPIO_CDEV)")
			return
		}
		sort.Strings(chips)
		r.checkDevice("gpio "+strings.TrimPrefix(chips[0], r.o.Root), strings.TrimPrefix(chips[0], strings.TrimSuffix(r.o.Root, "/")), "", "add the service user to group gpio: usermod -aG gpio fieldgate")
	}
}

func (r *run) checkDevice(name, dev, missingFix, permFix string) {
	f, err := os.OpenFile(r.path(dev), os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		r.add(name, Fail, dev+" does not exist", missingFix)
	case errors.Is(err, os.ErrPermission):
		r.add(name, Fail, "permission denied on "+dev, permFix)
	case err != nil:
		r.add(name, Fail, err.Error(), missingFix)
	default:
		f.Close()
		r.add(name, OK, dev+" present and accessible", "")
	}
}

func (r *run) checkSensors(ctx context.Context) {
	for _, sc := range r.o.Config.Sensors {
		s, err := hw.OpenSensor(sc, hw.Env{Logger: r.o.Logger})
		if err != nil {
			r.add("sensor "+sc.Name, Fail, err.Error(), "see the hint above; `fieldgate sensors --config FILE` reads every sensor once")
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		v, err := s.Read(cctx)
		cancel()
		_ = s.Close()
		if err != nil {
			r.add("sensor "+sc.Name, Fail, err.Error(), "check wiring and the sensor's configuration")
			continue
		}
		keys := make([]string, 0, len(v))
		for k, f := range v {
			keys = append(keys, fmt.Sprintf("%s=%.4g", k, f))
		}
		sort.Strings(keys)
		r.add("sensor "+sc.Name, OK, sc.Kind+": "+strings.Join(keys, " "), "")
	}
}

func (r *run) checkStateDir() {
	dir := r.o.Config.State.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		r.add("state dir", Fail, err.Error(), "create "+dir+" owned by the service user (systemd StateDirectory= does this)")
		return
	}
	f, err := os.CreateTemp(dir, ".doctor-*")
	if err != nil {
		r.add("state dir", Fail, "not writable: "+err.Error(), "chown -R fieldgate: "+dir)
		return
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	free, err := freeBytes(dir)
	if err != nil {
		r.add("state dir", Warn, "writable; free space unknown: "+err.Error(), "")
		return
	}
	need := uint64(r.o.Config.State.SpoolMaxBytes) * 2
	if free < need {
		r.add("state dir", Fail, fmt.Sprintf("%s writable but only %d MiB free (spool may need %d MiB)", dir, free>>20, need>>20), "free space or lower state.spool_max_bytes")
		return
	}
	r.add("state dir", OK, fmt.Sprintf("%s writable, %d MiB free", dir, free>>20), "")
}

func (r *run) checkSystemd(ctx context.Context) {
	if r.o.Systemctl == nil {
		r.add("systemd", Skip, "systemctl not available", "")
		return
	}
	out, err := r.o.Systemctl(ctx)
	out = strings.TrimSpace(out)
	switch {
	case out == "active":
		r.add("systemd", OK, "fieldgate.service active", "")
	case err != nil && out == "":
		r.add("systemd", Skip, "unit status unknown: "+err.Error(), "")
	default:
		r.add("systemd", Warn, "fieldgate.service is "+out, "systemctl enable --now fieldgate; journalctl -u fieldgate -b")
	}
}

type nopHandler struct{}

func (nopHandler) Connected(context.Context, *hub.Conn)                 {}
func (nopHandler) Desired(context.Context, []byte)                      {}
func (nopHandler) Method(context.Context, string, []byte) (int, []byte) { return 404, nil }
func (nopHandler) C2D(context.Context, hub.C2DMessage)                  {}
