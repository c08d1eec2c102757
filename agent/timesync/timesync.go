// Package timesync owns the agent's notion of trusted wall time.
//
// A Raspberry Pi has no real-time clock and may boot at an old time, yet IoT
// Hub and DPS reject SAS tokens by absolute expiry and TLS checks certificate
// validity. A Syncer queries the configured NTP servers (beevik/ntp,
// Response.Validate on every answer), keeps the offset of the best answer and
// serves corrected UTC time through Now, so fieldgate is right without any
// privilege. Everything that needs wall time — SAS expiry, tls.Config.Time,
// reading timestamps — takes a Clock and is given the Syncer.
//
// When no server answers usefully the Syncer trusts the kernel if adjtimex
// reports the clock synchronized (another daemon such as systemd-timesyncd
// or chrony disciplines it), and otherwise runs on the unverified system
// clock with a loud warning while it keeps retrying. Stepping the system
// clock is optional and needs CAP_SYS_TIME.
//
// Between synchronizations the corrected time advances with the injected
// clock's monotonic reading, so a step of the system clock by another daemon
// does not disturb it. All timers and back-off go through the injected
// clockwork.Clock.
//
// Any agent package may import timesync; the sibling package ntptest is a
// real NTP responder for tests.
package timesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beevik/ntp"
	"github.com/jonboulle/clockwork"
)

// Source says where the current time comes from.
type Source string

// Time sources reported in Status.Source.
const (
	// SourceNTP: corrected by the offset measured against an NTP server.
	SourceNTP Source = "ntp"
	// SourceKernel: no NTP answer was usable, but the kernel reports its
	// clock synchronized (adjtimex), so the system clock is trusted.
	SourceKernel Source = "kernel"
	// SourceSystem: the plain system clock — trusted by configuration when
	// no servers are configured, unverified otherwise.
	SourceSystem Source = "system"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultTimeout        = 5 * time.Second
	DefaultResyncInterval = 15 * time.Minute
	DefaultStepThreshold  = time.Second
	DefaultJumpThreshold  = time.Second
	// DefaultPort is the NTP port used when a server has no ":port".
	DefaultPort = 123

	// firstRetry is the first back-off delay while unsynced; it doubles up
	// to the resync interval.
	firstRetry = 5 * time.Second
)

// ErrNoUsableServer is wrapped by Sync's error when no configured server
// gave a valid answer. The error also wraps each server's own error (for
// example a net timeout or ntp.ErrKissOfDeath).
var ErrNoUsableServer = errors.New("timesync: no NTP server gave a usable answer")

// Status is a snapshot of the Syncer's state, for logs, the twin and
// diagnostics. It never contains secrets.
type Status struct {
	// Synced is true while the time is trustworthy: a valid NTP answer was
	// applied, or the kernel reports sync, or no servers are configured.
	Synced bool
	// Source is where the time currently comes from.
	Source Source
	// Server is the configured server whose answer is in use (SourceNTP).
	Server string
	// Offset is the measured offset of the system clock from NTP time: add
	// it to the system clock to get corrected time. After a successful step
	// of the system clock it is ~0.
	Offset time.Duration
	// RTT is the round trip of the answer in use.
	RTT time.Duration
	// Stratum of the server whose answer is in use.
	Stratum uint8
	// LastSync is the corrected time of the last successful NTP sync (zero
	// if none).
	LastSync time.Time
	// LastError describes the last failed round ("" after a success).
	LastError string
	// KernelSynced is what adjtimex reported in the last round.
	KernelSynced bool
}

// Clock is what consumers of wall time need: SAS signing, tls.Config.Time,
// reading timestamps. *Syncer and SystemClock satisfy it.
type Clock interface {
	Now() time.Time
}

// SystemClock is the uncorrected system clock, for tools and tests that do
// not run a Syncer.
type SystemClock struct{}

// Now returns the system time in UTC.
func (SystemClock) Now() time.Time { return time.Now().UTC() }

// Options configure a Syncer. Zero values take the documented defaults.
type Options struct {
	// Servers are "host" or "host:port" ("[v6addr]:port" for IPv6 with a
	// port). Empty means trust the system clock: Source "system", or
	// "kernel" when adjtimex reports the clock synchronized.
	Servers []string
	// Timeout per query; default 5s.
	Timeout time.Duration
	// ResyncInterval between successful rounds; default 15m. While unsynced
	// the Syncer retries sooner (5s, doubling up to ResyncInterval).
	ResyncInterval time.Duration
	// StepSystemClock steps the system clock when |offset| > StepThreshold.
	// Needs CAP_SYS_TIME; on failure the corrected clock is still served.
	StepSystemClock bool
	// StepThreshold for StepSystemClock; default 1s.
	StepThreshold time.Duration
	// Clock provides timers and elapsed time; nil means the real clock.
	// Elapsed time is measured as the difference of two Clock.Now readings,
	// which for the real clock use the monotonic clock.
	Clock clockwork.Clock
	// Wall reads the system wall clock, which an operator or another daemon
	// may step at any time; nil means Clock.Now. Tests inject a wall clock
	// that steps while Clock runs on, as a real system clock does against
	// the monotonic one.
	Wall func() time.Time
	// Query performs one NTP query against host with opts.Port set from the
	// server's ":port" (or 123). It must honour opts.Timeout and ctx. Nil
	// means beevik/ntp's QueryWithOptions.
	Query func(ctx context.Context, server string, opts ntp.QueryOptions) (*ntp.Response, error)
	// KernelSynced reports whether the kernel clock is synchronized; nil
	// means adjtimex on linux and always false elsewhere.
	KernelSynced func() (bool, error)
	// SetSystemClock steps the system clock; nil means
	// clock_settime(CLOCK_REALTIME) on linux and an error elsewhere.
	SetSystemClock func(time.Time) error
	// Logger receives the Syncer's logs; nil discards them.
	Logger *slog.Logger
	// JumpThreshold: a change of the corrected time by more than this is
	// logged at warn level with the old and new offsets; default 1s.
	JumpThreshold time.Duration
}

// estimate anchors corrected time: at clock reading base (which carries the
// monotonic reading when the clock is real) the system wall clock read wall
// and was off by offset. Corrected time advances from wall+offset by the
// elapsed time on the clock, so a later step of the system wall clock does
// not move it. It is immutable once published.
type estimate struct {
	base   time.Time
	wall   time.Time // no monotonic reading
	offset time.Duration
}

// Syncer measures and serves corrected wall time. Create it with New; all
// methods are safe for concurrent use.
type Syncer struct {
	servers        []string
	timeout        time.Duration
	resync         time.Duration
	step           bool
	stepThreshold  time.Duration
	jumpThreshold  time.Duration
	clock          clockwork.Clock
	wall           func() time.Time
	injectedClock  bool
	query          func(context.Context, string, ntp.QueryOptions) (*ntp.Response, error)
	kernelSynced   func() (bool, error)
	setSystemClock func(time.Time) error
	log            *slog.Logger

	// est is the current NTP estimate, or nil before the first valid
	// answer. Read lock-free by Now.
	est atomic.Pointer[estimate]

	synced     chan struct{}
	syncedOnce sync.Once

	// round serializes Sync rounds. Lock order: round, then mu.
	round sync.Mutex

	// mu guards status.
	mu     sync.Mutex
	status Status
}

// New returns a Syncer. It does no I/O; call Sync or Run to measure. With no
// servers configured the Syncer is synced at once (the system clock is
// trusted by configuration).
func New(o Options) *Syncer {
	s := &Syncer{
		servers:        append([]string(nil), o.Servers...),
		timeout:        o.Timeout,
		resync:         o.ResyncInterval,
		step:           o.StepSystemClock,
		stepThreshold:  o.StepThreshold,
		jumpThreshold:  o.JumpThreshold,
		clock:          o.Clock,
		wall:           o.Wall,
		injectedClock:  o.Clock != nil || o.Wall != nil,
		query:          o.Query,
		kernelSynced:   o.KernelSynced,
		setSystemClock: o.SetSystemClock,
		log:            o.Logger,
		synced:         make(chan struct{}),
		status:         Status{Source: SourceSystem},
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.resync <= 0 {
		s.resync = DefaultResyncInterval
	}
	if s.stepThreshold <= 0 {
		s.stepThreshold = DefaultStepThreshold
	}
	if s.jumpThreshold <= 0 {
		s.jumpThreshold = DefaultJumpThreshold
	}
	if s.clock == nil {
		s.clock = clockwork.NewRealClock()
	}
	if s.wall == nil {
		s.wall = s.clock.Now
	}
	if s.query == nil {
		s.query = ntpQuery
	}
	if s.kernelSynced == nil {
		s.kernelSynced = kernelClockSynced
	}
	if s.setSystemClock == nil {
		s.setSystemClock = setSystemClock
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if len(s.servers) == 0 {
		s.status.Synced = true
		s.markSynced()
	}
	return s
}

// Now returns corrected UTC wall time: the system wall clock plus the
// measured offset at the last measurement, advanced by the clock's elapsed
// (monotonic) time since. Before any valid NTP answer it is the system wall
// clock. It carries no monotonic reading.
func (s *Syncer) Now() time.Time {
	e := s.est.Load()
	if e == nil {
		return s.wall().Round(0).UTC()
	}
	return e.correctedAt(s.clock.Now())
}

// correctedAt is the corrected time at clock reading now.
func (e *estimate) correctedAt(now time.Time) time.Time {
	return e.wall.Add(e.offset + now.Sub(e.base)).UTC()
}

// newEstimate anchors offset at the current clock and wall readings.
func (s *Syncer) newEstimate(offset time.Duration) *estimate {
	return &estimate{base: s.clock.Now(), wall: s.wall().Round(0), offset: offset}
}

// Status returns a snapshot of the current state.
func (s *Syncer) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Synced returns a channel closed once time is trustworthy: a valid NTP
// answer was applied, the kernel reported sync, or no servers are
// configured. It stays closed even if trust is lost later (see Status).
func (s *Syncer) Synced() <-chan struct{} { return s.synced }

// WaitSynced waits until time is trustworthy, ctx is done, or max has passed
// on the injected clock. It reports whether time is trustworthy; on false the
// caller proceeds on the system clock, and a warning is logged.
func (s *Syncer) WaitSynced(ctx context.Context, max time.Duration) bool {
	select {
	case <-s.synced:
		return true
	default:
	}
	t := s.clock.NewTimer(max)
	defer t.Stop()
	select {
	case <-s.synced:
		return true
	case <-ctx.Done():
		return false
	case <-t.Chan():
		s.log.Warn("timesync: time still not verified; proceeding on the unverified system clock",
			"waited", max, "system_time", s.wall().UTC(), "last_error", s.Status().LastError)
		return false
	}
}

// Run synchronizes now and then every ResyncInterval until ctx is done.
// While the last round produced no trusted time (no valid NTP answer and no
// kernel sync) it retries sooner: 5s, doubling up to ResyncInterval.
func (s *Syncer) Run(ctx context.Context) {
	retry := firstRetry
	for {
		st, err := s.Sync(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := s.resync
		if err != nil && st.Source != SourceKernel {
			wait = min(retry, s.resync)
			retry = min(retry*2, s.resync)
		} else {
			retry = firstRetry
		}
		t := s.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		}
	}
}

// result is one server's outcome in a round.
type result struct {
	server string
	resp   *ntp.Response
	err    error
}

// Sync performs one round: it queries every server concurrently, validates
// each answer, and applies the best valid one (lowest root distance, then
// lowest RTT, then configuration order). If none is usable it falls back to
// the kernel or the system clock and returns an error wrapping
// ErrNoUsableServer; a previously measured NTP offset is kept in that case.
// With no servers configured it only refreshes the kernel status.
func (s *Syncer) Sync(ctx context.Context) (Status, error) {
	s.round.Lock()
	defer s.round.Unlock()

	kernel := s.checkKernel()
	if len(s.servers) == 0 {
		src := SourceSystem
		if kernel {
			src = SourceKernel
		}
		st := s.updateStatus(func(st *Status) {
			st.Synced, st.Source, st.KernelSynced, st.LastError = true, src, kernel, ""
		})
		s.markSynced()
		return st, nil
	}

	results := s.queryAll(ctx)
	var (
		best *result
		errs serverErrors
	)
	for i := range results {
		r := &results[i]
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if best == nil || better(r.resp, best.resp) {
			best = r
		}
	}
	if best != nil {
		for _, e := range errs {
			s.log.Debug("timesync: server not used", "error", e)
		}
		return s.apply(best, kernel), nil
	}
	if err := ctx.Err(); err != nil {
		return s.Status(), fmt.Errorf("timesync: sync interrupted: %w", err)
	}
	err := fmt.Errorf("%w (%d configured): %w", ErrNoUsableServer, len(s.servers), errs)
	return s.fallback(kernel, err), err
}

// better reports whether a is a better answer than b.
func better(a, b *ntp.Response) bool {
	if a.RootDistance != b.RootDistance {
		return a.RootDistance < b.RootDistance
	}
	return a.RTT < b.RTT
}

func (s *Syncer) queryAll(ctx context.Context) []result {
	results := make([]result, len(s.servers))
	var wg sync.WaitGroup
	for i, server := range s.servers {
		wg.Go(func() {
			results[i] = s.queryOne(ctx, server)
		})
	}
	wg.Wait()
	return results
}

func (s *Syncer) queryOne(ctx context.Context, server string) result {
	host, port, err := ParseServer(server)
	if err != nil {
		return result{server: server, err: err}
	}
	opts := ntp.QueryOptions{Timeout: s.timeout, Port: port}
	if s.injectedClock {
		// Measure against the injected clock so that Now (which is based on
		// it) is corrected by exactly the measured offset.
		opts.GetSystemTime = s.wall
	}
	resp, err := s.query(ctx, host, opts)
	switch {
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return result{server: server, err: fmt.Errorf("server %s: no answer within %v (is UDP port %d reachable?): %w", server, s.timeout, port, err)}
		}
		return result{server: server, err: fmt.Errorf("server %s: %w", server, err)}
	case resp == nil:
		return result{server: server, err: fmt.Errorf("server %s: query returned no response", server)}
	}
	if err := resp.Validate(); err != nil {
		detail := ""
		if resp.Stratum == 0 && resp.KissCode != "" {
			detail = fmt.Sprintf(" (kiss code %q)", resp.KissCode)
		}
		return result{server: server, err: fmt.Errorf("server %s: answer rejected%s: %w", server, detail, err)}
	}
	return result{server: server, resp: resp}
}

// apply installs the offset of a valid answer, logs jumps and optionally
// steps the system clock.
func (s *Syncer) apply(r *result, kernel bool) Status {
	e := s.newEstimate(r.resp.ClockOffset)
	prev := s.est.Load()
	oldOffset := time.Duration(0)
	if prev != nil {
		// The offset currently in effect, including any system clock step
		// since the last measurement.
		oldOffset = prev.correctedAt(e.base).Sub(e.wall)
	}
	offset := e.offset
	change := offset - oldOffset
	switch {
	case abs(change) > s.jumpThreshold && prev == nil:
		s.log.Warn("timesync: system clock differs from NTP time; serving corrected time",
			"server", r.server, "offset", offset, "system_time", e.wall.UTC(), "ntp_time", e.wall.Add(offset).UTC())
	case abs(change) > s.jumpThreshold:
		s.log.Warn("timesync: corrected clock jumped",
			"server", r.server, "old_offset", oldOffset, "new_offset", offset, "change", change)
	case prev != nil && abs(offset-prev.offset) > s.jumpThreshold:
		// The system clock was stepped since the last measurement (by an
		// operator or another daemon); corrected time ran on unaffected.
		s.log.Info("timesync: system clock was stepped; corrected time was not affected",
			"server", r.server, "step", prev.offset-offset, "offset", offset)
	}
	if s.step && abs(offset) > s.stepThreshold {
		target := e.wall.Add(offset)
		if err := s.setSystemClock(target); err != nil {
			s.log.Warn("timesync: cannot step the system clock; corrected time is still used in-process",
				"offset", offset, "error", err)
		} else {
			// The system clock now reads NTP time: the offset is ~0 from here.
			e = s.newEstimate(0)
			s.log.Info("timesync: stepped the system clock", "by", offset, "server", r.server)
		}
	}
	s.est.Store(e)
	st := s.updateStatus(func(st *Status) {
		*st = Status{
			Synced:       true,
			Source:       SourceNTP,
			Server:       r.server,
			Offset:       e.offset,
			RTT:          r.resp.RTT,
			Stratum:      r.resp.Stratum,
			LastSync:     e.correctedAt(e.base),
			KernelSynced: kernel,
		}
	})
	if prev == nil {
		s.log.Info("timesync: time synchronized", "server", r.server, "offset", offset, "rtt", r.resp.RTT, "stratum", r.resp.Stratum)
	} else {
		s.log.Debug("timesync: resynchronized", "server", r.server, "offset", offset, "rtt", r.resp.RTT, "stratum", r.resp.Stratum)
	}
	s.markSynced()
	return st
}

// fallback handles a round without any usable answer.
func (s *Syncer) fallback(kernel bool, err error) Status {
	if prev := s.est.Load(); prev != nil {
		st := s.updateStatus(func(st *Status) { st.LastError, st.KernelSynced = err.Error(), kernel })
		s.log.Warn("timesync: NTP resync failed; keeping the last measured offset",
			"offset", prev.offset, "last_sync", st.LastSync, "error", err)
		return st
	}
	if kernel {
		st := s.updateStatus(func(st *Status) {
			*st = Status{Synced: true, Source: SourceKernel, KernelSynced: true, LastError: err.Error()}
		})
		s.log.Warn("timesync: no NTP server usable; trusting the kernel clock, which adjtimex reports synchronized",
			"error", err)
		s.markSynced()
		return st
	}
	st := s.updateStatus(func(st *Status) {
		*st = Status{Synced: false, Source: SourceSystem, LastError: err.Error()}
	})
	s.log.Warn("timesync: TIME NOT VERIFIED: no NTP server usable and the kernel clock is not synchronized; "+
		"running on the unverified system clock (TLS and SAS expiry may fail) and retrying; "+
		"check network access to the NTP servers (UDP 123) or the [time] ntp_servers setting",
		"system_time", s.wall().UTC(), "servers", strings.Join(s.servers, ","), "error", err)
	return st
}

func (s *Syncer) checkKernel() bool {
	ok, err := s.kernelSynced()
	if err != nil {
		s.log.Debug("timesync: cannot read the kernel clock state", "error", err)
		return false
	}
	return ok
}

func (s *Syncer) updateStatus(f func(*Status)) Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
	return s.status
}

func (s *Syncer) markSynced() {
	s.syncedOnce.Do(func() { close(s.synced) })
}

// ParseServer splits an NTP server setting into host and port: "host",
// "host:port", "v6addr", "[v6addr]" or "[v6addr]:port". Without a port it
// returns DefaultPort. Use it to validate configuration.
func ParseServer(server string) (host string, port int, err error) {
	server = strings.TrimSpace(server)
	if server == "" {
		return "", 0, errors.New("timesync: empty NTP server name; use \"host\" or \"host:port\"")
	}
	switch {
	case strings.HasPrefix(server, "[") && strings.HasSuffix(server, "]"):
		host = server[1 : len(server)-1]
		if host == "" || strings.ContainsAny(host, "[]") {
			return "", 0, fmt.Errorf("timesync: NTP server %q: malformed bracketed address; use \"[v6addr]\" or \"[v6addr]:port\"", server)
		}
		return host, DefaultPort, nil
	case strings.Count(server, ":") > 1 && !strings.HasPrefix(server, "["):
		return server, DefaultPort, nil // bare IPv6 address
	case !strings.Contains(server, ":"):
		return server, DefaultPort, nil
	}
	h, p, err := net.SplitHostPort(server)
	if err != nil {
		return "", 0, fmt.Errorf("timesync: NTP server %q: %w; use \"host\", \"host:port\" or \"[v6addr]:port\"", server, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("timesync: NTP server %q: port %q is not a number from 1 to 65535", server, p)
	}
	if h == "" {
		return "", 0, fmt.Errorf("timesync: NTP server %q: missing host before the port", server)
	}
	return h, n, nil
}

// serverErrors is the per-server detail of a failed round, printed on one
// line and unwrappable to each server's error.
type serverErrors []error

func (e serverErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	sort.Strings(msgs)
	return strings.Join(msgs, "; ")
}

func (e serverErrors) Unwrap() []error { return e }

// ntpQuery is the default Options.Query: beevik/ntp with a dialer that
// honours ctx (DNS resolution and dial bounded by opts.Timeout; the socket
// is closed when ctx is cancelled).
func ntpQuery(ctx context.Context, server string, opts ntp.QueryOptions) (*ntp.Response, error) {
	var stop func() bool
	opts.Dialer = func(local, remote string) (net.Conn, error) {
		d := net.Dialer{Timeout: opts.Timeout}
		if local != "" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(local)}
		}
		c, err := d.DialContext(ctx, "udp", remote)
		if err != nil {
			return nil, err
		}
		stop = context.AfterFunc(ctx, func() { c.Close() })
		return c, nil
	}
	resp, err := ntp.QueryWithOptions(server, opts)
	if stop != nil {
		stop()
	}
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return resp, err
}

// Kernel clock state (adjtimex). TIME_ERROR is the adjtimex return value
// when the clock is not synchronized (node_exporter's timex collector uses
// exactly this for node_timex_sync_status); STA_UNSYNC is the status bit a
// time daemon clears once it disciplines the clock; the kernel sets it by
// itself when maxerror grows past 16 s (NTP_PHASE_LIMIT).
const (
	timeError            = 5
	staUnsync            = 0x0040
	maxKernelErrorMicros = 16_000_000 // microseconds
)

// kernelStateSynced decides from adjtimex's return value, status bits and
// maxerror (µs) whether the kernel clock is synchronized.
func kernelStateSynced(state int, status int64, maxErrorMicros int64) bool {
	return state != timeError && status&staUnsync == 0 && maxErrorMicros >= 0 && maxErrorMicros < maxKernelErrorMicros
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

var (
	_ Clock = (*Syncer)(nil)
	_ Clock = SystemClock{}
)
