package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		// want lists (key, line, column, text) for every problem, in order;
		// column 0 means "do not check".
		want []Problem
	}{
		{
			name: "every unknown key with its line, plus validation",
			doc:  "log_formt = \"json\"\n" + minimal + "[hub]\nkeepalive = \"1m\"\n[extra]\nx = 1\n",
			want: []Problem{
				{Key: "log_formt", Line: 1, Column: 1, Fix: `did you mean "log_format"?`},
				{Key: "hub.keepalive", Line: 9, Column: 1, Fix: `did you mean "keep_alive"?`},
				{Key: "extra", Line: 10, Message: "unknown key"},
			},
		},
		{
			name: "unknown key in the second sensor gets its index",
			doc: minimal + "[[sensor]]\nname=\"a\"\nkind=\"simulated\"\nvalues=[\"x\"]\n" +
				"[[sensor]]\nname=\"b\"\nkind=\"simulated\"\nvalues=[\"x\"]\nvaluess = 1\n",
			want: []Problem{{Key: "sensor[1].valuess", Line: 15, Fix: `did you mean "values"?`}},
		},
		{
			name: "syntax error has row and column",
			doc:  "[telemetry]\ninterval = \n",
			want: []Problem{{Line: 2, Column: 12, Message: "unexpected character"}},
		},
		{
			name: "type error names the key and the expected type",
			doc:  minimal + "[telemetry]\nmax_message_bytes = \"4KiB\"\n",
			want: []Problem{{Key: "telemetry.max_message_bytes", Line: 8, Column: 21, Message: "must be an integer, not a TOML string"}},
		},
		{
			name: "single brackets for an array of tables",
			doc:  "sensor = 5\n",
			want: []Problem{{Key: "sensor", Line: 1, Message: "array of tables", Fix: "[[sensor]]"}},
		},
		{
			name: "bare-number durations are all reported, with unknown keys",
			doc:  "[time]\nsync_timeout = 5\nresync = \"1m\"\n[[sensor]]\ninterval = 2.5\n",
			want: []Problem{
				{Key: "time.sync_timeout", Line: 2, Message: "needs a unit", Fix: `"30s"`},
				{Key: "time.resync", Line: 3, Message: "unknown key"},
				{Key: "sensor[0].interval", Line: 5, Message: "needs a unit"},
			},
		},
		{
			name: "duration of the wrong type",
			doc:  "[telemetry]\ninterval = [\"1s\"]\n",
			want: []Problem{{Key: "telemetry.interval", Line: 2, Message: "not a TOML array"}},
		},
		{
			name: "size as a float",
			doc:  "[state]\nspool_max_bytes = 1.5\n",
			want: []Problem{{Key: "state.spool_max_bytes", Line: 2, Message: "must be a size"}},
		},
		{
			name: "invalid duration string has a position",
			doc:  "[hub]\ntoken_ttl = \"an hour\"\n",
			want: []Problem{{Key: "hub.token_ttl", Line: 2, Message: `invalid duration "an hour"`}},
		},
		{
			name: "invalid size string",
			doc:  "[state]\nspool_max_bytes = \"64 megs\"\n",
			want: []Problem{{Key: "state.spool_max_bytes", Line: 2, Message: "invalid size"}},
		},
		{
			name: "unknown key below a dotted unknown table",
			doc:  minimal + "foo.bar = 1\n",
			want: []Problem{{Key: "provisioning.attestation.foo", Line: 7, Fix: "key_file"}},
		},
		{
			name: "wrong case key",
			doc:  "Log_Level = \"info\"\n" + minimal,
			want: []Problem{{Key: "Log_Level", Line: 1, Fix: `"log_level"`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), "f.toml")
			if err == nil {
				t.Fatal("no error")
			}
			got := problemsOf(t, err)
			// Only the wanted problems are compared; a test that also
			// triggers validation problems lists the ones it cares about.
			i := 0
			for _, p := range got {
				if i < len(tt.want) && matches(p, tt.want[i]) {
					i++
				}
			}
			if i != len(tt.want) {
				t.Fatalf("problem %d (%+v) not found in order in:\n%v", i, tt.want[i], err)
			}
		})
	}
}

func matches(p, w Problem) bool {
	return (w.Key == "" || p.Key == w.Key) && p.Line == w.Line &&
		(w.Column == 0 || p.Column == w.Column) &&
		strings.Contains(p.Message, w.Message) && strings.Contains(p.Fix, w.Fix)
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "config.toml", Problems: []Problem{
		{Key: "telemetry.interval", Value: `"0s"`, Message: "must be at least 1s", Fix: `e.g. "30s"`, Line: 12},
		{Key: "log_formt", Message: "unknown key", Line: 2, Column: 1},
		{Key: "provisioning.id_scope", Message: "is required"},
		{Message: "something without a key"},
	}}
	want := `config.toml:12: telemetry.interval = "0s": must be at least 1s (e.g. "30s")
config.toml:2:1: log_formt: unknown key
config.toml: provisioning.id_scope: is required
config.toml: something without a key`
	if got := e.Error(); got != want {
		t.Fatalf("Error() =\n%s\nwant\n%s", got, want)
	}
	if got := e.Problems[0].String(); got != `12: telemetry.interval = "0s": must be at least 1s (e.g. "30s")` {
		t.Fatalf("Problem.String() = %q", got)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", maxFileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.toml"), "does not exist — pass --config FILE"},
		{"directory", dir, "is a directory"},
		{"too large", big, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("Load(%s) error = %v, want containing %q", tt.path, err, tt.want)
			}
		})
	}
	t.Run("problems name the file", func(t *testing.T) {
		p := filepath.Join(dir, "bad.toml")
		if err := os.WriteFile(p, []byte("log_level = \"loud\"\n"+minimal), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		if err == nil || !strings.HasPrefix(err.Error(), p+":1: log_level = \"loud\": ") {
			t.Fatalf("Load error = %v", err)
		}
	})
}

func TestIndexKeyPaths(t *testing.T) {
	doc := `a = 1
[t]
b.c = "x"
[[s]]
n = 1
[[s]]
n = 2
[s.sub]
m = true
[p]
inline = { k = 1, "quoted key" = 2 }
`
	idx := buildIndex([]byte(doc))
	want := map[string]int{
		"a": 1, "t": 2, "t.b": 3, "t.b.c": 3, "s[0]": 4, "s[0].n": 5, "s[1]": 6, "s[1].n": 7,
		"s[1].sub": 8, "s[1].sub.m": 9, "p.inline": 11, "p.inline.k": 11, `p.inline."quoted key"`: 11,
	}
	for k, line := range want {
		t.Run(k, func(t *testing.T) {
			if got := idx.lines[k]; got != line {
				t.Fatalf("line of %s = %d, want %d (index %v)", k, got, line, idx.lines)
			}
		})
	}
	if r, _ := idx.raw("t.b.c"); r != `"x"` {
		t.Fatalf("raw(t.b.c) = %q", r)
	}
	if got := idx.line("s[1].n[3]"); got != 7 {
		t.Fatalf("line of an element = %d, want 7", got)
	}
	if got := idx.line("s[1].missing"); got != 6 {
		t.Fatalf("line of a missing key = %d, want its table's 6", got)
	}
}
