package dpstest

import (
	"github.com/fieldgate/fieldgate/internal/atomicfile"

	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"time"
)

const stateVersion = 1

// stateFile is everything that persists: one record per registration id and
// the history of register outcomes.
type stateFile struct {
	Version int                `json:"version"`
	Records map[string]*record `json:"records"`
	Events  []Registration     `json:"events"`
}

// record is the current registration of one registration id.
type record struct {
	RegistrationID string     `json:"registrationId"`
	Created        time.Time  `json:"created"`     // first register call
	Assignments    int        `json:"assignments"` // successful assignments so far
	Op             *operation `json:"operation,omitempty"`
}

// operation is the latest register operation of a registration id.
type operation struct {
	ID           string            `json:"id"`
	PendingPolls int               `json:"pendingPolls"` // GETs still answered "assigning"
	State        registrationState `json:"state"`        // the outcome
}

func newStateFile() *stateFile {
	return &stateFile{Version: stateVersion, Records: make(map[string]*record)}
}

// decodeState parses and validates a state file.
func decodeState(data []byte) (*stateFile, error) {
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("dpstest: state file: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("dpstest: state file version %d, want %d", st.Version, stateVersion)
	}
	if st.Records == nil {
		st.Records = make(map[string]*record)
	}
	for id, r := range st.Records {
		if r == nil || r.RegistrationID != id || !validRegistrationID(id) {
			return nil, fmt.Errorf("dpstest: state file record %q is inconsistent", id)
		}
		if r.Assignments < 0 || r.Op != nil && (r.Op.ID == "" || r.Op.PendingPolls < 0 || r.Op.State.RegistrationID != id) {
			return nil, fmt.Errorf("dpstest: state file record %q has an invalid operation", id)
		}
	}
	if len(st.Events) > maxEvents {
		st.Events = st.Events[len(st.Events)-maxEvents:]
	}
	return &st, nil
}

// loadState reads the state file at path. A missing file is an empty state;
// an undecodable one is renamed to path.corrupt-<unix seconds> with a warning
// and replaced by an empty state. Only I/O errors are returned.
func loadState(path string, now func() time.Time, log *slog.Logger) (*stateFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newStateFile(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("dpstest: reading state: %w", err)
	}
	st, derr := decodeState(data)
	if derr == nil {
		return st, nil
	}
	aside := path + ".corrupt-" + strconv.FormatInt(now().Unix(), 10)
	if err := os.Rename(path, aside); err != nil {
		return nil, fmt.Errorf("dpstest: moving corrupt state file aside: %w", err)
	}
	log.Warn("dps state file is corrupt; moved aside, starting with no registrations",
		"path", path, "movedTo", aside, "err", derr)
	return newStateFile(), nil
}

// saveLocked writes the state atomically when a state directory is set.
// s.mu must be held.
func (s *Server) saveLocked() error {
	if s.statePath == "" {
		return nil
	}
	data, err := json.MarshalIndent(s.state, "", " ")
	if err != nil {
		return fmt.Errorf("dpstest: encoding state: %w", err)
	}
	if err := atomicfile.Write(s.statePath, data, 0o600); err != nil {
		return fmt.Errorf("dpstest: writing state: %w", err)
	}
	return nil
}
