package main

import (
	"strings"
	"testing"
)

func TestDeriveKey(t *testing.T) {
	privateFile := writeKeyFile(t, tkGroupKey+"\n", 0o600)
	groupReadable := writeKeyFile(t, tkGroupKey+"\n", 0o640)
	tests := []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		want     string   // exact stdout
		wantErr  []string // substrings of stderr
	}{
		{name: "published vector, inline key", args: []string{"--group-key", tkGroupKey, "--registration-id", tkRegID}, want: tkDerivedKey + "\n"},
		{name: "published vector, key file", args: []string{"--group-key-file", privateFile, "--registration-id", tkRegID}, want: tkDerivedKey + "\n"},
		{name: "published vector, --group-key -", stdin: tkGroupKey + "\n", args: []string{"--group-key", "-", "--registration-id", tkRegID}, want: tkDerivedKey + "\n"},
		{name: "published vector, --group-key-file -", stdin: tkGroupKey, args: []string{"--group-key-file", "-", "--registration-id", tkRegID}, want: tkDerivedKey + "\n"},
		{name: "unpadded group key", args: []string{"--group-key", strings.TrimRight(tkGroupKey, "="), "--registration-id", tkRegID}, want: tkDerivedKey + "\n"},
		{name: "missing registration id", args: []string{"--group-key", tkGroupKey}, wantCode: exitUsage, wantErr: []string{"--registration-id is required"}},
		{name: "both key flags", args: []string{"--group-key", tkGroupKey, "--group-key-file", privateFile, "--registration-id", "r"}, wantCode: exitUsage, wantErr: []string{"--group-key and --group-key-file are mutually exclusive"}},
		{name: "no key", args: []string{"--registration-id", "r"}, wantCode: exitUsage, wantErr: []string{"one of --group-key or --group-key-file is required"}},
		{name: "positional argument", args: []string{"--group-key", tkGroupKey, "--registration-id", "r", "more"}, wantCode: exitUsage, wantErr: []string{`unexpected argument "more"`}},
		{name: "unknown flag", args: []string{"--key", tkGroupKey}, wantCode: exitUsage, wantErr: []string{"flag provided but not defined: -key"}},
		{name: "bad base64", args: []string{"--group-key", "8isrFI1sGsIlvvFSS*FRiMfCN", "--registration-id", "r"}, wantCode: exitError, wantErr: []string{"group key", "not valid base64"}},
		{name: "group-readable key file", args: []string{"--group-key-file", groupReadable, "--registration-id", "r"}, wantCode: exitError, wantErr: []string{"has mode 0640", "chmod 600 " + groupReadable}},
		{name: "empty stdin", args: []string{"--group-key", "-", "--registration-id", "r"}, wantCode: exitError, wantErr: []string{"standard input was empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execCLI(t, tt.stdin, append([]string{"derive-key"}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Errorf("fieldgate derive-key %q exit = %d; want %d (stderr %q)", tt.args, r.code, tt.wantCode, r.stderr)
			}
			if r.stdout != tt.want {
				t.Errorf("stdout = %q; want %q", r.stdout, tt.want)
			}
			if tt.wantCode == exitOK {
				checkOutput(t, "stderr", r.stderr, "")
				return
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr = %q; want it to contain %q", r.stderr, w)
				}
			}
			for _, secret := range []string{tkGroupKey[:20], "8isrFI1sGsIlvvFSS", tkDerivedKey[:20]} {
				if strings.Contains(r.stderr, secret) {
					t.Errorf("stderr reveals a key: %q", r.stderr)
				}
			}
		})
	}
}
