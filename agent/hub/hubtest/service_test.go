package hubtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

type svc struct {
	t     *testing.T
	url   string
	token string
}

func newSvc(t *testing.T, h *Hub) *svc {
	t.Helper()
	srv := httptest.NewServer(h.ServiceHandler())
	t.Cleanup(srv.Close)
	tok, err := h.ServiceToken(time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &svc{t: t, url: srv.URL, token: tok}
}

// do sends a request and decodes a JSON reply into out (when not nil).
func (s *svc) do(method, path, body string, hdr map[string]string, out any) int {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if s.token != "" {
		req.Header.Set("Authorization", s.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var e errorBody
		if err := json.Unmarshal(b, &e); err != nil || e.ErrorCode/1000 != resp.StatusCode || e.Message == "" {
			s.t.Fatalf("%s %s: error body %s is not {errorCode,message} for status %d", method, path, b, resp.StatusCode)
		}
		if out != nil {
			if p, ok := out.(*errorBody); ok {
				*p = e
			}
		}
		return resp.StatusCode
	}
	if _, isErr := out.(*errorBody); out != nil && !isErr && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: reply %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

func TestServiceAuth(t *testing.T) {
	h := startHub(t, Options{})
	s := newSvc(t, h)
	key, _ := sas.ParseKey(h.ServicePolicy().Key)
	other, _ := sas.ParseKey(newKey())
	mk := func(sr, name string, exp time.Time, k *sas.Key) string {
		tok, err := sas.New(sr, name, exp.Unix(), k)
		if err != nil {
			t.Fatal(err)
		}
		return tok.String()
	}
	soon := time.Now().Add(time.Hour)
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"valid", s.token, 200},
		{"valid with encoded hub in other case", mk(strings.ToUpper(testHub), "iothubowner", soon, key), 200},
		{"missing", "", 401},
		{"garbage", "Bearer x", 401},
		{"wrong key", mk(testHub, "iothubowner", soon, other), 401},
		{"wrong key name", mk(testHub, "service", soon, key), 401},
		{"no key name", mk(testHub, "", soon, key), 401},
		{"expired", mk(testHub, "iothubowner", time.Now().Add(-time.Minute), key), 401},
		{"sr for another hub", mk("other-hub", "iothubowner", soon, key), 401},
		{"sr narrower than the hub", mk(testHub+"/devices/d1", "iothubowner", soon, key), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *s
			c.t, c.token = t, tt.token
			for _, path := range []string{"/devices", "/emulator/connections?api-version=2021-04-12"} {
				var e errorBody
				if got := c.do("GET", path, "", nil, &e); got != tt.want {
					t.Fatalf("GET %s = %d; want %d", path, got, tt.want)
				}
				if tt.want == 401 && (e.ErrorCode != 401002 || strings.Contains(e.Message, "sig=")) {
					t.Fatalf("401 body = %+v", e)
				}
			}
		})
	}
	// Unknown paths are 404 only for authorized callers.
	if got := s.do("GET", "/nope", "", nil, nil); got != 404 {
		t.Fatalf("GET /nope = %d", got)
	}
	c := *s
	c.token = ""
	if got := c.do("GET", "/nope", "", nil, nil); got != 401 {
		t.Fatalf("unauthorized GET /nope = %d", got)
	}
}

func TestServiceDevices(t *testing.T) {
	h := startHub(t, Options{})
	s := newSvc(t, h)
	var dev deviceJSON
	if got := s.do("PUT", "/devices/dev1?api-version=2021-04-12", `{"deviceId":"dev1"}`, nil, &dev); got != 200 {
		t.Fatalf("PUT = %d", got)
	}
	if dev.DeviceID != "dev1" || dev.Status != "enabled" || dev.Authentication.Type != "sas" ||
		dev.Authentication.SymmetricKey.PrimaryKey == "" || dev.Authentication.SymmetricKey.SecondaryKey == "" ||
		dev.ConnectionState != "Disconnected" || dev.ETag == "" {
		t.Fatalf("created device = %+v", dev)
	}
	// The generated key works for MQTT.
	d := connectDevice(t, h, "dev1", dev.Authentication.SymmetricKey.PrimaryKey)
	var got deviceJSON
	if s.do("GET", "/devices/dev1", "", nil, &got); got.ConnectionState != "Connected" {
		t.Fatalf("GET connected device = %+v", got)
	}
	pk := newKey()
	body := `{"deviceId":"dev1","status":"disabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + pk + `","secondaryKey":""}}}`
	if code := s.do("PUT", "/devices/dev1", body, map[string]string{"If-Match": `"wrong"`}, nil); code != 412 {
		t.Fatalf("PUT with stale If-Match = %d; want 412", code)
	}
	if code := s.do("PUT", "/devices/dev1", body, map[string]string{"If-Match": `"` + got.ETag + `"`}, &got); code != 200 ||
		got.Status != "disabled" || got.Authentication.SymmetricKey.PrimaryKey != pk || got.ETag == dev.ETag {
		t.Fatalf("PUT update = %d %+v", code, got)
	}
	eventually(t, 5*time.Second, "disabling closes the connection", d.connectionLost)

	var list []deviceJSON
	if s.do("GET", "/devices", "", nil, &list); len(list) != 1 {
		t.Fatalf("GET /devices = %+v", list)
	}
	bad := []struct {
		name, path, body string
		want             int
	}{
		{"malformed JSON", "/devices/dev2", `{"deviceId":`, 400},
		{"trailing data", "/devices/dev2", `{} {}`, 400},
		{"id mismatch", "/devices/dev2", `{"deviceId":"dev3"}`, 400},
		{"bad status", "/devices/dev2", `{"status":"paused"}`, 400},
		{"bad key", "/devices/dev2", `{"authentication":{"symmetricKey":{"primaryKey":"!!"}}}`, 400},
		{"x509", "/devices/dev2", `{"authentication":{"type":"selfSigned"}}`, 400},
		{"bad id", "/devices/a%23b", `{}`, 400},
		{"oversized", "/devices/dev2", `{"x":"` + strings.Repeat("a", maxServiceBody) + `"}`, 413},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.do("PUT", tt.path, tt.body, nil, nil); got != tt.want {
				t.Fatalf("PUT %s %s = %d; want %d", tt.path, clip(tt.body), got, tt.want)
			}
		})
	}
	if code := s.do("POST", "/devices/dev1", "{}", nil, nil); code != 405 {
		t.Fatalf("POST /devices/dev1 = %d; want 405", code)
	}
	if code := s.do("DELETE", "/devices/dev1", "", nil, nil); code != 204 {
		t.Fatalf("DELETE = %d", code)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if code := s.do(m, "/devices/dev1", "", nil, nil); code != 404 {
			t.Fatalf("%s deleted device = %d; want 404", m, code)
		}
	}
	if _, err := h.Twin("dev1"); err == nil {
		t.Fatal("twin survived device deletion")
	}
}

func TestServiceTwinAndMethods(t *testing.T) {
	h := startHub(t, Options{})
	s := newSvc(t, h)
	key := addDevice(t, h, "dev1")
	d := connectDevice(t, h, "dev1", key)
	d.subscribe(t, "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#")

	var twin struct {
		DeviceID   string         `json:"deviceId"`
		ETag       string         `json:"etag"`
		Tags       map[string]any `json:"tags"`
		Properties struct {
			Desired  map[string]any `json:"desired"`
			Reported map[string]any `json:"reported"`
		} `json:"properties"`
	}
	if code := s.do("PATCH", "/twins/dev1?api-version=2021-04-12", `{"properties":{"desired":{"interval":10}},"tags":{"site":"a"}}`, nil, &twin); code != 200 {
		t.Fatalf("PATCH twin = %d", code)
	}
	if twin.Properties.Desired["interval"] != 10.0 || twin.Properties.Desired["$version"] != 2.0 || twin.Tags["site"] != "a" {
		t.Fatalf("patched twin = %+v", twin)
	}
	if m := d.next(t, "$iothub/twin/PATCH/properties/desired/"); !strings.Contains(string(m.Payload), `"interval":10`) {
		t.Fatalf("desired push = %s", m.Payload)
	}
	if s.do("GET", "/twins/dev1", "", nil, &twin); twin.DeviceID != "dev1" || twin.Properties.Reported["$version"] != 1.0 {
		t.Fatalf("GET twin = %+v", twin)
	}
	for _, tt := range []struct {
		body, hdr string
		want      int
	}{
		{`{"properties":{"desired":{"a":1}}}`, `"stale"`, 412},
		{`{"properties":{"reported":{"a":1}}}`, "", 400},
		{`{}`, "", 400},
		{`{"properties":{"desired":{"a.b":1}}}`, "", 400},
		{`{"properties":{"desired":"x"}}`, "", 400},
	} {
		hdr := map[string]string{}
		if tt.hdr != "" {
			hdr["If-Match"] = tt.hdr
		}
		if code := s.do("PATCH", "/twins/dev1", tt.body, hdr, nil); code != tt.want {
			t.Fatalf("PATCH %s = %d; want %d", tt.body, code, tt.want)
		}
	}
	if code := s.do("GET", "/twins/ghost", "", nil, nil); code != 404 {
		t.Fatalf("GET ghost twin = %d", code)
	}

	// Methods: the device answers in the background.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case m := <-d.in:
				if strings.HasPrefix(m.Topic, "$iothub/methods/POST/echo/") {
					d.Publish("$iothub/methods/res/201/"+m.Topic[strings.Index(m.Topic, "?"):], 0, false, m.Payload)
				}
			case <-stop:
				return
			}
		}
	}()
	var res MethodResult
	if code := s.do("POST", "/twins/dev1/methods", `{"methodName":"echo","payload":{"x":[1,2]},"responseTimeoutInSeconds":5}`, nil, &res); code != 200 ||
		res.Status != 201 || string(res.Payload) != `{"x":[1,2]}` {
		t.Fatalf("POST methods = %d %+v", code, res)
	}
	var e errorBody
	if code := s.do("POST", "/twins/dev1/methods", `{"methodName":"silent","responseTimeoutInSeconds":1}`, nil, &e); code != 504 || e.ErrorCode != 504101 {
		t.Fatalf("silent method = %d %+v; want 504", code, e)
	}
	addDevice(t, h, "dev2")
	if code := s.do("POST", "/twins/dev2/methods", `{"methodName":"x"}`, nil, &e); code != 404 || e.ErrorCode != 404103 {
		t.Fatalf("offline method = %d %+v; want 404 404103", code, e)
	}
	if code := s.do("POST", "/twins/ghost/methods", `{"methodName":"x"}`, nil, &e); code != 404 || e.ErrorCode != 404001 {
		t.Fatalf("unknown device method = %d %+v; want 404001", code, e)
	}
	for _, body := range []string{`{"methodName":"x","responseTimeoutInSeconds":0}`, `{"methodName":"x","responseTimeoutInSeconds":1.5}`,
		`{"methodName":"a/b"}`, `{"methodName":`} {
		if code := s.do("POST", "/twins/dev1/methods", body, nil, nil); code != 400 {
			t.Fatalf("POST methods %s = %d; want 400", body, code)
		}
	}
}

func TestServiceC2DMessagesConnectionsFaults(t *testing.T) {
	h := startHub(t, Options{})
	s := newSvc(t, h)
	key := addDevice(t, h, "dev1")
	var sent map[string]string
	if code := s.do("POST", "/devices/dev1/messages/deviceBound", `{"payload":{"led":true},"properties":{"k":"v"},"messageId":"c1"}`, nil, &sent); code != 200 || sent["messageId"] != "c1" {
		t.Fatalf("POST deviceBound = %d %v", code, sent)
	}
	if code := s.do("POST", "/devices/dev1/messages/deviceBound", `{"payload":"text"}`, nil, nil); code != 200 {
		t.Fatalf("POST deviceBound string = %d", code)
	}
	if code := s.do("POST", "/devices/ghost/messages/deviceBound", `{"payload":"x"}`, nil, nil); code != 404 {
		t.Fatalf("POST deviceBound ghost = %d", code)
	}
	if code := s.do("POST", "/devices/dev1/messages/deviceBound", `{"payload":`, nil, nil); code != 400 {
		t.Fatalf("POST deviceBound malformed = %d", code)
	}
	d := connectWith(t, h, "dev1", key, false)
	d.subscribe(t, "devices/dev1/messages/devicebound/#")
	// paho runs handlers concurrently, so arrival order is not checked.
	got := map[string]map[string]string{}
	for range 2 {
		m := d.next(t, "devices/dev1/messages/devicebound/")
		got[string(m.Payload)] = c2dBag(t, "dev1", m.Topic)
	}
	if bag, ok := got[`{"led":true}`]; !ok || bag["k"] != "v" || bag["$.mid"] != "c1" {
		t.Fatalf("object payload C2D missing or wrong: %v", got)
	}
	if _, ok := got["text"]; !ok {
		t.Fatalf("string payload C2D missing: %v", got)
	}

	d.publish(t, "devices/dev1/messages/events/%24.mid=t1&room=1", 1, []byte(`{"t":1}`))
	d.publish(t, "devices/dev1/messages/events/", 1, []byte{0xff, 0x00})
	var page struct {
		Messages []messageJSON `json:"messages"`
		Next     int           `json:"next"`
	}
	if code := s.do("GET", "/emulator/messages?deviceId=dev1&after=0", "", nil, &page); code != 200 || len(page.Messages) != 2 || page.Next != 2 {
		t.Fatalf("GET messages = %d %+v", code, page)
	}
	m0, m1 := page.Messages[0], page.Messages[1]
	if m0.N != 1 || m0.DeviceID != "dev1" || m0.Body == nil || *m0.Body != `{"t":1}` || m0.Properties["room"] != "1" ||
		m0.SystemProperties["$.mid"] != "t1" || m0.BodyBase64 != base64.StdEncoding.EncodeToString([]byte(`{"t":1}`)) {
		t.Fatalf("message 1 = %+v", m0)
	}
	if m1.Body != nil || m1.BodyBase64 != "/wA=" {
		t.Fatalf("binary message = %+v", m1)
	}
	if s.do("GET", "/emulator/messages?after=2", "", nil, &page); len(page.Messages) != 0 || page.Next != 2 {
		t.Fatalf("GET messages after=2 = %+v", page)
	}
	if s.do("GET", "/emulator/messages?deviceId=other", "", nil, &page); len(page.Messages) != 0 || page.Next != 2 {
		t.Fatalf("GET messages of another device = %+v", page)
	}
	if code := s.do("GET", "/emulator/messages?after=-1", "", nil, nil); code != 400 {
		t.Fatalf("after=-1 = %d", code)
	}

	var conns struct {
		Connections []map[string]any `json:"connections"`
	}
	if s.do("GET", "/emulator/connections?deviceId=dev1", "", nil, &conns); len(conns.Connections) != 1 ||
		conns.Connections[0]["transport"] != "mqtt" || conns.Connections[0]["disconnectedAt"] != nil ||
		conns.Connections[0]["apiVersion"] != "2021-04-12" {
		t.Fatalf("connections = %+v", conns)
	}

	var state map[string]any
	if code := s.do("POST", "/emulator/faults", `{"refuseConnects":2,"withholdPubacksSeconds":30}`, nil, &state); code != 200 ||
		state["refuseConnects"] != 2.0 || state["withholdPubacksUntil"] == nil {
		t.Fatalf("faults = %d %v", code, state)
	}
	if code := s.do("POST", "/emulator/faults", `{"dropConnections":"dev1"}`, nil, nil); code != 200 {
		t.Fatalf("drop = %d", code)
	}
	eventually(t, 5*time.Second, "dropped", d.connectionLost)
	if code := s.do("POST", "/emulator/faults", `{"clear":true}`, nil, &state); code != 200 || state["refuseConnects"] != 0.0 || state["withholdPubacksUntil"] != nil {
		t.Fatalf("clear = %d %v", code, state)
	}
	for _, body := range []string{`{"dps":{"status":429}}`, `{"refuseConnects":-1}`, `{"refuseConnects":"x"}`, `{"dropConnections":""}`, `[1]`, `null`, `{`} {
		if code := s.do("POST", "/emulator/faults", body, nil, nil); code != 400 {
			t.Fatalf("faults %s = %d; want 400", body, code)
		}
	}
}

func TestServiceExtraFaults(t *testing.T) {
	var got map[string]any
	h := startHub(t, Options{ExtraFaults: func(m map[string]any) error { got = m; return nil }})
	s := newSvc(t, h)
	if code := s.do("POST", "/emulator/faults", `{"dps":{"status":429,"count":3},"refuseConnects":1}`, nil, nil); code != 200 {
		t.Fatalf("faults = %d", code)
	}
	if dps, ok := got["dps"].(map[string]any); !ok || dps["status"] != 429.0 || len(got) != 1 {
		t.Fatalf("ExtraFaults got %v", got)
	}
	h.mu.Lock()
	refuse := h.refuse
	h.mu.Unlock()
	if refuse != 1 {
		t.Fatalf("refuse = %d", refuse)
	}
}

// FuzzServiceBodies feeds arbitrary bodies to every endpoint that reads one:
// the handler must answer (never panic) with a JSON reply and no 5xx.
func FuzzServiceBodies(f *testing.F) {
	for _, s := range []string{`{}`, `{"deviceId":"d1","status":"disabled"}`, `{"properties":{"desired":{"a":{"b":null}}}}`,
		`{"methodName":"m","payload":[1],"responseTimeoutInSeconds":1}`, `{"payload":"x","properties":{"k":"v"}}`,
		`{"clear":true,"refuseConnects":1}`, `{"withholdPubacksSeconds":1e400}`, `[`, `null`, "\x00"} {
		f.Add(s)
	}
	h, err := New(Options{HubHost: testHub})
	if err != nil {
		f.Fatal(err)
	}
	if err := h.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = h.Close() })
	if err := h.UpsertDevice("d1", newKey()); err != nil {
		f.Fatal(err)
	}
	tok, err := h.ServiceToken(time.Now().Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	handler := h.ServiceHandler()
	routes := [][2]string{{"PUT", "/devices/d1"}, {"PATCH", "/twins/d1"}, {"POST", "/twins/d1/methods"},
		{"POST", "/devices/d1/messages/deviceBound"}, {"POST", "/emulator/faults"}}
	f.Fuzz(func(t *testing.T, body string) {
		for _, r := range routes {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			req := httptest.NewRequestWithContext(ctx, r[0], r[1], bytes.NewBufferString(body))
			req.Header.Set("Authorization", tok)
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Code >= 500 || !json.Valid(rec.Body.Bytes()) && rec.Code != 204 {
				t.Fatalf("%s %s with %q: %d %s", r[0], r[1], body, rec.Code, rec.Body)
			}
		}
		h.ClearFaults()
		_ = h.UpsertDevice("d1", newKey()) // keep the device for the next input
	})
}
