package propbag

import (
	"errors"
	"reflect"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Pair
		err  bool
	}{
		{"empty", "", nil, false},
		{"question mark only", "?", nil, false},
		{"system encoded", "%24.mid=m1&%24.ct=application%2Fjson", []Pair{{"$.mid", "m1"}, {"$.ct", "application/json"}}, false},
		{"system literal", "$.mid=m1", []Pair{{"$.mid", "m1"}}, false},
		{"plus stays plus", "k=a+b%20c", []Pair{{"k", "a+b c"}}, false},
		{"leading question mark", "?$rid=7", []Pair{{"$rid", "7"}}, false},
		{"key without value", "flag&k=", []Pair{{"flag", ""}, {"k", ""}}, false},
		{"value with equals", "k=a=b", []Pair{{"k", "a=b"}}, false},
		{"empty segments skipped", "a=1&&b=2&", []Pair{{"a", "1"}, {"b", "2"}}, false},
		{"lower-case hex", "k=%2f%2F", []Pair{{"k", "//"}}, false},
		{"duplicates kept in order", "a=1&a=2", []Pair{{"a", "1"}, {"a", "2"}}, false},
		{"empty key", "=v", nil, true},
		{"bad escape", "k=%zz", nil, true},
		{"truncated escape", "k=%4", nil, true},
		{"lone percent", "k=%", nil, true},
		{"bad key escape", "%g1=v", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			if tt.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Decode(%q) error = %v; want ErrMalformed", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode(%q) error = %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Decode(%q) = %#v; want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		name  string
		pairs []Pair
		want  string
	}{
		{"nil", nil, ""},
		{"system and app", []Pair{{"$.mid", "id-1"}, {"$.ct", "application/json"}, {"k", "a b+c"}},
			"%24.mid=id-1&%24.ct=application%2Fjson&k=a%20b%2Bc"},
		{"empty value", []Pair{{"k", ""}}, "k="},
		{"unreserved kept", []Pair{{"A-z_0.~", "x"}}, "A-z_0.~=x"},
		{"utf8", []Pair{{"t", "é"}}, "t=%C3%A9"},
		{"separators", []Pair{{"a&b", "c=d"}}, "a%26b=c%3Dd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Encode(tt.pairs); got != tt.want {
				t.Fatalf("Encode(%v) = %q; want %q", tt.pairs, got, tt.want)
			}
		})
	}
}

func TestMapHelpers(t *testing.T) {
	m := map[string]string{"b": "2", "a": "1", "$.mid": "x"}
	if got, want := EncodeMap(m), "%24.mid=x&a=1&b=2"; got != want {
		t.Fatalf("EncodeMap = %q; want %q", got, want)
	}
	back, err := DecodeMap(EncodeMap(m))
	if err != nil || !reflect.DeepEqual(back, m) {
		t.Fatalf("DecodeMap(EncodeMap(m)) = %v, %v; want %v", back, err, m)
	}
	if _, err := DecodeMap("a=1&a=2"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeMap(duplicate) error = %v; want ErrMalformed", err)
	}
	pairs := []Pair{{"$.mid", "m"}, {"k", "v"}}
	app, sys := Split(pairs)
	if !reflect.DeepEqual(app, map[string]string{"k": "v"}) || !reflect.DeepEqual(sys, map[string]string{"$.mid": "m"}) {
		t.Fatalf("Split = %v, %v", app, sys)
	}
	if v, ok := Lookup(pairs, "k"); !ok || v != "v" {
		t.Fatalf("Lookup(k) = %q, %v", v, ok)
	}
	if _, ok := Lookup(pairs, "nope"); ok {
		t.Fatal("Lookup(nope) found a value")
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "%24.mid=1&k=v", "?$rid=1", "a&b=&=c", "%zz", "k=%C3%A9+x", "&&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pairs, err := Decode(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%q) error %v does not wrap ErrMalformed", s, err)
			}
			return
		}
		again, err := Decode(Encode(pairs))
		if err != nil {
			t.Fatalf("Decode(Encode(%v)) error = %v", pairs, err)
		}
		if len(again) != len(pairs) || (len(pairs) > 0 && !reflect.DeepEqual(again, pairs)) {
			t.Fatalf("round trip of %q: got %#v; want %#v", s, again, pairs)
		}
		for _, p := range pairs {
			if u, err := Unescape(Escape(p.Value)); err != nil || u != p.Value {
				t.Fatalf("Unescape(Escape(%q)) = %q, %v", p.Value, u, err)
			}
		}
	})
}
