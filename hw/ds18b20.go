package hw

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("ds18b20", func(c config.Sensor, env Env) (Sensor, error) { return newDS18B20(c, env) })
}

// w1Devices is where the kernel's w1 bus master lists 1-wire slaves.
const w1Devices = "sys/bus/w1/devices"

// ds18b20 reads Maxim DS18B20 probes through the kernel's w1 driver
// (w1_therm): temperature_c for one probe, temperature_c_<id> for each of
// several. The kernel does the bus timing and CRC; each read takes about
// 750 ms per probe (a 12-bit conversion).
//
// With several probes, one failing probe does not hide the others: Read
// returns what the rest measured and logs the failure once per change; only
// when no probe can be read does Read fail.
type ds18b20 struct {
	name   string
	device string // "" = every probe
	dir    string // {root}/sys/bus/w1/devices
	log    *slog.Logger

	// mu guards lastBad.
	mu      sync.Mutex
	lastBad string
}

func newDS18B20(c config.Sensor, env Env) (*ds18b20, error) {
	s := &ds18b20{name: c.Name, device: c.Device, dir: filepath.Join(env.Root, w1Devices), log: env.Logger}
	if _, err := s.probes(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *ds18b20) Name() string { return s.name }
func (s *ds18b20) Kind() string { return "ds18b20" }

// probes lists the probe directories to read, sorted.
func (s *ds18b20) probes() ([]string, error) {
	if _, err := os.Stat(s.dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("hw: ds18b20 %s: %s does not exist — 1-wire not enabled: add dtoverlay=w1-gpio to /boot/firmware/config.txt and reboot", s.name, s.dir)
	}
	if s.device != "" {
		p := filepath.Join(s.dir, s.device)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("hw: ds18b20 %s: probe %s not found under %s — check its wiring and the 4.7 kΩ pull-up, or list the probes with ls %s", s.name, s.device, s.dir, s.dir)
		}
		return []string{s.device}, nil
	}
	matches, err := filepath.Glob(filepath.Join(s.dir, "28-*"))
	if err != nil {
		return nil, fmt.Errorf("hw: ds18b20 %s: %w", s.name, err)
	}
	if len(matches) == 0 {
		return nil, fmt.Errorf("hw: ds18b20 %s: no DS18B20 found under %s — check wiring and the 4.7 kΩ pull-up between data and 3V3", s.name, s.dir)
	}
	ids := make([]string, len(matches))
	for i, m := range matches {
		ids[i] = filepath.Base(m)
	}
	sort.Strings(ids)
	return ids, nil
}

// Read reads every probe; probes that appear or vanish are followed.
func (s *ds18b20) Read(ctx context.Context) (Values, error) {
	ids, err := s.probes()
	if err != nil {
		return nil, err
	}
	v := Values{}
	var bad []string
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := s.readProbe(id)
		if err != nil {
			bad = append(bad, id)
			errs = append(errs, err)
			continue
		}
		key := "temperature_c"
		if s.device == "" && len(ids) > 1 {
			key = "temperature_c_" + strings.TrimPrefix(id, "28-")
		}
		v[key] = c
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("hw: ds18b20 %s: %w", s.name, errors.Join(errs...))
	}
	s.noteBad(strings.Join(bad, ","), errs)
	return v, nil
}

// noteBad logs failing probes once per change of the set.
func (s *ds18b20) noteBad(bad string, errs []error) {
	s.mu.Lock()
	changed := bad != s.lastBad
	s.lastBad = bad
	s.mu.Unlock()
	switch {
	case changed && bad != "":
		s.log.Warn("ds18b20 probes failing; the others are reported", "sensor", s.name, "probes", bad, "error", errors.Join(errs...))
	case changed:
		s.log.Info("ds18b20 probes all reading again", "sensor", s.name)
	}
}

// readProbe reads one probe: the temperature file (kernel ≥ 5.6), else
// w1_slave.
func (s *ds18b20) readProbe(id string) (float64, error) {
	dir := filepath.Join(s.dir, id)
	b, err := os.ReadFile(filepath.Join(dir, "temperature"))
	kind := "temperature"
	if errors.Is(err, fs.ErrNotExist) {
		b, err = os.ReadFile(filepath.Join(dir, "w1_slave"))
		kind = "w1_slave"
	}
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return 0, fmt.Errorf("probe %s: %w", id, err)
		}
		// The kernel answers EIO when the CRC fails or the probe is gone.
		return 0, fmt.Errorf("probe %s: %w — CRC error or probe disconnected (noise or a long cable); the next read retries", id, err)
	}
	milli, err := parseW1(kind, string(b))
	if err != nil {
		return 0, fmt.Errorf("probe %s: %w", id, err)
	}
	return float64(milli) / 1000, nil
}

// Errors of parseW1.
var (
	errW1CRC     = errors.New("CRC error (noise or a long cable); the next read retries")
	errW1PowerOn = errors.New("power-on value 85 °C: the probe lost power or the conversion did not run — check the wiring (parasite power needs a strong pull-up)")
)

// parseW1 parses the kernel's w1_therm output: "temperature" holds
// millidegrees Celsius; "w1_slave" holds two lines, the first ending in
// "crc=xx YES" (or NO), the second in "t=<millidegrees>".
func parseW1(kind, s string) (int, error) {
	var num string
	switch kind {
	case "temperature":
		num = strings.TrimSpace(s)
	case "w1_slave":
		lines := strings.Split(strings.TrimSpace(s), "\n")
		if len(lines) != 2 {
			return 0, fmt.Errorf("w1_slave has %d lines, want 2: %.40q", len(lines), s)
		}
		switch {
		case strings.HasSuffix(strings.TrimSpace(lines[0]), "NO"):
			return 0, errW1CRC
		case !strings.HasSuffix(strings.TrimSpace(lines[0]), "YES"):
			return 0, fmt.Errorf("w1_slave first line does not end in YES or NO: %.40q", lines[0])
		}
		i := strings.LastIndex(lines[1], "t=")
		if i < 0 {
			return 0, fmt.Errorf("w1_slave second line has no t=: %.40q", lines[1])
		}
		num = strings.TrimSpace(lines[1][i+2:])
	default:
		return 0, fmt.Errorf("unknown w1 file %q", kind)
	}
	milli, err := strconv.Atoi(num)
	if err != nil {
		return 0, fmt.Errorf("not a temperature: %.20q", num)
	}
	switch {
	case milli == 85000:
		return 0, errW1PowerOn
	case milli < -55000 || milli > 125000:
		return 0, fmt.Errorf("%.3f °C is outside the DS18B20's -55..125 °C range: a bad read", float64(milli)/1000)
	}
	return milli, nil
}

// Close does nothing: the kernel owns the bus.
func (s *ds18b20) Close() error { return nil }

var _ Sensor = (*ds18b20)(nil)
