package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// maxFileSize bounds the configuration file; a real one is a few KiB.
const maxFileSize = 1 << 20

// Load reads, decodes, defaults and validates the configuration file at path.
// Every problem found is returned at once as a *Error. Relative file paths in
// the file (state.dir, hub.ca_file, key files) are resolved against the
// file's directory.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config: %s does not exist — pass --config FILE or copy configs/fieldgate.toml to %s", path, DefaultPath)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("config: %s is a directory, not a configuration file", path)
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	if n > maxFileSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes; is it the right file?", path, maxFileSize)
	}
	return Parse(buf.Bytes(), path)
}

// Parse decodes data (named path in messages; path may be ""), applies
// defaults, resolves relative file paths against path's directory and
// validates. Decoding is strict: unknown keys are errors. All problems are
// returned together as a *Error.
func Parse(data []byte, path string) (*Config, error) {
	name := path
	if name == "" {
		name = "config"
	}
	idx := buildIndex(data)

	if perr := idx.typeProblems(); len(perr) > 0 {
		// The decoder would stop at the first of these without a position;
		// report them with every unknown key instead.
		ps := &problems{src: idx, list: append(perr, idx.unknownKeys()...)}
		return nil, ps.err(name)
	}

	// Unknown keys are found on the index: exactly (go-toml matches keys
	// case-insensitively) and cheaply (go-toml's strict report is quadratic
	// in the number of unknown keys). go-toml's strict mode stays on as a
	// safety net when the index found none.
	unknown := idx.unknownKeys()
	c := &Config{}
	dec := toml.NewDecoder(bytes.NewReader(data))
	if len(unknown) == 0 {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(c); err != nil {
		var sm *toml.StrictMissingError
		if !errors.As(err, &sm) {
			return nil, decodeError(name, err, idx)
		}
		// Unknown keys do not stop decoding: report them together with
		// every validation problem.
		unknown = decodeError(name, err, idx).(*Error).Problems
	}
	c.src = idx
	c.Path = path
	c.ApplyDefaults()
	if path != "" {
		dir, err := filepath.Abs(filepath.Dir(path))
		if err != nil {
			dir = filepath.Dir(path)
		}
		c.resolvePaths(dir)
	}
	ps := &problems{src: idx, list: unknown}
	c.validateInto(ps)
	if err := ps.err(name); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks the whole configuration and returns every problem at once
// as a *Error, or nil. It does not touch the file system or the network.
// Call it after ApplyDefaults when the Config was built in code.
func (c *Config) Validate() error {
	name := c.Path
	if name == "" {
		name = "config"
	}
	ps := &problems{src: c.src}
	c.validateInto(ps)
	return ps.err(name)
}

// decodeError converts a go-toml error into a *Error with line numbers.
func decodeError(name string, err error, idx *sourceIndex) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		e := &Error{File: name}
		for i := range sm.Errors {
			de := &sm.Errors[i]
			row, col := de.Position()
			key := strings.Join(de.Key(), ".")
			full := idx.resolveAt(row, de.Key())
			p := Problem{Key: full, Line: row, Column: col}
			p.Message = "unknown key"
			p.Fix = unknownFix(full)
			if p.Key == "" {
				p.Key = key
			}
			e.Problems = append(e.Problems, p)
		}
		return e
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		key := strings.Join(de.Key(), ".")
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		fix := ""
		if key != "" {
			if m, f, ok := typeMismatch(msg, key); ok {
				msg, fix = m, f
			}
			key = idx.resolveAt(row, de.Key())
		}
		return &Error{File: name, Problems: []Problem{{Key: key, Line: row, Column: col, Message: msg, Fix: fix}}}
	}
	// Errors from TextUnmarshalers on non-string values carry no position;
	// typeProblems catches the known ones first, this is the fallback.
	return &Error{File: name, Problems: []Problem{{Message: err.Error()}}}
}

// typeMismatch rewrites go-toml's "cannot decode TOML integer into struct
// field config.Config.LogLevel of type string" in the file's terms.
func typeMismatch(msg, key string) (string, string, bool) {
	rest, ok := strings.CutPrefix(msg, "cannot decode TOML ")
	if !ok {
		return "", "", false
	}
	got, _, ok := strings.Cut(rest, " into ")
	if !ok {
		return "", "", false
	}
	t := fieldType(key)
	if t == nil {
		return "", "", false
	}
	var want, fix string
	switch {
	case t == byteSizeType:
		want, fix = "a size", `bytes as a number, or a string such as "64MiB"`
	case t == durationType:
		want, fix = "a duration", `a string such as "30s"`
	case t.Kind() == reflect.String:
		want, fix = "a string", "put the value in double quotes"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		want, fix = "an integer", "write the number without quotes"
	case t.Kind() == reflect.Float64:
		want, fix = "a number", "write the number without quotes"
	case t.Kind() == reflect.Bool:
		want, fix = "a boolean", "write true or false without quotes"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		want, fix = "an array of tables", fmt.Sprintf("write one [[%s]] table per entry", key)
	case t.Kind() == reflect.Slice:
		want, fix = "an array", `e.g. ["a", "b"]`
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		want, fix = "a table", fmt.Sprintf("write it as a [%s] section or an inline table { ... }", key)
	default:
		return "", "", false
	}
	return fmt.Sprintf("must be %s, not a TOML %s", want, got), fix, true
}

// sourceIndex maps every key path of a document ("telemetry.interval",
// "sensor[0].name") to its line and value kind, so problems found after
// decoding can point at the source.
type sourceIndex struct {
	lines map[string]int
	cols  map[string]int
	kinds map[string]unstable.Kind
	// raws holds the source text of scalar values, to quote in problems.
	raws map[string]string
	// order keeps the key paths in document order.
	order []string
	// byLine maps "line\x00plain key" (indices stripped) to the key path.
	byLine map[string]string
	// newlines holds the offsets of '\n' in the document.
	newlines []int
}

func (s *sourceIndex) has(key string) bool {
	if s == nil {
		return false
	}
	_, ok := s.lines[key]
	return ok
}

// line returns the line of key, else of its closest present parent, else 0.
// An element index ("time.ntp_servers[1]") points at its array's line.
func (s *sourceIndex) line(key string) int {
	if s == nil {
		return 0
	}
	for k := key; k != ""; k, _ = splitKey(k) {
		if l, ok := s.lines[k]; ok {
			return l
		}
		if i := strings.LastIndexByte(k, '['); i > 0 && strings.HasSuffix(k, "]") {
			if l, ok := s.lines[k[:i]]; ok {
				return l
			}
		}
	}
	return 0
}

// raw returns the source text of key's scalar value.
func (s *sourceIndex) raw(key string) (string, bool) {
	if s == nil {
		return "", false
	}
	r, ok := s.raws[key]
	return r, ok
}

// unknownKeys reports keys that are not part of the schema. go-toml's strict
// mode does the same during decoding; this is used when decoding cannot run.
func (s *sourceIndex) unknownKeys() []Problem {
	var out []Problem
	for _, k := range s.order {
		plain := stripIndices(k)
		if fieldType(plain) != nil || insideFreeForm(plain) {
			continue
		}
		parent, _ := splitKey(k)
		if parent != "" && fieldType(stripIndices(parent)) == nil {
			continue // reported at the parent
		}
		p := Problem{Key: k, Line: s.lines[k], Column: s.cols[k], Message: "unknown key"}
		p.Fix = unknownFix(k)
		out = append(out, p)
	}
	return out
}

// insideFreeForm reports whether key lies below a map-typed key (payload).
func insideFreeForm(key string) bool {
	for k, _ := splitKey(key); k != ""; k, _ = splitKey(k) {
		if t := fieldType(k); t != nil && t.Kind() == reflect.Map {
			return true
		}
	}
	return false
}

// unknownFix suggests the closest key of the deepest known table above full.
func unknownFix(full string) string {
	parent, last := splitKey(full)
	for parent != "" && fieldType(stripIndices(parent)) == nil {
		parent, last = splitKey(parent)
	}
	known := knownKeys(parent)
	if len(known) == 0 {
		return ""
	}
	if s := closest(last, known); s != "" {
		return fmt.Sprintf("did you mean %q?", s)
	}
	return "known keys here: " + strings.Join(known, ", ")
}

// resolveAt turns a go-toml key (which has no array indices) reported at row
// into the indexed path this package uses ("sensor.foo" → "sensor[1].foo").
func (s *sourceIndex) resolveAt(row int, parts []string) string {
	plain := strings.Join(parts, ".")
	if s == nil {
		return plain
	}
	if k, ok := s.byLine[strconv.Itoa(row)+"\x00"+plain]; ok {
		return k
	}
	// A key reported at the header of its table.
	best := ""
	for _, k := range s.order {
		if s.lines[k] <= row && strings.HasPrefix(plain, stripIndices(k)+".") {
			best = k
		}
	}
	if best != "" {
		return best + plain[len(stripIndices(best)):]
	}
	return plain
}

func stripIndices(k string) string {
	var b strings.Builder
	depth := 0
	for _, r := range k {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func newIndex() *sourceIndex {
	return &sourceIndex{
		lines: map[string]int{}, cols: map[string]int{},
		kinds: map[string]unstable.Kind{}, raws: map[string]string{},
		byLine: map[string]string{},
	}
}

// buildIndex walks the document with go-toml's parser. It is best effort: a
// syntax error stops it (the decoder reports that error with its position).
func buildIndex(data []byte) (idx *sourceIndex) {
	idx = newIndex()
	defer func() {
		// The parser API is marked unstable; never let it take the agent down.
		if recover() != nil {
			idx = newIndex()
		}
	}()
	var p unstable.Parser
	p.Reset(data)
	counts := map[string]int{}
	current := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, first := keyParts(e.Key())
			path := resolveParts(parts, counts)
			if e.Kind == unstable.ArrayTable {
				n := counts[path]
				counts[path] = n + 1
				path = fmt.Sprintf("%s[%d]", path, n)
			}
			current = path
			idx.add(data, path, first, unstable.Table)
		case unstable.KeyValue:
			idx.addKeyValue(data, current, e)
		}
	}
	return idx
}

func (s *sourceIndex) addKeyValue(data []byte, prefix string, kv *unstable.Node) {
	parts, first := keyParts(kv.Key())
	// Intermediate dotted parts are tables in their own right.
	path := prefix
	for _, part := range parts {
		path = joinKey(path, part)
		if _, ok := s.lines[path]; !ok {
			s.add(data, path, first, unstable.Table)
		}
	}
	v := kv.Value()
	s.kinds[path] = v.Kind
	switch v.Kind {
	case unstable.String, unstable.Integer, unstable.Float, unstable.Bool:
		if raw := data[v.Raw.Offset : v.Raw.Offset+v.Raw.Length]; len(raw) <= 200 && !bytes.ContainsAny(raw, "\r\n") {
			s.raws[path] = string(raw)
		}
	}
	s.addValue(data, path, v)
}

// addValue indexes the keys inside inline tables, also inside arrays.
func (s *sourceIndex) addValue(data []byte, path string, v *unstable.Node) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				s.addKeyValue(data, path, c)
			}
		}
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			if c := it.Node(); c.Kind == unstable.InlineTable || c.Kind == unstable.Array {
				elem := fmt.Sprintf("%s[%d]", path, i)
				s.kinds[elem] = c.Kind
				s.addValue(data, elem, c)
			}
		}
	}
}

func (s *sourceIndex) add(data []byte, path string, at unstable.Range, kind unstable.Kind) {
	if _, ok := s.lines[path]; !ok {
		s.order = append(s.order, path)
	}
	line, col := s.position(data, int(at.Offset))
	s.byLine[strconv.Itoa(line)+"\x00"+stripIndices(path)] = path
	s.lines[path] = line
	s.cols[path] = col
	s.kinds[path] = kind
}

// position returns the 1-based line and column of offset.
func (s *sourceIndex) position(data []byte, offset int) (line, col int) {
	if s.newlines == nil {
		s.newlines = []int{}
		for i, c := range data {
			if c == '\n' {
				s.newlines = append(s.newlines, i)
			}
		}
	}
	offset = min(offset, len(data))
	n := sort.SearchInts(s.newlines, offset) // newlines before offset
	start := 0
	if n > 0 {
		start = s.newlines[n-1] + 1
	}
	return n + 1, offset - start + 1
}

func keyParts(it unstable.Iterator) (parts []string, first unstable.Range) {
	for i := 0; it.Next(); i++ {
		n := it.Node()
		if i == 0 {
			first = n.Raw
		}
		parts = append(parts, string(n.Data))
	}
	return parts, first
}

// resolveParts joins header parts, inserting the index of the latest element
// of any array of tables along the way ([sensor.x] after [[sensor]]).
func resolveParts(parts []string, counts map[string]int) string {
	path := ""
	for i, part := range parts {
		path = joinKey(path, part)
		if i < len(parts)-1 {
			if n := counts[path]; n > 0 {
				path = fmt.Sprintf("%s[%d]", path, n-1)
			}
		}
	}
	return path
}

func joinKey(prefix, part string) string {
	if needsQuote(part) {
		part = strconv.Quote(part)
	}
	if prefix == "" {
		return part
	}
	return prefix + "." + part
}

func needsQuote(part string) bool {
	if part == "" {
		return true
	}
	for i := 0; i < len(part); i++ {
		c := part[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return true
		}
	}
	return false
}

// splitKey splits "a.b[0].c" into "a.b[0]" and "c".
func splitKey(k string) (parent, last string) {
	inQuote := false
	for i := len(k) - 1; i >= 0; i-- {
		switch k[i] {
		case '"':
			inQuote = !inQuote
		case '.':
			if !inQuote {
				return k[:i], k[i+1:]
			}
		}
	}
	return "", k
}

// typeProblems reports values of the wrong TOML type for Duration keys
// (bare numbers), which the decoder would report without a position.
func (s *sourceIndex) typeProblems() []Problem {
	var out []Problem
	for _, k := range s.order {
		kind, ok := s.kinds[k]
		if !ok || kind == unstable.String || kind == unstable.Table {
			continue
		}
		t := fieldType(stripIndices(k))
		p := Problem{Key: k, Line: s.lines[k], Column: s.cols[k]}
		switch {
		case t == durationType && (kind == unstable.Integer || kind == unstable.Float):
			p.Message = "a duration needs a unit"
			p.Fix = `write it as a string such as "30s", "5m" or "1h"`
		case t == durationType:
			p.Message = fmt.Sprintf("must be a duration string, not a TOML %s", strings.ToLower(kind.String()))
			p.Fix = `e.g. "30s"`
		case t == byteSizeType && kind != unstable.Integer:
			p.Message = fmt.Sprintf("must be a size, not a TOML %s", strings.ToLower(kind.String()))
			p.Fix = `bytes as a whole number, or a string such as "64MiB"`
		default:
			continue
		}
		out = append(out, p)
	}
	return out
}

var (
	durationType = reflect.TypeOf(Duration{})
	byteSizeType = reflect.TypeOf(ByteSize(0))
	configType   = reflect.TypeOf(Config{})
)

// fieldType returns the Go type a dotted key (without indices) decodes into,
// or nil when the key is not part of the schema.
func fieldType(key string) reflect.Type {
	t := configType
	for _, part := range strings.Split(key, ".") {
		for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == durationType {
			return nil
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			return nil
		}
		t = f.Type
	}
	return t
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("toml"), ","); tag == name && tag != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// knownKeys lists the keys allowed under a table path ("" for the top level).
func knownKeys(parent string) []string {
	var t reflect.Type
	if parent == "" {
		t = configType
	} else {
		t = fieldType(stripIndices(parent))
	}
	if t == nil {
		return nil
	}
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return nil
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	sort.Strings(keys)
	return keys
}

// closest returns the known key a typo of k most likely meant, or "".
func closest(k string, known []string) string {
	best, bestD := "", max(1, len(k)/3)+1
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
