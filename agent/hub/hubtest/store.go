package hubtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/fieldgate/fieldgate/sas"
)

// State directory files.
const (
	devicesFile   = "devices.json"
	twinsFile     = "twins.json"
	c2dFile       = "c2d.json"
	telemetryFile = "telemetry.jsonl"
)

// store persists the hub's state under a directory. The registry, twins and
// C2D queues are whole JSON files replaced atomically (temp file, fsync,
// rename, fsync of the directory); telemetry is an append-only JSON-lines
// log fsynced per message.
type store struct {
	dir string
	log *os.File
}

type snapshot struct {
	devices  []*deviceState
	messages []Message
}

type twinsDoc struct {
	Twins []Twin `json:"twins"`
}

type devicesDoc struct {
	Devices []Device `json:"devices"`
}

type c2dDoc struct {
	Queues map[string][]*c2dEntry `json:"queues"`
}

func openStore(dir string) (*store, snapshot, error) {
	var snap snapshot
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, snap, fmt.Errorf("hubtest: create state dir: %w", err)
	}
	var devs devicesDoc
	if err := readJSON(filepath.Join(dir, devicesFile), &devs); err != nil {
		return nil, snap, err
	}
	var twins twinsDoc
	if err := readJSON(filepath.Join(dir, twinsFile), &twins); err != nil {
		return nil, snap, err
	}
	var queues c2dDoc
	if err := readJSON(filepath.Join(dir, c2dFile), &queues); err != nil {
		return nil, snap, err
	}
	byID := map[string]*deviceState{}
	for _, d := range devs.Devices {
		pk, err := sas.ParseKey(d.PrimaryKey)
		if err != nil {
			return nil, snap, fmt.Errorf("hubtest: %s: device %q primary key: %w", devicesFile, d.ID, err)
		}
		sk, err := sas.ParseKey(d.SecondaryKey)
		if err != nil {
			return nil, snap, fmt.Errorf("hubtest: %s: device %q secondary key: %w", devicesFile, d.ID, err)
		}
		ds := &deviceState{dev: d, primary: pk, second: sk, twin: newTwin(d.ID)}
		byID[d.ID] = ds
		snap.devices = append(snap.devices, ds)
	}
	for _, t := range twins.Twins {
		if ds := byID[t.DeviceID]; ds != nil {
			if t.Tags == nil {
				t.Tags = map[string]any{}
			}
			if t.Desired == nil {
				t.Desired = map[string]any{}
			}
			if t.Reported == nil {
				t.Reported = map[string]any{}
			}
			ds.twin = t
		}
	}
	for id, q := range queues.Queues {
		if ds := byID[id]; ds != nil {
			ds.c2d = q
		}
	}
	path := filepath.Join(dir, telemetryFile)
	msgs, good, err := readLog(path)
	if err != nil {
		return nil, snap, err
	}
	snap.messages = msgs
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, snap, fmt.Errorf("hubtest: open telemetry log: %w", err)
	}
	// Drop a torn last line so the next append starts clean.
	if err := f.Truncate(good); err != nil {
		_ = f.Close()
		return nil, snap, fmt.Errorf("hubtest: truncate torn telemetry log tail: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, snap, fmt.Errorf("hubtest: seek telemetry log: %w", err)
	}
	if err := syncDir(dir); err != nil {
		_ = f.Close()
		return nil, snap, err
	}
	return &store{dir: dir, log: f}, snap, nil
}

// readJSON decodes a state file; a missing file leaves v untouched.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hubtest: read state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("hubtest: state file %s is corrupt (restore it or remove it to start empty): %w", path, err)
	}
	return nil
}

// readLog loads the telemetry log. It returns the messages and the length of
// the intact prefix: a torn last line (a crash mid-append) is ignored; a
// corrupt line before the last is an error.
func readLog(path string) ([]Message, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("hubtest: open telemetry log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64*1024)
	var msgs []Message
	var good int64
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			// No newline: a torn final append (or nothing at all).
			return msgs, good, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("hubtest: read telemetry log: %w", err)
		}
		var m Message
		if jerr := json.Unmarshal(b, &m); jerr != nil || m.N <= 0 {
			if _, perr := r.Peek(1); errors.Is(perr, io.EOF) {
				return msgs, good, nil // torn last line that happens to end in '\n'
			}
			return nil, 0, fmt.Errorf("hubtest: telemetry log %s line %d is corrupt: %v", path, line, jerr)
		}
		msgs = append(msgs, m)
		good += int64(len(b))
	}
}

func (s *store) appendMessage(m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("hubtest: encode telemetry: %w", err)
	}
	b = append(b, '\n')
	if _, err := s.log.Write(b); err != nil {
		return fmt.Errorf("hubtest: append telemetry log: %w", err)
	}
	if err := s.log.Sync(); err != nil {
		return fmt.Errorf("hubtest: fsync telemetry log: %w", err)
	}
	return nil
}

func (s *store) close() error {
	if s.log == nil {
		return nil
	}
	err := s.log.Close()
	s.log = nil
	return err
}

// writeJSON replaces path atomically with v.
func (s *store) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("hubtest: encode %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(s.dir, name+".tmp*")
	if err != nil {
		return fmt.Errorf("hubtest: write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("hubtest: write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("hubtest: fsync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("hubtest: write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, name)); err != nil {
		return fmt.Errorf("hubtest: replace %s: %w", name, err)
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("hubtest: open state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("hubtest: fsync state dir: %w", err)
	}
	return nil
}

func (h *Hub) sortedIDsLocked() []string {
	ids := make([]string, 0, len(h.devices))
	for id := range h.devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// saveDevicesLocked persists the registry. Caller holds mu.
func (h *Hub) saveDevicesLocked() error {
	if h.store == nil {
		return nil
	}
	doc := devicesDoc{Devices: []Device{}}
	for _, id := range h.sortedIDsLocked() {
		doc.Devices = append(doc.Devices, h.devices[id].dev)
	}
	return h.store.writeJSON(devicesFile, doc)
}

// saveTwinsLocked persists every twin. Caller holds mu.
func (h *Hub) saveTwinsLocked() error {
	if h.store == nil {
		return nil
	}
	doc := twinsDoc{Twins: []Twin{}}
	for _, id := range h.sortedIDsLocked() {
		doc.Twins = append(doc.Twins, h.devices[id].twin)
	}
	return h.store.writeJSON(twinsFile, doc)
}

// saveC2DLocked persists every C2D queue. Caller holds mu.
func (h *Hub) saveC2DLocked() error {
	if h.store == nil {
		return nil
	}
	doc := c2dDoc{Queues: map[string][]*c2dEntry{}}
	for id, ds := range h.devices {
		if len(ds.c2d) > 0 {
			doc.Queues[id] = ds.c2d
		}
	}
	return h.store.writeJSON(c2dFile, doc)
}

func (h *Hub) saveAllLocked() error {
	return errors.Join(h.saveDevicesLocked(), h.saveTwinsLocked(), h.saveC2DLocked())
}
