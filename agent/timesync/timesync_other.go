//go:build !linux

package timesync

import (
	"errors"
	"time"
)

// kernelClockSynced: the kernel clock state is only read on linux; elsewhere
// the kernel is never trusted.
func kernelClockSynced() (bool, error) { return false, nil }

// setSystemClock is only supported on linux.
func setSystemClock(time.Time) error {
	return errors.New("timesync: stepping the system clock is only supported on linux; set [time] step_system_clock = false")
}
