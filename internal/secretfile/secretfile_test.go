package secretfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const secret = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="

// writeFile creates name in dir with data and exactly mode (umask does not
// apply) and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte, mode fs.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		mode    fs.FileMode
		want    string
		wantErr string // substring; empty means success
		isMode  bool   // error must be a *ModeError
	}{
		{name: "0600 with trailing newline", data: secret + "\n", mode: 0o600, want: secret},
		{name: "0400 without newline", data: secret, mode: 0o400, want: secret},
		{name: "0700 owner only", data: secret + "\n", mode: 0o700, want: secret},
		{name: "CRLF line ending", data: secret + "\r\n", mode: 0o600, want: secret},
		{name: "several trailing newlines", data: secret + "\n\n\n", mode: 0o600, want: secret},
		{name: "inner and leading bytes kept", data: " a b\nc\n", mode: 0o600, want: " a b\nc"},
		{name: "0644 world readable", data: secret, mode: 0o644, wantErr: "has mode 0644; it must not be readable by group or others — run: chmod 600 ", isMode: true},
		{name: "0640 group readable", data: secret, mode: 0o640, wantErr: "has mode 0640;", isMode: true},
		{name: "0604 other readable", data: secret, mode: 0o604, wantErr: "has mode 0604;", isMode: true},
		{name: "0620 group writable", data: secret, mode: 0o620, wantErr: "has mode 0620;", isMode: true},
		{name: "0601 other executable", data: secret, mode: 0o601, wantErr: "has mode 0601;", isMode: true},
		{name: "empty", data: "", mode: 0o600, wantErr: "is empty"},
		{name: "only newlines", data: "\n\r\n", mode: 0o600, wantErr: "is empty"},
		{name: "blank", data: "  \t \n", mode: 0o600, wantErr: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "key", []byte(tt.data), tt.mode)
			got, err := Read(p)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Read(%s) error = %v", tt.name, err)
				}
				if string(got) != tt.want {
					t.Fatalf("Read = %q; want %q", got, tt.want)
				}
				if err := Check(p); err != nil {
					t.Fatalf("Check = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Read = %q, nil; want error containing %q", got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Read error = %q; want it to contain %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "secretfile: ") || !strings.Contains(err.Error(), p) {
				t.Errorf("Read error = %q; want prefix %q and the path", err, "secretfile: ")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Read error %q contains the secret", err)
			}
			var me *ModeError
			if errors.As(err, &me) != tt.isMode {
				t.Errorf("errors.As(*ModeError) = %v; want %v", !tt.isMode, tt.isMode)
			}
			if tt.isMode {
				if me.Path != p || me.Mode != tt.mode {
					t.Errorf("ModeError = %+v; want path %s mode %o", me, p, tt.mode)
				}
				if cerr := Check(p); !errors.As(cerr, &me) {
					t.Errorf("Check = %v; want *ModeError", cerr)
				}
			}
		})
	}
}

func TestModeErrorExactText(t *testing.T) {
	tests := []struct {
		name, path, want string
	}{
		{"plain path", "/etc/fieldgate/device.key",
			"secretfile: key file /etc/fieldgate/device.key has mode 0644; it must not be readable by group or others — run: chmod 600 /etc/fieldgate/device.key"},
		{"path needing quotes", "/tmp/my key's",
			`secretfile: key file /tmp/my key's has mode 0644; it must not be readable by group or others — run: chmod 600 '/tmp/my key'\''s'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (&ModeError{Path: tt.path, Mode: 0o644}).Error(); got != tt.want {
				t.Errorf("Error() = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestReadOtherFailures(t *testing.T) {
	dir := t.TempDir()
	private := writeFile(t, dir, "private", []byte(secret+"\n"), 0o600)
	public := writeFile(t, dir, "public", []byte(secret+"\n"), 0o644)
	linkToPrivate := filepath.Join(dir, "link-private")
	linkToPublic := filepath.Join(dir, "link-public")
	if err := os.Symlink(private, linkToPrivate); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(public, linkToPublic); err != nil {
		t.Fatal(err)
	}
	big := writeFile(t, dir, "big", bytes.Repeat([]byte("A"), MaxSize+1), 0o600)
	atMax := writeFile(t, dir, "at-max", bytes.Repeat([]byte("A"), MaxSize), 0o600)
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path, wantErr string
		wantLen             int
		notExist            bool
	}{
		{name: "symlink judged by its private target", path: linkToPrivate, wantLen: len(secret)},
		{name: "symlink to a public file refused", path: linkToPublic, wantErr: "has mode 0644"},
		{name: "missing file", path: filepath.Join(dir, "nope"), wantErr: "no such file", notExist: true},
		{name: "directory", path: sub, wantErr: "is a directory"},
		{name: "larger than MaxSize", path: big, wantErr: "larger than"},
		{name: "exactly MaxSize", path: atMax, wantLen: MaxSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(tt.path)
			if tt.wantErr == "" {
				if err != nil || len(got) != tt.wantLen {
					t.Fatalf("Read(%s) = %d bytes, %v; want %d bytes, nil", tt.path, len(got), err, tt.wantLen)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Read(%s) error = %v; want it to contain %q", tt.path, err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "secretfile: ") {
				t.Errorf("error %q lacks the component prefix", err)
			}
			if errors.Is(err, fs.ErrNotExist) != tt.notExist {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v; want %v", !tt.notExist, tt.notExist)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{"private file", writeFile(t, dir, "a", []byte("x"), 0o400), ""},
		{"public file", writeFile(t, dir, "b", []byte("x"), 0o444), "has mode 0444"},
		{"missing", filepath.Join(dir, "missing"), "no such file"},
		{"directory", dir, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v; want nil", tt.path, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check(%s) = %v; want error containing %q", tt.path, err, tt.wantErr)
			}
		})
	}
}

// FuzzRead checks that any content either comes back with only its trailing
// CR/LF removed, or is refused with an error that does not echo it.
func FuzzRead(f *testing.F) {
	f.Add([]byte(secret + "\n"))
	f.Add([]byte(""))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte(" \t"))
	f.Add([]byte("key\x00with\xffbytes\r"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxSize {
			return
		}
		p := filepath.Join(dir, "key")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Read(p)
		want := bytes.TrimRight(data, "\r\n")
		if len(bytes.TrimSpace(want)) == 0 {
			if err == nil {
				t.Fatalf("Read(%q) = %q, nil; want an error for blank content", data, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("Read(%q) error = %v", data, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Read(%q) = %q; want %q", data, got, want)
		}
	})
}
