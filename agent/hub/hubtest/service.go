package hubtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/sas"
)

// ServiceHandler serves IoT Hub's service API (the subset below) plus the
// emulator-only endpoints. Every request needs an Authorization header with a
// SAS token signed by the service policy key (skn = policy name, sr covering
// the hub host); otherwise 401. The api-version query parameter is accepted
// and ignored. Paths:
//
//	GET    /devices                          list the registry
//	PUT    /devices/{id}                     create or replace (keys generated when absent; If-Match honoured)
//	GET    /devices/{id}
//	DELETE /devices/{id}                     (If-Match honoured)
//	GET    /twins/{id}
//	PATCH  /twins/{id}                       {"properties":{"desired":{…}},"tags":{…}} → twin
//	POST   /twins/{id}/methods               {"methodName","payload","responseTimeoutInSeconds","connectTimeoutInSeconds"} → {"status","payload"}
//	POST   /devices/{id}/messages/deviceBound {"payload": string|object, "properties": {…}, "messageId"?}
//	GET    /emulator/messages?deviceId=&after=N
//	GET    /emulator/connections?deviceId=
//	POST   /emulator/faults                  {"dropConnections":"id|*","refuseConnects":n,"withholdPubacksSeconds":s,"clear":true}
//
// Errors are JSON {"errorCode":N,"message":…,"trackingId":…,"timestampUtc":…}
// with IoT Hub's six-digit codes, and the iothub-errorcode header.
func (h *Hub) ServiceHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/devices", h.route(map[string]http.HandlerFunc{http.MethodGet: h.listDevices}))
	mux.HandleFunc("/devices/{id}", h.route(map[string]http.HandlerFunc{
		http.MethodPut: h.putDevice, http.MethodGet: h.getDevice, http.MethodDelete: h.delDevice}))
	mux.HandleFunc("/devices/{id}/messages/deviceBound", h.route(map[string]http.HandlerFunc{http.MethodPost: h.postC2D}))
	mux.HandleFunc("/twins/{id}", h.route(map[string]http.HandlerFunc{http.MethodGet: h.getTwin, http.MethodPatch: h.patchTwinHTTP}))
	mux.HandleFunc("/twins/{id}/methods", h.route(map[string]http.HandlerFunc{http.MethodPost: h.postMethod}))
	mux.HandleFunc("/emulator/messages", h.route(map[string]http.HandlerFunc{http.MethodGet: h.getMessages}))
	mux.HandleFunc("/emulator/connections", h.route(map[string]http.HandlerFunc{http.MethodGet: h.getConnections}))
	mux.HandleFunc("/emulator/faults", h.route(map[string]http.HandlerFunc{http.MethodPost: h.postFaults}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !h.authorize(w, r) {
			return
		}
		writeError(w, http.StatusNotFound, 404000, "no such service API path: "+r.URL.Path)
	})
	return mux
}

// route authorizes and dispatches by method.
func (h *Hub) route(methods map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.authorize(w, r) {
			return
		}
		fn := methods[r.Method]
		if fn == nil {
			allowed := make([]string, 0, len(methods))
			for m := range methods {
				allowed = append(allowed, m)
			}
			sort.Strings(allowed)
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(w, http.StatusMethodNotAllowed, 405000, "method "+r.Method+" not allowed on "+r.URL.Path)
			return
		}
		fn(w, r)
	}
}

// authorize checks the service SAS; it writes 401 and returns false when it
// is missing or invalid. The token never appears in the reply or the log.
func (h *Hub) authorize(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		writeError(w, http.StatusUnauthorized, 401002, "missing Authorization header: want a SharedAccessSignature signed with the service policy key")
		return false
	}
	tok, err := sas.Parse(auth)
	if err != nil {
		writeError(w, http.StatusUnauthorized, 401002, "malformed Authorization token: "+err.Error())
		return false
	}
	if tok.KeyName != h.policy.Name {
		writeError(w, http.StatusUnauthorized, 401002, fmt.Sprintf("token key name %q is not the service policy %q", tok.KeyName, h.policy.Name))
		return false
	}
	if err := sas.Verify(tok, h.policyKey, h.hubHost, h.now(), 0); err != nil {
		writeError(w, http.StatusUnauthorized, 401002, "unauthorized: "+err.Error())
		return false
	}
	return true
}

type errorBody struct {
	ErrorCode    int    `json:"errorCode"`
	Message      string `json:"message"`
	TrackingID   string `json:"trackingId"`
	TimestampUTC string `json:"timestampUtc"`
}

var errorNames = map[int]string{
	400004: "ArgumentInvalid", 401002: "IotHubUnauthorizedAccess", 403004: "DeviceMaximumQueueDepthExceeded",
	404000: "NotFound", 404001: "DeviceNotFound", 404103: "DeviceNotOnline", 405000: "MethodNotAllowed",
	412002: "PreconditionFailed", 413002: "MessageTooLarge", 500001: "ServerError", 503000: "ServiceUnavailable",
	504101: "GatewayTimeout",
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	if name, ok := errorNames[code]; ok {
		w.Header().Set("iothub-errorcode", name)
	}
	writeJSON(w, status, errorBody{ErrorCode: code, Message: msg, TrackingID: newID(),
		TimestampUTC: time.Now().UTC().Format(time.RFC3339Nano)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errorCode":500001,"message":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeErr maps a Go API error to its HTTP status and IoT Hub code.
func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrDeviceNotFound):
		writeError(w, http.StatusNotFound, 404001, err.Error())
	case errors.Is(err, ErrDeviceOffline):
		writeError(w, http.StatusNotFound, 404103, err.Error())
	case errors.Is(err, ErrTimeout):
		writeError(w, http.StatusGatewayTimeout, 504101, err.Error())
	case errors.Is(err, ErrQueueFull):
		writeError(w, http.StatusForbidden, 403004, err.Error())
	case errors.Is(err, ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, 400004, err.Error())
	case errors.Is(err, ErrPreconditionFailed):
		writeError(w, http.StatusPreconditionFailed, 412002, err.Error())
	case errors.Is(err, ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, 413002, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		writeError(w, http.StatusGatewayTimeout, 504101, err.Error())
	case errors.Is(err, ErrClosed):
		writeError(w, http.StatusServiceUnavailable, 503000, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, 500001, err.Error())
	}
}

// readBody decodes a JSON request body (at most 256 KB) into v with numbers
// as json.Number. It writes 400/413 and returns false on failure.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxServiceBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, 413002, fmt.Sprintf("request body exceeds %d bytes", maxServiceBody))
			return false
		}
		writeError(w, http.StatusBadRequest, 400004, "read request body: "+err.Error())
		return false
	}
	if err := decodeJSON(b, v); err != nil {
		writeError(w, http.StatusBadRequest, 400004, err.Error())
		return false
	}
	return true
}

func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body is not the expected JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("request body has data after the JSON value")
	}
	return nil
}

// ifMatch returns the If-Match header without quotes.
func ifMatch(r *http.Request) string {
	return strings.Trim(strings.TrimSpace(r.Header.Get("If-Match")), `"`)
}

type symmetricKeyJSON struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

type authJSON struct {
	Type         string           `json:"type"`
	SymmetricKey symmetricKeyJSON `json:"symmetricKey"`
}

type deviceJSON struct {
	DeviceID                   string    `json:"deviceId"`
	GenerationID               string    `json:"generationId"`
	ETag                       string    `json:"etag"`
	ConnectionState            string    `json:"connectionState"`
	Status                     string    `json:"status"`
	StatusReason               *string   `json:"statusReason"`
	ConnectionStateUpdatedTime time.Time `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          time.Time `json:"statusUpdatedTime"`
	LastActivityTime           time.Time `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int       `json:"cloudToDeviceMessageCount"`
	Authentication             authJSON  `json:"authentication"`
	Capabilities               struct {
		IoTEdge bool `json:"iotEdge"`
	} `json:"capabilities"`
}

// deviceDocLocked renders a device in IoT Hub's shape. Caller holds mu.
func (h *Hub) deviceDocLocked(ds *deviceState) deviceJSON {
	d := ds.dev
	out := deviceJSON{DeviceID: d.ID, GenerationID: d.GenerationID, ETag: d.ETag, ConnectionState: "Disconnected",
		Status: d.Status, StatusUpdatedTime: d.Updated, CloudToDeviceMessageCount: len(ds.c2d),
		Authentication: authJSON{Type: "sas", SymmetricKey: symmetricKeyJSON{d.PrimaryKey, d.SecondaryKey}}}
	if d.StatusReason != "" {
		reason := d.StatusReason
		out.StatusReason = &reason
	}
	if c := h.current[d.ID]; c != nil && c.established {
		out.ConnectionState = "Connected"
		out.ConnectionStateUpdatedTime = c.rec.ConnectedAt.UTC()
		out.LastActivityTime = c.rec.ConnectedAt.UTC()
	}
	for i := len(h.history) - 1; i >= 0 && out.ConnectionStateUpdatedTime.IsZero(); i-- {
		if r := h.history[i]; r.DeviceID == d.ID {
			out.ConnectionStateUpdatedTime = r.DisconnectedAt.UTC()
		}
	}
	return out
}

func (h *Hub) connectionState(id string) string {
	if c := h.current[id]; c != nil && c.established {
		return "Connected"
	}
	return "Disconnected"
}

func (h *Hub) listDevices(w http.ResponseWriter, _ *http.Request) {
	h.mu.Lock()
	out := []deviceJSON{}
	for _, id := range h.sortedIDsLocked() {
		out = append(out, h.deviceDocLocked(h.devices[id]))
	}
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (h *Hub) getDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.mu.Lock()
	ds := h.devices[id]
	if ds == nil {
		h.mu.Unlock()
		writeErr(w, fmt.Errorf("hubtest: device %q: %w", id, ErrDeviceNotFound))
		return
	}
	doc := h.deviceDocLocked(ds)
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, doc)
}

func (h *Hub) putDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body struct {
		DeviceID       string `json:"deviceId"`
		Status         string `json:"status"`
		StatusReason   string `json:"statusReason"`
		Authentication *struct {
			Type         string            `json:"type"`
			SymmetricKey *symmetricKeyJSON `json:"symmetricKey"`
		} `json:"authentication"`
	}
	if !readBody(w, r, &body) {
		return
	}
	if body.DeviceID != "" && body.DeviceID != id {
		writeError(w, http.StatusBadRequest, 400004, fmt.Sprintf("body deviceId %q does not match the path %q", body.DeviceID, id))
		return
	}
	d := Device{ID: id, Status: body.Status, StatusReason: body.StatusReason}
	if a := body.Authentication; a != nil {
		if a.Type != "" && !strings.EqualFold(a.Type, "sas") {
			writeError(w, http.StatusBadRequest, 400004, fmt.Sprintf("authentication type %q is not supported: the emulator only does sas (symmetric keys)", a.Type))
			return
		}
		if a.SymmetricKey != nil {
			d.PrimaryKey, d.SecondaryKey = a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey
		}
	}
	h.mu.Lock()
	_, err := h.putDeviceLocked(d, ifMatch(r))
	var drop *conn
	if err == nil && d.Status == StatusDisabled {
		if drop = h.current[id]; drop != nil && drop.reason == "" {
			drop.reason = "device disabled"
		}
	}
	var doc deviceJSON
	if err == nil {
		doc = h.deviceDocLocked(h.devices[id])
	}
	h.mu.Unlock()
	if drop != nil {
		drop.cl.Stop(errDisabled)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

func (h *Hub) delDevice(w http.ResponseWriter, r *http.Request) {
	if err := h.deleteDevice(r.PathValue("id"), ifMatch(r)); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Hub) getTwin(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.mu.Lock()
	ds := h.devices[id]
	if ds == nil {
		h.mu.Unlock()
		writeErr(w, fmt.Errorf("hubtest: twin %q: %w", id, ErrDeviceNotFound))
		return
	}
	doc := ds.twin.serviceDoc(ds.dev.Status, h.connectionState(id))
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, doc)
}

func (h *Hub) patchTwinHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body struct {
		Tags       map[string]any `json:"tags"`
		Properties *struct {
			Desired  map[string]any `json:"desired"`
			Reported map[string]any `json:"reported"`
		} `json:"properties"`
	}
	if !readBody(w, r, &body) {
		return
	}
	var desired map[string]any
	if body.Properties != nil {
		if body.Properties.Reported != nil {
			writeError(w, http.StatusBadRequest, 400004, "reported properties are written by the device, not the service")
			return
		}
		desired = body.Properties.Desired
	}
	if desired == nil && body.Tags == nil {
		writeError(w, http.StatusBadRequest, 400004, `patch has neither "properties.desired" nor "tags"`)
		return
	}
	if _, err := h.patchTwin(id, desired, body.Tags, ifMatch(r)); err != nil {
		writeErr(w, err)
		return
	}
	h.getTwin(w, r)
}

func (h *Hub) postMethod(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body struct {
		MethodName               string          `json:"methodName"`
		Payload                  json.RawMessage `json:"payload"`
		ResponseTimeoutInSeconds *json.Number    `json:"responseTimeoutInSeconds"`
		ConnectTimeoutInSeconds  *json.Number    `json:"connectTimeoutInSeconds"`
	}
	if !readBody(w, r, &body) {
		return
	}
	timeout, err := seconds(body.ResponseTimeoutInSeconds, 30, 1, 300)
	if err != nil {
		writeError(w, http.StatusBadRequest, 400004, "responseTimeoutInSeconds: "+err.Error())
		return
	}
	connect, err := seconds(body.ConnectTimeoutInSeconds, 0, 0, 300)
	if err != nil {
		writeError(w, http.StatusBadRequest, 400004, "connectTimeoutInSeconds: "+err.Error())
		return
	}
	if connect > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), connect)
		_ = h.WaitSubscribed(ctx, id, filterMethods)
		cancel()
	}
	res, err := h.InvokeMethod(r.Context(), id, body.MethodName, body.Payload, timeout)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// seconds parses an optional whole number of seconds within [lo, hi].
func seconds(n *json.Number, def, lo, hi int64) (time.Duration, error) {
	v := def
	if n != nil {
		x, err := n.Int64()
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number of seconds", n.String())
		}
		v = x
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%d is outside %d..%d", v, lo, hi)
	}
	return time.Duration(v) * time.Second, nil
}

func (h *Hub) postC2D(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body struct {
		Payload    json.RawMessage   `json:"payload"`
		Properties map[string]string `json:"properties"`
		MessageID  string            `json:"messageId"`
	}
	if !readBody(w, r, &body) {
		return
	}
	var payload []byte
	if len(body.Payload) > 0 && body.Payload[0] == '"' {
		var s string
		if err := json.Unmarshal(body.Payload, &s); err != nil {
			writeError(w, http.StatusBadRequest, 400004, "payload: "+err.Error())
			return
		}
		payload = []byte(s)
	} else if len(body.Payload) > 0 && string(body.Payload) != "null" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, body.Payload); err != nil {
			writeError(w, http.StatusBadRequest, 400004, "payload: "+err.Error())
			return
		}
		payload = buf.Bytes()
	}
	m := C2DMessage{Body: payload, Properties: body.Properties, MessageID: body.MessageID}
	if m.MessageID == "" {
		m.MessageID = newID()
	}
	if err := h.SendC2D(id, m); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"messageId": m.MessageID})
}

type messageJSON struct {
	N                int               `json:"n"`
	DeviceID         string            `json:"deviceId"`
	EnqueuedTimeUTC  time.Time         `json:"enqueuedTimeUtc"`
	Properties       map[string]string `json:"properties"`
	SystemProperties map[string]string `json:"systemProperties"`
	Body             *string           `json:"body"` // null when the body is not UTF-8 text
	BodyBase64       string            `json:"bodyBase64"`
}

func (h *Hub) getMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after := 0
	if s := q.Get("after"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, 400004, fmt.Sprintf("after=%q: want a message number >= 0", s))
			return
		}
		after = n
	}
	msgs, next := h.Messages(q.Get("deviceId"), after)
	out := make([]messageJSON, len(msgs))
	for i, m := range msgs {
		out[i] = messageJSON{N: m.N, DeviceID: m.DeviceID, EnqueuedTimeUTC: m.EnqueuedTime.UTC(),
			Properties: m.Properties, SystemProperties: m.SystemProperties,
			BodyBase64: base64.StdEncoding.EncodeToString(m.Body)}
		if utf8.Valid(m.Body) {
			s := string(m.Body)
			out[i].Body = &s
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": out, "next": next})
}

type connectionJSON struct {
	DeviceID       string     `json:"deviceId"`
	ConnectedAt    time.Time  `json:"connectedAt"`
	DisconnectedAt *time.Time `json:"disconnectedAt"`
	Reason         string     `json:"reason"`
	TokenExpiry    time.Time  `json:"tokenExpiry"`
	APIVersion     string     `json:"apiVersion"`
	ModelID        string     `json:"modelId"`
	Transport      string     `json:"transport"`
	CleanSession   bool       `json:"cleanSession"`
}

func (h *Hub) getConnections(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("deviceId")
	out := []connectionJSON{}
	for _, c := range h.Connections() {
		if filter != "" && c.DeviceID != filter {
			continue
		}
		j := connectionJSON{DeviceID: c.DeviceID, ConnectedAt: c.ConnectedAt.UTC(), Reason: c.Reason,
			TokenExpiry: c.TokenExpiry.UTC(), APIVersion: c.APIVersion, ModelID: c.ModelID, Transport: c.Transport,
			CleanSession: c.CleanSession}
		if !c.DisconnectedAt.IsZero() {
			t := c.DisconnectedAt.UTC()
			j.DisconnectedAt = &t
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, map[string]any{"connections": out})
}

// postFaults applies {"clear":true} first, then the other hub faults; keys
// the hub does not know go to Options.ExtraFaults (400 when it is nil).
func (h *Hub) postFaults(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if !readBody(w, r, &body) {
		return
	}
	if body == nil {
		writeError(w, http.StatusBadRequest, 400004, "faults body must be a JSON object")
		return
	}
	var (
		clear    bool
		drop     *string
		refuse   *int
		withhold *float64
		extra    = map[string]any{}
	)
	for k, v := range body {
		var err error
		switch k {
		case "clear":
			err = json.Unmarshal(v, &clear)
		case "dropConnections":
			err = json.Unmarshal(v, &drop)
			if err == nil && drop != nil && *drop == "" {
				err = errors.New(`want a device id or "*"`)
			}
		case "refuseConnects":
			err = json.Unmarshal(v, &refuse)
			if err == nil && refuse != nil && *refuse < 0 {
				err = errors.New("must be >= 0")
			}
		case "withholdPubacksSeconds":
			err = json.Unmarshal(v, &withhold)
			if err == nil && withhold != nil && (*withhold < 0 || *withhold > 7*24*3600) {
				err = errors.New("must be between 0 and 604800")
			}
		default:
			var x any
			err = json.Unmarshal(v, &x)
			extra[k] = x
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, 400004, fmt.Sprintf("fault %q: %v", k, err))
			return
		}
	}
	if len(extra) > 0 {
		if h.opts.ExtraFaults == nil {
			keys := make([]string, 0, len(extra))
			for k := range extra {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			writeError(w, http.StatusBadRequest, 400004, "unknown fault keys "+strings.Join(keys, ", ")+
				": want dropConnections, refuseConnects, withholdPubacksSeconds, clear")
			return
		}
		if err := h.opts.ExtraFaults(extra); err != nil {
			writeError(w, http.StatusBadRequest, 400004, err.Error())
			return
		}
	}
	if clear {
		h.ClearFaults()
	}
	if refuse != nil {
		h.RefuseConnects(*refuse)
	}
	if withhold != nil {
		h.WithholdPubacks(time.Duration(*withhold * float64(time.Second)))
	}
	if drop != nil {
		id := *drop
		if id == "*" {
			id = ""
		}
		h.DropConnections(id)
	}
	h.mu.Lock()
	state := map[string]any{"refuseConnects": h.refuse, "withholdPubacksUntil": nil}
	if !h.withholdUntil.IsZero() {
		state["withholdPubacksUntil"] = h.withholdUntil.UTC()
	}
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, state)
}
