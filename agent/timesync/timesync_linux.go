//go:build linux

package timesync

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// kernelClockSynced reads the kernel clock state with a read-only adjtimex
// (modes 0, no privilege needed).
func kernelClockSynced() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return false, fmt.Errorf("timesync: adjtimex: %w", err)
	}
	return kernelStateSynced(state, int64(tx.Status), int64(tx.Maxerror)), nil
}

// setSystemClock steps CLOCK_REALTIME to t.
func setSystemClock(t time.Time) error {
	ts, err := unix.TimeToTimespec(t)
	if err != nil {
		return fmt.Errorf("timesync: step system clock to %v: %w", t, err)
	}
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("timesync: step system clock: %w; grant CAP_SYS_TIME (AmbientCapabilities=CAP_SYS_TIME in the unit) or set [time] step_system_clock = false", err)
		}
		return fmt.Errorf("timesync: step system clock: %w", err)
	}
	return nil
}
