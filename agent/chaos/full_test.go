//go:build chaos

package chaos_test

// fullSuite: `make chaos` (-tags chaos) runs more rounds of every scenario.
const fullSuite = true
