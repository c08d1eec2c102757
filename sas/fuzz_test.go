package sas

import (
	"encoding/base64"
	"testing"
	"time"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// FuzzParse: Parse never panics, and whatever it accepts re-encodes to a token
// that parses to the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"SharedAccessSignature sr=test.azure-devices.net&sig=uux4PSAK1s9efNcBHin0pm7O5oENedTWkhqGp8JAyFY%3D&se=1546308061&skn=owner",
		"SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&skn=encode%28%27Me%27%29&se=12345",
		"SharedAccessSignature sr=a&sig=AAAA&se=1&rid=x",
		"SharedAccessSignature ",
		"SharedAccessSignature sr=%zz&sig=&se=",
	} {
		f.Add(s)
	}
	key := NewKey([]byte("k"))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", tok.String(), err)
		}
		if again.Resource != tok.Resource || again.Expiry != tok.Expiry || again.KeyName != tok.KeyName || again.RepositoryID != tok.RepositoryID {
			t.Fatalf("round trip changed the token: %+v vs %+v", tok, again)
		}
		_ = Verify(tok, key, "h/devices/d", time.Unix(0, 0), 0)
	})
}

// FuzzParseKey: the key decoder never panics and never accepts what base64
// would not give back.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"c2VjcmV0", "key", "", "====", "a", groupKey, "ab\ncd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		if len(k.secret) == 0 {
			t.Fatal("accepted an empty key")
		}
	})
}

// FuzzDecodedResource: percent-decoding of sr never panics, and Encode output
// always decodes back to its input.
func FuzzDecodedResource(f *testing.F) {
	f.Add("h/devices/d")
	f.Add("%%")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Token{Resource: Encode(s)}.DecodedResource()
		if err != nil || got != s {
			t.Fatalf("DecodedResource(Encode(%q)) = %q, %v", s, got, err)
		}
		_, _ = Token{Resource: s}.DecodedResource()
	})
}
