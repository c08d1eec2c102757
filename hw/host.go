package hw

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	// The Linux GPIO character device and sysfs I2C drivers cover Pi 3, 4
	// and 5 (and other boards) alike; leaving out the memory-mapped SoC
	// drivers of the host umbrella saves ~400 KiB on arm64 and avoids the
	// /dev/mem fallback that fails on a Pi 5 as non-root.
	_ "periph.io/x/host/v3/gpioioctl"
	_ "periph.io/x/host/v3/sysfs"

	"github.com/fieldgate/fieldgate/agent/config"
)

// hostOnce initialises periph's host drivers once per process. This file is
// the only place fieldgate calls periph host.
var (
	hostOnce sync.Once
	hostErr  error
)

// hostGOOS is the platform the host drivers run on (a variable for tests).
var hostGOOS = runtime.GOOS

func initHost(log *slog.Logger) error {
	if hostGOOS != "linux" {
		return fmt.Errorf("hw: I2C and GPIO are not supported on this platform (%s): fieldgate reads hardware through Linux's /dev/i2c-* and /dev/gpiochip*; use kind = \"simulated\" or \"system\" here", hostGOOS)
	}
	hostOnce.Do(func() {
		st, err := driverreg.Init()
		if err != nil {
			hostErr = fmt.Errorf("hw: periph host init: %w", err)
			return
		}
		// host.Init returns nil even when drivers failed: report them.
		names := func(ds []string) string { return strings.Join(ds, ",") }
		var loaded, skipped, failed []string
		for _, d := range st.Loaded {
			loaded = append(loaded, d.String())
		}
		for _, d := range st.Skipped {
			skipped = append(skipped, d.D.String())
		}
		for _, d := range st.Failed {
			failed = append(failed, d.D.String()+": "+d.Err.Error())
		}
		log.Info("periph host drivers", "loaded", names(loaded), "skipped", len(skipped), "failed", names(failed))
	})
	return hostErr
}

func openI2C(log *slog.Logger) func(string) (i2c.BusCloser, error) {
	return func(bus string) (i2c.BusCloser, error) {
		if err := initHost(log); err != nil {
			return nil, err
		}
		dev := bus
		if !strings.HasPrefix(dev, "/dev/") {
			dev = "/dev/i2c-" + bus
		}
		b, err := i2creg.Open(dev)
		if err != nil {
			return nil, i2cOpenError(dev, bus, err)
		}
		return b, nil
	}
}

// i2cOpenError explains why a bus cannot be opened.
func i2cOpenError(dev, bus string, err error) error {
	if _, serr := os.Stat(dev); errors.Is(serr, os.ErrNotExist) {
		return fmt.Errorf("hw: %s does not exist — I2C not enabled? run raspi-config (Interface Options → I2C) or add dtparam=i2c_arm=on, then reboot: %w", dev, err)
	}
	if f, oerr := os.OpenFile(dev, os.O_RDWR, 0); errors.Is(oerr, os.ErrPermission) {
		return fmt.Errorf("hw: permission denied on %s — add the service user to group i2c (usermod -aG i2c fieldgate): %w", dev, err)
	} else if oerr == nil {
		f.Close()
	}
	return fmt.Errorf("hw: opening I2C bus %s: %w", bus, err)
}

func openGPIO(log *slog.Logger) func(string) (gpio.PinIO, error) {
	return func(name string) (gpio.PinIO, error) {
		if err := initHost(log); err != nil {
			return nil, err
		}
		p := gpioreg.ByName(name)
		if p == nil {
			return nil, fmt.Errorf("hw: no GPIO line named %q — names are the kernel's line names, e.g. GPIO17 (see gpioinfo); is the service user in group gpio?", name)
		}
		return p, nil
	}
}

// i2cError adds the fix for a failed transfer with a chip.
func i2cError(kind, bus string, addr int, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "remote I/O") || strings.Contains(msg, "no such device") || strings.Contains(msg, "NACK") ||
		strings.Contains(msg, "no such device or address") || strings.Contains(msg, "unexpected chip id"):
		return fmt.Errorf("hw: %s: no device at 0x%02x on /dev/i2c-%s — check wiring or run `fieldgate sensors scan --bus %s`: %w",
			kind, addr, strings.TrimPrefix(bus, "/dev/i2c-"), strings.TrimPrefix(bus, "/dev/i2c-"), err)
	case errors.Is(err, os.ErrPermission) || strings.Contains(msg, "permission denied"):
		return fmt.Errorf("hw: %s: permission denied on I2C bus %s — add the service user to group i2c: %w", kind, bus, err)
	}
	return fmt.Errorf("hw: %s at 0x%02x on bus %s: %w", kind, addr, bus, err)
}

// chipAddress returns the configured address of a chip, or def, checked
// against the range the chip's address pins allow.
func chipAddress(c config.Sensor, def, lo, hi int, pins string) (int, error) {
	addr := c.Address
	if addr == 0 {
		addr = def
	}
	if addr < lo || addr > hi {
		return 0, fmt.Errorf("hw: %s %s: address 0x%02x is not one the chip answers at (0x%02x..0x%02x, set by %s)", c.Kind, c.Name, addr, lo, hi, pins)
	}
	return addr, nil
}
