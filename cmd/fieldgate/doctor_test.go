package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDoctorExitCodeIsFailures(t *testing.T) {
	var out, errb bytes.Buffer
	e := &env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, now: time.Now}
	code := runMain(context.Background(), []string{"doctor", "--json", "--config", filepath.Join(t.TempDir(), "missing.toml")}, e)
	var rs []struct{ Name, Status, Detail, Fix string }
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if code != 1 || len(rs) != 1 || rs[0].Name != "config" || rs[0].Status != "fail" || !strings.Contains(rs[0].Fix, "fieldgate check") {
		t.Errorf("doctor = %d %+v", code, rs)
	}
}
