package hubtest

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzTwinPatch merges arbitrary patches: no panic, errors are
// ErrInvalidArgument/ErrTooLarge, the result is valid JSON, and merging the
// same patch again changes nothing (patches are idempotent).
func FuzzTwinPatch(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":{"b":null,"c":[1,{"d":2}]}}`, `{"$version":3,"x":null}`,
		`{"a.b":1}`, `[1]`, `{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":1}}}}}}}}}}}`, `{"n":1e999}`} {
		f.Add(`{"a":{"b":1},"c":"x"}`, s)
	}
	f.Fuzz(func(t *testing.T, base, patch string) {
		section, err := decodePatch([]byte(base))
		if err != nil {
			return
		}
		p, err := decodePatch([]byte(patch))
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("decodePatch error %v is not ErrInvalidArgument", err)
			}
			return
		}
		once, err := applyPatch(section, p)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("applyPatch error %v", err)
			}
			return
		}
		b1, err := json.Marshal(once)
		if err != nil || !json.Valid(b1) {
			t.Fatalf("merged section does not encode: %v", err)
		}
		twice, err := applyPatch(once, p)
		if err != nil {
			t.Fatalf("second merge failed: %v", err)
		}
		if b2, _ := json.Marshal(twice); string(b1) != string(b2) {
			t.Fatalf("patch not idempotent: %s then %s", b1, b2)
		}
	})
}
