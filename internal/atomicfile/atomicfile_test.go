package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		perm os.FileMode
		data string
	}{
		{"key file", 0o600, "secret\n"},
		{"replace with public file", 0o644, "public"},
		{"empty", 0o600, ""},
	}
	p := filepath.Join(dir, "f")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Write(p, []byte(tt.data), tt.perm); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(p)
			fi, _ := os.Stat(p)
			if err != nil || string(b) != tt.data || fi.Mode().Perm() != tt.perm {
				t.Fatalf("file = %q %v %v", b, fi.Mode(), err)
			}
		})
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if err := Write(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("write into a missing directory: want error")
	}
}
