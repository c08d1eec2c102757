//go:build !unix

package hw

// diskFreePct is not measured on this platform.
func diskFreePct(string) (float64, bool) { return 0, false }
