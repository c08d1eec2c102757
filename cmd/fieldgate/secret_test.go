package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadSecret(t *testing.T) {
	file := writeKeyFile(t, "from-file\n", 0o600)
	public := writeKeyFile(t, "from-file\n", 0o604)
	tests := []struct {
		name             string
		stdin            io.Reader
		flagVal, fileVal string
		want             string
		wantErr          string
		wantUsage        bool
	}{
		{name: "inline", flagVal: "inline-value", want: "inline-value"},
		{name: "file", fileVal: file, want: "from-file"},
		{name: "stdin via flag", stdin: strings.NewReader("piped\n"), flagVal: "-", want: "piped"},
		{name: "stdin via file flag", stdin: strings.NewReader("piped\r\n\n"), fileVal: "-", want: "piped"},
		{name: "stdin keeps inner text", stdin: strings.NewReader(" a b \n"), flagVal: "-", want: " a b "},
		{name: "both", flagVal: "x", fileVal: file, wantErr: "--secret and --secret-file are mutually exclusive", wantUsage: true},
		{name: "neither", wantErr: "one of --secret or --secret-file is required", wantUsage: true},
		{name: "public file", fileVal: public, wantErr: "--secret-file: secretfile: key file " + public + " has mode 0604"},
		{name: "blank stdin", stdin: strings.NewReader(" \n"), flagVal: "-", wantErr: "--secret -: standard input was empty"},
		{name: "no stdin", flagVal: "-", wantErr: "--secret -: no standard input"},
		{name: "failing stdin", stdin: iotest.ErrReader(errors.New("boom")), fileVal: "-", wantErr: "read standard input: boom"},
		{name: "oversized stdin", stdin: strings.NewReader(strings.Repeat("A", 64<<10+1)), fileVal: "-", wantErr: "larger than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readSecret(&env{Stdin: tt.stdin}, tt.flagVal, tt.fileVal, "secret")
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("readSecret = %q, %v; want %q, nil", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("readSecret error = %v; want it to contain %q", err, tt.wantErr)
			}
			var ue *usageErr
			if errors.As(err, &ue) != tt.wantUsage {
				t.Errorf("usage error = %v; want %v", !tt.wantUsage, tt.wantUsage)
			}
			if strings.Contains(err.Error(), "from-file") || strings.Contains(err.Error(), "inline-value") {
				t.Errorf("error reveals the secret: %v", err)
			}
		})
	}
}
