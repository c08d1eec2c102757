package agent

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/spool"
	"github.com/fieldgate/fieldgate/hw"
)

// readTimeout bounds one sensor read.
const readTimeout = 10 * time.Second

// SensorStatus is a sensor's health as reported in the twin and diagnostics.
type SensorStatus struct {
	Kind      string    `json:"kind"`
	Interval  string    `json:"interval"`
	OK        bool      `json:"ok"`
	LastError string    `json:"lastError,omitempty"`
	LastRead  time.Time `json:"lastRead,omitzero"`
	Readings  uint64    `json:"readings"`
	Failures  uint64    `json:"failures"`
}

// sampler reads every configured sensor on its own schedule and commits each
// reading to the spool; a failing sensor never stops the others.
type sampler struct {
	a *Agent

	// mu guards the fields below.
	mu       sync.Mutex
	sensors  map[string]*sensorLoop
	order    []string
	wg       sync.WaitGroup
	lastBeat time.Time // monotonic (agent clock) time of the last loop iteration
}

type sensorLoop struct {
	cfg      config.Sensor
	interval chan time.Duration
	readMu   sync.Mutex // serialises reads of sensor (loop and readSensors)

	// mu guards status and sensor.
	mu     sync.Mutex
	status SensorStatus
	sensor hw.Sensor // nil while it cannot be opened
}

func newSampler(a *Agent, cfg *config.Config) *sampler {
	s := &sampler{a: a, sensors: map[string]*sensorLoop{}}
	for _, sc := range cfg.Sensors {
		s.sensors[sc.Name] = &sensorLoop{cfg: sc, interval: make(chan time.Duration, 1),
			status: SensorStatus{Kind: sc.Kind, Interval: sc.Interval.Duration.String()}}
		s.order = append(s.order, sc.Name)
	}
	return s
}

// start launches one loop per sensor plus a heartbeat; wait waits for them.
func (s *sampler) start(ctx context.Context) {
	s.mu.Lock()
	s.lastBeat = s.a.clk.Now()
	loops := make([]*sensorLoop, 0, len(s.order))
	for _, n := range s.order {
		loops = append(loops, s.sensors[n])
	}
	s.mu.Unlock()
	for _, l := range loops {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.loop(ctx, l) }()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := s.a.clk.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.Chan():
				s.mu.Lock()
				s.lastBeat = s.a.clk.Now()
				s.mu.Unlock()
			}
		}
	}()
}

// wait blocks until every sensor loop has stopped and closed its sensor.
func (s *sampler) wait() { s.wg.Wait() }

func (s *sampler) healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.a.clk.Since(s.lastBeat) < 30*time.Second
}

func (s *sampler) loop(ctx context.Context, l *sensorLoop) {
	log := s.a.log.With("sensor", l.cfg.Name, "kind", l.cfg.Kind)
	env := s.a.hwEnv(log)
	interval := l.cfg.Interval.Duration
	openBackoff := time.Second
	var sensor hw.Sensor
	defer func() {
		if sensor != nil {
			l.readMu.Lock()
			l.mu.Lock()
			l.sensor = nil
			l.mu.Unlock()
			if err := sensor.Close(); err != nil {
				log.Warn("closing sensor", "err", err)
			}
			l.readMu.Unlock()
		}
	}()
	var events <-chan hw.Values
	next := s.a.clk.NewTimer(0)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-l.interval:
			interval = d
			l.setStatus(func(st *SensorStatus) { st.Interval = d.String() })
			next.Reset(0)
			continue
		case v, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.commit(ctx, l, v, log)
			continue
		case <-next.Chan():
		}
		if sensor == nil {
			sen, err := hw.OpenSensor(l.cfg, env)
			if err != nil {
				l.fail(err, log)
				next.Reset(openBackoff)
				openBackoff = min(openBackoff*2, 5*time.Minute)
				continue
			}
			openBackoff = time.Second
			sensor = sen
			l.mu.Lock()
			l.sensor = sen
			l.mu.Unlock()
			if es, ok := sen.(hw.EdgeSensor); ok {
				events = es.Events()
			}
		}
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		l.readMu.Lock()
		v, err := sensor.Read(rctx)
		l.readMu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.fail(err, log)
		} else {
			s.commit(ctx, l, v, log)
		}
		next.Reset(interval)
	}
}

// commit stamps a reading with the corrected clock and makes it durable.
func (s *sampler) commit(ctx context.Context, l *sensorLoop, v hw.Values, log interface {
	Warn(string, ...any)
}) {
	vals := make(map[string]float64, len(v))
	for k, f := range v {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		vals[k] = f
	}
	rec := spool.Record{TS: s.a.sync.Now(), Sensor: l.cfg.Name, Values: vals}
	if _, err := s.a.spool.Append(ctx, rec); err != nil {
		if errors.Is(err, context.Canceled) {
			return
		}
		log.Warn("reading not committed to the spool", "err", err)
		l.fail(err, nil)
		return
	}
	l.ok(rec.TS)
	select {
	case s.a.appended <- struct{}{}:
	default:
	}
}

func (l *sensorLoop) setStatus(f func(*SensorStatus)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.status)
}

// fail records an error, logging only when the error changes.
func (l *sensorLoop) fail(err error, log interface{ Warn(string, ...any) }) {
	l.mu.Lock()
	changed := l.status.OK || l.status.LastError != err.Error()
	l.status.OK = false
	l.status.LastError = err.Error()
	l.status.Failures++
	l.mu.Unlock()
	if changed && log != nil {
		log.Warn("sensor read failed (logged once until it changes)", "err", err)
	}
}

func (l *sensorLoop) ok(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.OK = true
	l.status.LastError = ""
	l.status.LastRead = at
	l.status.Readings++
}

// statuses returns every sensor's status by name.
func (s *sampler) statuses() map[string]SensorStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]SensorStatus, len(s.sensors))
	for n, l := range s.sensors {
		l.mu.Lock()
		out[n] = l.status
		l.mu.Unlock()
	}
	return out
}

// names returns the sensor names in config order.
func (s *sampler) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

// setInterval changes one sensor's sampling interval.
func (s *sampler) setInterval(name string, d time.Duration) bool {
	s.mu.Lock()
	l := s.sensors[name]
	s.mu.Unlock()
	if l == nil {
		return false
	}
	select {
	case <-l.interval:
	default:
	}
	l.interval <- d
	return true
}

// readNow reads sensors immediately (the readSensors method) without
// committing: an empty name reads all.
func (s *sampler) readNow(ctx context.Context, name string) (map[string]any, error) {
	names := s.names()
	if name != "" {
		names = []string{name}
	}
	sort.Strings(names)
	out := map[string]any{}
	for _, n := range names {
		s.mu.Lock()
		l := s.sensors[n]
		s.mu.Unlock()
		if l == nil {
			return nil, errUnknownSensor
		}
		l.readMu.Lock()
		l.mu.Lock()
		sen, lastErr := l.sensor, l.status.LastError
		l.mu.Unlock()
		if sen == nil {
			l.readMu.Unlock()
			out[n] = map[string]any{"error": "sensor not open: " + lastErr}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		v, err := sen.Read(rctx)
		cancel()
		l.readMu.Unlock()
		if err != nil {
			out[n] = map[string]any{"error": err.Error()}
			continue
		}
		out[n] = map[string]any{"values": v, "ts": s.a.sync.Now().UTC().Format(time.RFC3339Nano)}
	}
	return out, nil
}

var errUnknownSensor = errors.New("unknown sensor")
