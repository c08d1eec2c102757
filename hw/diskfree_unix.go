//go:build unix

package hw

import "golang.org/x/sys/unix"

// diskFreePct is the share of dir's file system available to unprivileged
// users.
func diskFreePct(dir string) (float64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Blocks == 0 {
		return 0, false
	}
	return 100 * float64(st.Bavail) / float64(st.Blocks), true
}
