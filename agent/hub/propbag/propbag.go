// Package propbag owns the IoT Hub MQTT property-bag codec: the
// "k1=v1&k2=v2" strings IoT Hub appends to telemetry topics
// (devices/{id}/messages/events/{bag}), cloud-to-device topics
// (devices/{id}/messages/devicebound/{bag}) and the query part of
// $iothub/... topics.
//
// Encoding follows what Microsoft's SDKs send: every byte of a key or value
// other than A-Z a-z 0-9 - _ . ~ is percent-encoded with upper-case hex, so
// the system property "$.mid" travels as "%24.mid". Decoding splits on '&',
// then on the first '=', then percent-decodes; '+' is NOT turned into a space
// (IoT Hub does not do it either). System properties are the keys that start
// with "$." after decoding.
//
// The package is pure (no I/O) and may be imported by the agent and by the
// emulator alike.
package propbag

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("propbag: malformed property bag")

// SystemPrefix starts the key of every IoT Hub system property ("$.mid",
// "$.cid", "$.ct", "$.ce", "$.to", "$.exp", ...).
const SystemPrefix = "$."

// Pair is one property. A key given without '=' on the wire ("k") decodes
// with an empty Value, like "k=".
type Pair struct {
	Key   string
	Value string
}

// IsSystem reports whether key names a system property (starts with "$.").
func IsSystem(key string) bool { return strings.HasPrefix(key, SystemPrefix) }

const upperHex = "0123456789ABCDEF"

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~'
}

// Escape percent-encodes s: every byte except A-Z a-z 0-9 - _ . ~ becomes
// %XX with upper-case hex.
func Escape(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&15])
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Unescape decodes %XX sequences (either hex case). '+' stays '+'. A '%'
// not followed by two hex digits is an error wrapping ErrMalformed.
func Unescape(s string) (string, error) {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("%w: truncated escape at byte %d", ErrMalformed, i)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("%w: invalid escape at byte %d", ErrMalformed, i)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

// Encode returns the bag for pairs, in order: Escape(key)=Escape(value)
// joined by '&'. A nil or empty slice gives "".
func Encode(pairs []Pair) string {
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(Escape(p.Key))
		b.WriteByte('=')
		b.WriteString(Escape(p.Value))
	}
	return b.String()
}

// EncodeMap encodes m with its keys sorted, so the result is deterministic.
func EncodeMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pairs := make([]Pair, len(keys))
	for i, k := range keys {
		pairs[i] = Pair{Key: k, Value: m[k]}
	}
	return Encode(pairs)
}

// Decode parses a bag. One leading '?' is tolerated, empty segments ("a=1&&b=2",
// a trailing '&') are skipped, a segment without '=' is a key with an empty
// value. An empty key or a bad %-escape is an error wrapping ErrMalformed that
// names the segment by position, never by content.
func Decode(s string) ([]Pair, error) {
	s = strings.TrimPrefix(s, "?")
	if s == "" {
		return nil, nil
	}
	var pairs []Pair
	for i, seg := range strings.Split(s, "&") {
		if seg == "" {
			continue
		}
		k, v, _ := strings.Cut(seg, "=")
		key, err := Unescape(k)
		if err != nil {
			return nil, fmt.Errorf("propbag: key of segment %d: %w", i+1, err)
		}
		if key == "" {
			return nil, fmt.Errorf("%w: segment %d has an empty key", ErrMalformed, i+1)
		}
		val, err := Unescape(v)
		if err != nil {
			return nil, fmt.Errorf("propbag: value of segment %d: %w", i+1, err)
		}
		pairs = append(pairs, Pair{Key: key, Value: val})
	}
	return pairs, nil
}

// DecodeMap decodes s into a map. A key that appears twice is an error
// wrapping ErrMalformed.
func DecodeMap(s string) (map[string]string, error) {
	pairs, err := Decode(s)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(pairs))
	for i, p := range pairs {
		if _, dup := m[p.Key]; dup {
			return nil, fmt.Errorf("%w: property %d repeats an earlier key", ErrMalformed, i+1)
		}
		m[p.Key] = p.Value
	}
	return m, nil
}

// Lookup returns the value of the first pair with key, and whether it exists.
func Lookup(pairs []Pair, key string) (string, bool) {
	for _, p := range pairs {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Split separates system properties (keys starting with "$.") from
// application properties. Later duplicates overwrite earlier ones.
func Split(pairs []Pair) (app, sys map[string]string) {
	app, sys = map[string]string{}, map[string]string{}
	for _, p := range pairs {
		if IsSystem(p.Key) {
			sys[p.Key] = p.Value
		} else {
			app[p.Key] = p.Value
		}
	}
	return app, sys
}
