package spool

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

// childCmd re-executes this test binary running only test, with env added.
// Under qemu-user (no binfmt_misc) the direct exec fails with ENOEXEC, so
// the same binary is started through qemu-<arch>-static.
func childCmd(t *testing.T, test string, env ...string) *exec.Cmd {
	t.Helper()
	args := []string{"-test.run=^" + test + "$", "-test.count=1", "-test.timeout=60s"}
	mk := func(wrap bool) *exec.Cmd {
		var cmd *exec.Cmd
		if wrap {
			q := map[string]string{"arm64": "qemu-aarch64-static", "arm": "qemu-arm-static",
				"riscv64": "qemu-riscv64-static", "386": "qemu-i386-static"}[runtime.GOARCH]
			cmd = exec.Command(q, append([]string{os.Args[0]}, args...)...)
		} else {
			cmd = exec.Command(os.Args[0], args...)
		}
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = os.Stderr
		return cmd
	}
	needQemu.once.Do(func() {
		probe := mk(false)
		probe.Args = append(probe.Args[:1], "-test.run=^$") // runs nothing
		probe.Stdout, probe.Stderr = nil, nil
		needQemu.yes = errors.Is(probe.Run(), syscall.ENOEXEC)
	})
	return mk(needQemu.yes)
}

// needQemu caches whether the test binary can only run through qemu-user.
var needQemu struct {
	once sync.Once
	yes  bool
}
