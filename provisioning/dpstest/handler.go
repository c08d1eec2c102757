package dpstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

// Error codes of DPS error replies (see the package documentation).
const (
	codeAPIVersion      = 400001
	codeBadRequest      = 400004
	codeUnauthorized    = 401002
	codeNoRoute         = 404000
	codeUnknownScope    = 404001
	codeNoEnrollment    = 404201
	codeNoOperation     = 404202
	codeMethod          = 405000
	codeTooLarge        = 413001
	codeMediaType       = 415001
	codeThrottled       = 429001
	codeInternal        = 500001
	headerErrorCode     = "x-ms-error-code"
	headerRequestID     = "x-ms-request-id"
	contentTypeJSONUTF8 = "application/json; charset=utf-8"
)

// apiError is a reply in DPS error shape.
type apiError struct {
	status     int
	code       int
	message    string
	retryAfter int // seconds; 0 → no Retry-After header
}

func errorf(status, code int, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// identity is the enrollment a request authenticated as.
type identity struct {
	ind *enrollment // individual enrollment, or nil
	grp *group      // enrollment group, or nil
	key *sas.Key    // device key: the individual key or the derived one
}

func (id identity) deviceID(regID string) string {
	if id.ind != nil && id.ind.DeviceID != "" {
		return id.ind.DeviceID
	}
	return regID
}

func (id identity) disabled() bool {
	if id.ind != nil {
		return id.ind.Disabled
	}
	return id.grp.Disabled
}

// ServeHTTP serves the DPS device API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, ok := parseRoute(r.URL.EscapedPath())
	if !ok {
		s.writeError(w, rt, errorf(http.StatusNotFound, codeNoRoute,
			"no DPS device API endpoint at %s; want /{idScope}/registrations/{registrationId}/register", r.URL.EscapedPath()))
		return
	}
	s.requests.Add(1)
	if e := s.serve(w, r, rt); e != nil {
		s.writeError(w, rt, e)
	}
}

// serve handles a routed request; a non-nil result is written as the error reply.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt route) *apiError {
	if e := s.takeFault(); e != nil {
		return e
	}
	want := map[routeKind]string{routeRegister: http.MethodPut, routeOperation: http.MethodGet, routeStatus: http.MethodPost}[rt.kind]
	if r.Method != want {
		w.Header().Set("Allow", want)
		return errorf(http.StatusMethodNotAllowed, codeMethod, "method %s is not allowed here; use %s", r.Method, want)
	}
	if e := checkAPIVersion(r.URL.RawQuery); e != nil {
		return e
	}
	if !strings.EqualFold(rt.idScope, s.idScope) {
		return errorf(http.StatusNotFound, codeUnknownScope, "id scope %q is not served by this emulator", rt.idScope)
	}
	if !validRegistrationID(rt.regID) {
		return errorf(http.StatusBadRequest, codeBadRequest,
			"registration id %q is invalid: want 1-128 characters of a-z A-Z 0-9 - . _ :, ending in a letter, digit or -", rt.regID)
	}
	var body []byte
	if rt.kind != routeOperation { // pollers may send {} or nothing; it is ignored
		var e *apiError
		if body, e = readBody(w, r); e != nil {
			return e
		}
	}

	s.mu.Lock()
	now := s.now()
	id, e := s.authenticateLocked(r.Header.Get("Authorization"), rt, now)
	if e == nil {
		e = s.throttleLocked(rt.regID, now)
	}
	var status int
	var reply any
	if e == nil {
		switch rt.kind {
		case routeRegister:
			status, reply, e = s.registerLocked(id, rt.regID, body, now)
		case routeOperation:
			status, reply, e = s.operationLocked(rt.regID, rt.operationID)
		case routeStatus:
			status, reply, e = s.lookupLocked(rt.regID, body)
		}
	}
	s.mu.Unlock()
	if e != nil {
		return e
	}
	if status == http.StatusAccepted {
		w.Header().Set("Retry-After", strconv.Itoa(s.retryAfter))
		if rt.kind == routeRegister {
			w.Header().Set("Location", r.URL.EscapedPath())
		}
	}
	writeJSON(w, status, reply)
	return nil
}

// takeFault consumes one injected fault, if any.
func (s *Server) takeFault() *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faultsLeft <= 0 {
		return nil
	}
	s.faultsLeft--
	e := errorf(s.faultStatus, s.faultStatus*1000+1, "injected fault (%d more pending)", s.faultsLeft)
	if s.faultStatus == http.StatusTooManyRequests {
		e.retryAfter = s.retryAfter
	}
	return e
}

func checkAPIVersion(rawQuery string) *apiError {
	accepted := strings.Join(SupportedAPIVersions(), ", ")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return errorf(http.StatusBadRequest, codeAPIVersion, "query string is malformed: %v", err)
	}
	vs := q["api-version"]
	if len(vs) == 0 || vs[0] == "" {
		return errorf(http.StatusBadRequest, codeAPIVersion, "api-version query parameter is missing; accepted: %s", accepted)
	}
	if len(vs) > 1 {
		return errorf(http.StatusBadRequest, codeAPIVersion, "api-version is given %d times; give it once", len(vs))
	}
	if !slices.Contains(SupportedAPIVersions(), vs[0]) {
		return errorf(http.StatusBadRequest, codeAPIVersion, "api-version %q is not supported; accepted: %s", vs[0], accepted)
	}
	return nil
}

// readBody reads at most MaxBodyBytes of a JSON (or untyped) request body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, errorf(http.StatusUnsupportedMediaType, codeMediaType,
				"Content-Type %q is not supported; send application/json", ct)
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, errorf(http.StatusRequestEntityTooLarge, codeTooLarge,
			"request body is larger than %d bytes", MaxBodyBytes)
	}
	if err != nil {
		return nil, errorf(http.StatusBadRequest, codeBadRequest, "reading request body: %v", err)
	}
	return data, nil
}

// authenticateLocked verifies the SAS token for the route and returns the
// enrollment it proves. Messages name the cause but never the token.
func (s *Server) authenticateLocked(header string, rt route, now time.Time) (identity, *apiError) {
	unauthorized := func(format string, args ...any) (identity, *apiError) {
		return identity{}, errorf(http.StatusUnauthorized, codeUnauthorized, format, args...)
	}
	target := sas.RegistrationResource(rt.idScope, rt.regID)
	if header == "" {
		return unauthorized("Authorization header is missing; send a SharedAccessSignature with sr=%s and skn=registration", target)
	}
	tok, err := sas.Parse(header)
	if err != nil {
		return unauthorized("Authorization header: %v", err)
	}
	if tok.KeyName != "" && tok.KeyName != sas.RegistrationKeyName {
		return unauthorized("token skn is %q; DPS device tokens use skn=registration or none", tok.KeyName)
	}
	res, err := tok.DecodedResource()
	if err != nil {
		return unauthorized("token sr: %v", err)
	}
	// Exact match, segment by segment (id scope case-insensitive): a token
	// for the bare id scope or another registration does not authorize this one.
	if !sas.CoversResource(res, target) || !sas.CoversResource(target, res) {
		return unauthorized("token sr is %q, want %s", res, target)
	}
	if e, ok := s.enrollments[rt.regID]; ok {
		if err := sas.Verify(tok, e.key, target, now, 0); err != nil {
			return unauthorized("%v (individual enrollment %s)", verifyCause(err, now), rt.regID)
		}
		return identity{ind: e, key: e.key}, nil
	}
	if len(s.groups) == 0 {
		return identity{}, errorf(http.StatusNotFound, codeNoEnrollment,
			"no enrollment for registration id %s: no individual enrollment and no enrollment group", rt.regID)
	}
	for _, g := range s.groups {
		dk, err := sas.DeriveKey(g.key, rt.regID)
		if err != nil {
			return identity{}, errorf(http.StatusInternalServerError, codeInternal, "deriving a device key for group %s failed", g.ID)
		}
		err = sas.Verify(tok, dk, target, now, 0)
		if errors.Is(err, sas.ErrSignature) {
			continue
		}
		if err != nil {
			return unauthorized("%v (enrollment group %s)", verifyCause(err, now), g.ID)
		}
		return identity{grp: g, key: dk}, nil
	}
	return unauthorized("signature matches no enrollment: %s has no individual enrollment and the token is not signed by a key derived from any enrollment group key", rt.regID)
}

// verifyCause turns a sas.Verify error into reply text.
func verifyCause(err error, now time.Time) string {
	switch {
	case errors.Is(err, sas.ErrSignature):
		return "token signature does not match the enrollment key"
	case errors.Is(err, sas.ErrExpired):
		return fmt.Sprintf("token expired (%v; emulator clock %s)", err, now.UTC().Format(time.RFC3339))
	default:
		return err.Error()
	}
}

// throttleLocked admits a request of regID if fewer than RateLimit requests
// were admitted in the RateWindow before now.
func (s *Server) throttleLocked(regID string, now time.Time) *apiError {
	win := s.windows[regID]
	cut := now.Add(-RateWindow)
	i := 0
	for i < len(win) && !win[i].After(cut) {
		i++
	}
	win = win[i:]
	if len(win) >= RateLimit {
		s.windows[regID] = win
		wait := win[0].Add(RateWindow).Sub(now)
		secs := max(1, int(math.Ceil(wait.Seconds())))
		e := errorf(http.StatusTooManyRequests, codeThrottled,
			"registration %s sent more than %d requests in %s; retry after %d s", regID, RateLimit, RateWindow, secs)
		e.retryAfter = secs
		return e
	}
	s.windows[regID] = append(win, now)
	return nil
}

// registerLocked decides the outcome of a register call, records it and
// returns the 202 reply.
func (s *Server) registerLocked(id identity, regID string, body []byte, now time.Time) (int, any, *apiError) {
	b, err := decodeRegisterBody(body)
	if err != nil {
		return 0, nil, errorf(http.StatusBadRequest, codeBadRequest, "%v", err)
	}
	if b.RegistrationID != regID {
		return 0, nil, errorf(http.StatusBadRequest, codeBadRequest,
			"body registrationId %q does not match the registration id %q in the path", b.RegistrationID, regID)
	}

	old := s.state.Records[regID]
	rec := &record{RegistrationID: regID, Created: now}
	if old != nil {
		rec.Created, rec.Assignments = old.Created, old.Assignments
	}
	st := registrationState{
		RegistrationID:         regID,
		CreatedDateTimeUTC:     formatTime(rec.Created),
		LastUpdatedDateTimeUTC: formatTime(now),
		ETag:                   newETag(),
		Payload:                b.Payload,
	}
	if id.grp != nil {
		st.SymmetricKey = &symmetricKeyInfo{EnrollmentGroupID: id.grp.ID}
	}
	oldFail, hadFail := s.failNext[regID]
	deviceID := id.deviceID(regID)
	switch {
	case id.disabled():
		st.Status = StatusDisabled
	case hadFail:
		st.Status, st.ErrorCode, st.ErrorMessage = StatusFailed, oldFail.code, oldFail.message
		if oldFail.n <= 1 {
			delete(s.failNext, regID)
		} else {
			s.failNext[regID] = failSpec{n: oldFail.n - 1, code: oldFail.code, message: oldFail.message}
		}
	default:
		if s.registry != nil {
			if err := s.registry.UpsertDevice(deviceID, id.key.Base64()); err != nil {
				s.log.Warn("dps device registry refused the device", "registrationId", regID, "deviceId", deviceID, "err", err)
				st.Status, st.ErrorCode = StatusFailed, FailCodeRegistryError
				st.ErrorMessage = "the IoT hub refused to create or update the device identity"
				break
			}
		}
		st.Status, st.AssignedHub, st.DeviceID = StatusAssigned, s.assignedHub, deviceID
		st.Substatus = SubstatusInitialAssignment
		if rec.Assignments > 0 {
			st.Substatus = SubstatusReprovisionedToInitialAssignment
		}
		rec.Assignments++
	}
	op := &operation{ID: newOperationID(), PendingPolls: s.assigningPolls, State: st}
	rec.Op = op
	ev := Registration{
		RegistrationID: regID, At: now, Status: st.Status, DeviceID: st.DeviceID,
		AssignedHub: st.AssignedHub, Substatus: st.Substatus, ErrorCode: st.ErrorCode,
	}
	if id.grp != nil {
		ev.EnrollmentGroupID = id.grp.ID
	}

	oldEvents := s.state.Events
	s.state.Records[regID] = rec
	events := append(slices.Clip(oldEvents), ev)
	if len(events) > maxEvents {
		events = events[len(events)-maxEvents:]
	}
	s.state.Events = events
	if err := s.saveLocked(); err != nil {
		// Roll back so memory matches disk; the device will retry.
		s.state.Events = oldEvents
		if old != nil {
			s.state.Records[regID] = old
		} else {
			delete(s.state.Records, regID)
		}
		if hadFail {
			s.failNext[regID] = oldFail
		}
		s.log.Error("dps registration not persisted", "registrationId", regID, "err", err)
		return 0, nil, errorf(http.StatusInternalServerError, codeInternal, "the emulator could not persist the registration")
	}
	s.log.Info("dps registration", "registrationId", regID, "status", st.Status,
		"deviceId", st.DeviceID, "substatus", st.Substatus, "enrollmentGroup", ev.EnrollmentGroupID)
	return http.StatusAccepted, operationStatus{OperationID: op.ID, Status: StatusAssigning}, nil
}

// operationLocked answers an operation status poll.
func (s *Server) operationLocked(regID, opID string) (int, any, *apiError) {
	rec := s.state.Records[regID]
	if rec == nil || rec.Op == nil || rec.Op.ID != opID {
		return 0, nil, errorf(http.StatusNotFound, codeNoOperation,
			"operation %q is not the latest operation of registration %s; register again", opID, regID)
	}
	if rec.Op.PendingPolls > 0 {
		rec.Op.PendingPolls--
		return http.StatusAccepted, operationStatus{OperationID: opID, Status: StatusAssigning}, nil
	}
	st := rec.Op.State
	return http.StatusOK, operationStatus{OperationID: opID, Status: st.Status, RegistrationState: &st}, nil
}

// lookupLocked answers the (non-billable) registration status lookup.
func (s *Server) lookupLocked(regID string, body []byte) (int, any, *apiError) {
	if len(strings.TrimSpace(string(body))) > 0 {
		b, err := decodeRegisterBody(body)
		if err != nil {
			return 0, nil, errorf(http.StatusBadRequest, codeBadRequest, "%v", err)
		}
		if b.RegistrationID != regID {
			return 0, nil, errorf(http.StatusBadRequest, codeBadRequest,
				"body registrationId %q does not match the registration id %q in the path", b.RegistrationID, regID)
		}
	}
	rec := s.state.Records[regID]
	if rec == nil || rec.Op == nil {
		return 0, nil, errorf(http.StatusNotFound, codeNoOperation, "registration %s has never registered", regID)
	}
	if rec.Op.PendingPolls > 0 {
		return http.StatusOK, registrationState{RegistrationID: regID, Status: StatusAssigning}, nil
	}
	return http.StatusOK, rec.Op.State, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil { // only our own types are encoded; cannot happen
		status, data = http.StatusInternalServerError, []byte(`{"errorCode":500001,"message":"encoding reply failed"}`)
	}
	w.Header().Set("Content-Type", contentTypeJSONUTF8)
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func (s *Server) writeError(w http.ResponseWriter, rt route, e *apiError) {
	tracking := newUUID()
	h := w.Header()
	h.Set(headerErrorCode, strconv.Itoa(e.code))
	h.Set(headerRequestID, tracking)
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	s.log.Info("dps request refused", "registrationId", rt.regID, "status", e.status, "errorCode", e.code, "message", e.message)
	writeJSON(w, e.status, errorBody{
		ErrorCode:    e.code,
		TrackingID:   tracking,
		Message:      e.message,
		TimestampUTC: formatTime(s.now()),
	})
}
