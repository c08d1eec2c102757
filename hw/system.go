package hw

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fieldgate/fieldgate/agent/config"
)

func init() {
	RegisterSensor("system", func(c config.Sensor, env Env) (Sensor, error) { return newSystem(c, env), nil })
}

// system reports gateway health from /proc and /sys: soc_temperature_c,
// load_1m, mem_available_pct, disk_free_pct (of the state directory's file
// system) and uptime_s. Values a board does not provide are left out.
type system struct {
	name string
	env  Env
}

func newSystem(c config.Sensor, env Env) *system {
	return &system{name: c.Name, env: env.withDefaults()}
}

func (s *system) Name() string { return s.name }
func (s *system) Kind() string { return "system" }

func (s *system) read(p string) (string, error) {
	b, err := os.ReadFile(filepath.Join(s.env.Root, p))
	return strings.TrimSpace(string(b)), err
}

// Read collects what the board offers; it fails only when nothing is readable.
func (s *system) Read(ctx context.Context) (Values, error) {
	v := Values{}
	if t, err := s.read("/sys/class/thermal/thermal_zone0/temp"); err == nil {
		if mc, err := strconv.ParseFloat(t, 64); err == nil {
			v["soc_temperature_c"] = mc / 1000
		}
	}
	if l, err := s.read("/proc/loadavg"); err == nil {
		if f := strings.Fields(l); len(f) > 0 {
			if x, err := strconv.ParseFloat(f[0], 64); err == nil {
				v["load_1m"] = x
			}
		}
	}
	if m, err := s.read("/proc/meminfo"); err == nil {
		kv := map[string]float64{}
		for _, line := range strings.Split(m, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				x, _ := strconv.ParseFloat(f[1], 64)
				kv[strings.TrimSuffix(f[0], ":")] = x
			}
		}
		if kv["MemTotal"] > 0 {
			v["mem_available_pct"] = 100 * kv["MemAvailable"] / kv["MemTotal"]
		}
	}
	if u, err := s.read("/proc/uptime"); err == nil {
		if f := strings.Fields(u); len(f) > 0 {
			if x, err := strconv.ParseFloat(f[0], 64); err == nil {
				v["uptime_s"] = x
			}
		}
	}
	dir := s.env.StateDir
	if dir == "" {
		dir = s.env.Root
	}
	if pct, ok := diskFreePct(dir); ok {
		v["disk_free_pct"] = pct
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("hw: system %s: nothing readable under %s/proc or /sys", s.name, strings.TrimSuffix(s.env.Root, "/"))
	}
	return v, ctx.Err()
}

func (s *system) Close() error { return nil }

var _ Sensor = (*system)(nil)
