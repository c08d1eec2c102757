package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/hw"
)

var sensorsCmd = &command{
	name:    "sensors",
	summary: "read every configured sensor once; scan an I2C bus; record a sensor's bus traffic",
	usage: `fieldgate sensors [--config FILE] [--json]
fieldgate sensors scan --bus N
fieldgate sensors record [--config FILE] --sensor NAME

sensors reads each configured sensor once and prints a table (or JSON).
scan lists the I2C addresses that answer on a bus, like i2cdetect.
record reads one I2C sensor once and prints its bus traffic as Go source for
periph's i2ctest.Playback, to turn a real board into a test fixture.`,
}

func init() { sensorsCmd.run = runSensors; register(sensorsCmd) }

// sensorsEnv lets tests replace hardware access.
var sensorsEnv = func(log *slog.Logger) hw.Env { return hw.Env{Logger: log} }

func runSensors(ctx context.Context, e *env, args []string) int {
	if len(args) > 0 && (args[0] == "scan" || args[0] == "record") {
		if args[0] == "scan" {
			return runSensorsScan(ctx, e, args[1:])
		}
		return runSensorsRecord(ctx, e, args[1:])
	}
	fs := sensorsCmd.flags()
	path := fs.String("config", config.DefaultPath, "config `FILE`")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, done := sensorsCmd.parse(e, fs, args); done {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return sensorsCmd.fail(e, fs, err)
	}
	log := newLogger(e.Stderr, "warn", "text")
	type row struct {
		Name   string    `json:"name"`
		Kind   string    `json:"kind"`
		Values hw.Values `json:"values,omitempty"`
		Error  string    `json:"error,omitempty"`
	}
	var rows []row
	failed := 0
	for _, sc := range cfg.Sensors {
		r := row{Name: sc.Name, Kind: sc.Kind}
		s, err := hw.OpenSensor(sc, sensorsEnv(log))
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r.Values, err = s.Read(rctx)
			cancel()
			_ = s.Close()
		}
		if err != nil {
			r.Error = err.Error()
			failed++
		}
		rows = append(rows, r)
	}
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rows)
	} else {
		tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SENSOR\tKIND\tREADING")
		for _, r := range rows {
			reading := r.Error
			if reading == "" {
				keys := make([]string, 0, len(r.Values))
				for k := range r.Values {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				var parts []string
				for _, k := range keys {
					parts = append(parts, fmt.Sprintf("%s=%.4g", k, r.Values[k]))
				}
				reading = strings.Join(parts, " ")
			} else {
				reading = "ERROR " + reading
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Kind, reading)
		}
		tw.Flush()
	}
	if failed > 0 {
		return exitError
	}
	return exitOK
}

func runSensorsScan(_ context.Context, e *env, args []string) int {
	fs := sensorsCmd.flags()
	bus := fs.String("bus", "", "I2C bus `N` or /dev/i2c-N")
	if code, done := sensorsCmd.parse(e, fs, args); done {
		return code
	}
	if *bus == "" {
		return sensorsCmd.usageError(e, fs, "scan needs --bus, e.g. --bus 1")
	}
	b, err := sensorsEnvI2C(e, *bus)
	if err != nil {
		return sensorsCmd.fail(e, fs, err)
	}
	defer b.Close()
	found := hw.Scan(b)
	fmt.Fprint(e.Stdout, hw.FormatScan(found))
	fmt.Fprintf(e.Stdout, "%d device(s) answered on bus %s\n", len(found), *bus)
	for _, a := range found {
		kinds := hw.KindsAt(a)
		if len(kinds) == 0 {
			kinds = []string{"unknown chip: try kind = \"i2c_register\" with its datasheet"}
		}
		fmt.Fprintf(e.Stdout, "  0x%02x  %s\n", a, strings.Join(kinds, ", "))
	}
	return exitOK
}

func sensorsEnvI2C(e *env, bus string) (i2c.BusCloser, error) {
	env := sensorsEnv(newLogger(e.Stderr, "warn", "text"))
	if env.I2C != nil {
		return env.I2C(bus)
	}
	return hw.OpenI2C(bus, env.Logger)
}

func runSensorsRecord(ctx context.Context, e *env, args []string) int {
	fs := sensorsCmd.flags()
	path := fs.String("config", config.DefaultPath, "config `FILE`")
	name := fs.String("sensor", "", "the I2C sensor `NAME` to record")
	if code, done := sensorsCmd.parse(e, fs, args); done {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return sensorsCmd.fail(e, fs, err)
	}
	sc, ok := cfg.Sensor(*name)
	if !ok || sc.Bus == "" {
		return sensorsCmd.usageError(e, fs, "--sensor must name an I2C sensor of the config (got %q)", *name)
	}
	raw, err := sensorsEnvI2C(e, sc.Bus)
	if err != nil {
		return sensorsCmd.fail(e, fs, err)
	}
	rec := &hw.RecordingBus{Bus: raw}
	env := sensorsEnv(newLogger(e.Stderr, "warn", "text"))
	env.I2C = func(string) (i2c.BusCloser, error) { return rec, nil }
	s, err := hw.OpenSensor(sc, env)
	if err == nil {
		var v hw.Values
		v, err = s.Read(ctx)
		_ = s.Close()
		fmt.Fprintf(e.Stdout, "// %s (%s) read %v\n", sc.Name, sc.Kind, v)
	}
	fmt.Fprint(e.Stdout, hw.GoSource(rec.Ops()))
	if err != nil {
		return sensorsCmd.fail(e, fs, err)
	}
	return exitOK
}
