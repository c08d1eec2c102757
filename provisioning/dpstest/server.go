package dpstest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

// Accepted api-version values.
const (
	APIVersion20190331 = "2019-03-31"
	APIVersion20210601 = "2021-06-01"
	APIVersion20211001 = "2021-10-01"
)

// Limits enforced by the emulator, as documented for DPS.
const (
	MaxBodyBytes = 96 << 10         // largest accepted request body
	RateLimit    = 5                // requests per registration id ...
	RateWindow   = 10 * time.Second // ... in any window of this length
	maxEvents    = 10000            // registration history kept (oldest dropped)
)

// StateFileName is the file, inside Options.StateDir, holding registrations.
const StateFileName = "dps-registrations.json"

// Operation and registration status values.
const (
	StatusAssigning = "assigning"
	StatusAssigned  = "assigned"
	StatusFailed    = "failed"
	StatusDisabled  = "disabled"
)

// Substatus values of an assigned registration.
const (
	SubstatusInitialAssignment                = "initialAssignment"
	SubstatusReprovisionedToInitialAssignment = "reprovisionedToInitialAssignment"
)

// Registration state error codes reported in a failed operation.
const (
	FailCodeNoHub         = 400208 // FailNext default: no hub could be allocated
	FailCodeRegistryError = 500001 // the DeviceRegistry refused the device
)

// SupportedAPIVersions returns the accepted api-version values.
func SupportedAPIVersions() []string {
	return []string{APIVersion20190331, APIVersion20210601, APIVersion20211001}
}

// DeviceRegistry receives the identity a successful registration creates
// (the hub emulator implements it). UpsertDevice is called with the Server's
// lock held and must not call back into the Server.
type DeviceRegistry interface {
	UpsertDevice(deviceID, primaryKey string) error
}

// Enrollment is an individual symmetric-key enrollment.
type Enrollment struct {
	RegistrationID string
	Key            string // base64 symmetric key (a secret)
	DeviceID       string // "" → RegistrationID
	Disabled       bool
}

// Group is a symmetric-key enrollment group. A member's key is
// sas.DeriveDeviceKey(Key, registrationID); its device id is its
// registration id.
type Group struct {
	ID       string
	Key      string // base64 group key (a secret)
	Disabled bool
}

// Options configure a Server.
type Options struct {
	IDScope     string // required, e.g. "0ne00000001"
	AssignedHub string // required, returned as assignedHub: host[:port]
	Enrollments []Enrollment
	Groups      []Group
	Registry    DeviceRegistry   // or nil
	Now         func() time.Time // emulator clock (may be skewed); nil → time.Now
	RetryAfter  int              // seconds in Retry-After of 202 and injected 429 replies; 0 → 2
	// AssigningPolls is how many operation GETs answer 202 "assigning" before
	// the outcome is reported; 0 → the first poll reports it.
	AssigningPolls int
	StateDir       string       // "" → in memory; else registrations persist here
	Logger         *slog.Logger // or nil (discard)
}

// Registration is one register call's outcome, as kept in the history.
type Registration struct {
	RegistrationID    string    `json:"registrationId"`
	At                time.Time `json:"at"`
	Status            string    `json:"status"` // assigned, disabled or failed
	DeviceID          string    `json:"deviceId,omitempty"`
	AssignedHub       string    `json:"assignedHub,omitempty"`
	Substatus         string    `json:"substatus,omitempty"`
	EnrollmentGroupID string    `json:"enrollmentGroupId,omitempty"` // "" for individual enrollments
	ErrorCode         int       `json:"errorCode,omitempty"`         // failed only
}

// Server is the DPS device API emulator. Create it with New; it is safe for
// concurrent use.
type Server struct {
	idScope        string
	assignedHub    string
	registry       DeviceRegistry // or nil
	now            func() time.Time
	retryAfter     int
	assigningPolls int
	statePath      string // "" → in memory
	log            *slog.Logger

	requests atomic.Int64

	// mu guards every field below.
	mu          sync.Mutex
	enrollments map[string]*enrollment // by registration id
	groups      []*group               // in configuration order; first verifying group wins
	faultStatus int
	faultsLeft  int
	failNext    map[string]failSpec    // by registration id
	windows     map[string][]time.Time // accepted request times per registration id, oldest first
	state       *stateFile
}

type enrollment struct {
	Enrollment
	key *sas.Key
}

type group struct {
	Group
	key *sas.Key
}

type failSpec struct {
	n       int
	code    int
	message string
}

// New validates o and returns a Server. With o.StateDir set it loads earlier
// registrations; a corrupt state file is moved aside with a warning.
func New(o Options) (*Server, error) {
	var errs []error
	if o.IDScope == "" {
		errs = append(errs, errors.New("dpstest: IDScope is empty; set it to the id scope devices use, e.g. 0ne00000001"))
	} else if strings.ContainsAny(o.IDScope, "/?#% ") {
		errs = append(errs, fmt.Errorf("dpstest: IDScope %q contains a character not allowed in a URL path segment", o.IDScope))
	}
	if o.AssignedHub == "" {
		errs = append(errs, errors.New("dpstest: AssignedHub is empty; set it to the hub host[:port] devices should connect to"))
	}
	if o.RetryAfter < 0 {
		errs = append(errs, fmt.Errorf("dpstest: RetryAfter %d is negative; use 0 for the default of 2 seconds", o.RetryAfter))
	}
	if o.AssigningPolls < 0 {
		errs = append(errs, fmt.Errorf("dpstest: AssigningPolls %d is negative", o.AssigningPolls))
	}
	s := &Server{
		idScope:        o.IDScope,
		assignedHub:    o.AssignedHub,
		registry:       o.Registry,
		now:            o.Now,
		retryAfter:     o.RetryAfter,
		assigningPolls: o.AssigningPolls,
		log:            o.Logger,
		enrollments:    make(map[string]*enrollment),
		failNext:       make(map[string]failSpec),
		windows:        make(map[string][]time.Time),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.retryAfter == 0 {
		s.retryAfter = 2
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, e := range o.Enrollments {
		if err := s.addEnrollmentLocked(e, false); err != nil {
			errs = append(errs, err)
		}
	}
	for _, g := range o.Groups {
		if err := s.addGroupLocked(g); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.state = newStateFile()
	if o.StateDir != "" {
		if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("dpstest: creating state directory: %w", err)
		}
		s.statePath = filepath.Join(o.StateDir, StateFileName)
		st, err := loadState(s.statePath, s.now, s.log)
		if err != nil {
			return nil, err
		}
		s.state = st
	}
	return s, nil
}

// AddEnrollment adds an individual enrollment, or replaces the one with the
// same registration id.
func (s *Server) AddEnrollment(e Enrollment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addEnrollmentLocked(e, true)
}

// AddGroup adds an enrollment group, or replaces the one with the same id
// (keeping its position).
func (s *Server) AddGroup(g Group) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addGroupLocked(g)
}

// RemoveEnrollment deletes an individual enrollment; it reports whether one existed.
func (s *Server) RemoveEnrollment(registrationID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.enrollments[registrationID]
	delete(s.enrollments, registrationID)
	return ok
}

// SetEnrollmentDisabled disables or enables an individual enrollment.
func (s *Server) SetEnrollmentDisabled(registrationID string, disabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.enrollments[registrationID]
	if !ok {
		return fmt.Errorf("dpstest: no individual enrollment %q", registrationID)
	}
	e.Disabled = disabled
	return nil
}

// SetGroupDisabled disables or enables an enrollment group.
func (s *Server) SetGroupDisabled(id string, disabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.groups {
		if g.ID == id {
			g.Disabled = disabled
			return nil
		}
	}
	return fmt.Errorf("dpstest: no enrollment group %q", id)
}

// addEnrollmentLocked validates and stores e, replacing an enrollment with
// the same registration id only when replace is set; s.mu must be held (or s
// unshared).
func (s *Server) addEnrollmentLocked(e Enrollment, replace bool) error {
	if !validRegistrationID(e.RegistrationID) {
		return fmt.Errorf("dpstest: enrollment registration id %q is invalid: want 1-128 characters of a-z A-Z 0-9 - . _ :, ending in a letter, digit or -", e.RegistrationID)
	}
	if _, dup := s.enrollments[e.RegistrationID]; dup && !replace {
		return fmt.Errorf("dpstest: enrollment %q is listed twice", e.RegistrationID)
	}
	k, err := sas.ParseKey(e.Key)
	if err != nil {
		return fmt.Errorf("dpstest: enrollment %q key: %w", e.RegistrationID, err)
	}
	s.enrollments[e.RegistrationID] = &enrollment{Enrollment: e, key: k}
	return nil
}

// addGroupLocked validates and stores g; s.mu must be held (or s unshared).
func (s *Server) addGroupLocked(g Group) error {
	if g.ID == "" {
		return errors.New("dpstest: enrollment group id is empty")
	}
	k, err := sas.ParseKey(g.Key)
	if err != nil {
		return fmt.Errorf("dpstest: enrollment group %q key: %w", g.ID, err)
	}
	ng := &group{Group: g, key: k}
	if i := slices.IndexFunc(s.groups, func(x *group) bool { return x.ID == g.ID }); i >= 0 {
		s.groups[i] = ng
		return nil
	}
	s.groups = append(s.groups, ng)
	return nil
}

// InjectFaults makes the next n device requests answer status in DPS error
// shape (errorCode status×1000+1; a 429 carries Retry-After). status must be
// 429 or 5xx; n ≤ 0 clears the faults.
func (s *Server) InjectFaults(status, n int) error {
	if status != 429 && (status < 500 || status > 599) {
		return fmt.Errorf("dpstest: fault status %d is not injectable; use 429 or 500-599", status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultStatus, s.faultsLeft = status, max(n, 0)
	return nil
}

// ClearFaults cancels injected faults not yet served.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultStatus, s.faultsLeft = 0, 0
}

// FailNext makes the next n registrations of registrationID end in status
// "failed" with errorCode 400208. n ≤ 0 cancels.
func (s *Server) FailNext(registrationID string, n int) {
	s.FailNextWith(registrationID, n, FailCodeNoHub, "no linked IoT hub could be allocated (injected by FailNext)")
}

// FailNextWith is FailNext with the registrationState errorCode and errorMessage to report.
func (s *Server) FailNextWith(registrationID string, n, errorCode int, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.failNext, registrationID)
		return
	}
	s.failNext[registrationID] = failSpec{n: n, code: errorCode, message: message}
}

// Requests returns how many device API requests (any method, any outcome)
// the Server has received.
func (s *Server) Requests() int {
	return int(s.requests.Load())
}

// Registrations returns the outcome of every register call, oldest first
// (at most the latest 10000).
func (s *Server) Registrations() []Registration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.state.Events)
}
