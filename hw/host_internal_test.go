package hw

import (
	"log/slog"
	"strings"
	"testing"
)

func TestUnsupportedPlatform(t *testing.T) {
	defer func(g string) { hostGOOS = g }(hostGOOS)
	hostGOOS = "darwin"
	log := slog.New(slog.DiscardHandler)
	_, i2cErr := openI2C(log)("1")
	_, gpioErr := openGPIO(log)("GPIO17")
	for name, err := range map[string]error{"i2c": i2cErr, "gpio": gpioErr} {
		if err == nil || !strings.Contains(err.Error(), "not supported on this platform (darwin)") {
			t.Errorf("%s: err = %v; want the unsupported-platform error", name, err)
		}
	}
}
