//go:build !chaos

package chaos_test

// fullSuite is false in the default test run: one short round per scenario.
const fullSuite = false
