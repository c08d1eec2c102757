package main

import (
	"github.com/fieldgate/fieldgate/internal/testlog"

	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/sas"
)

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

func TestPrintMessage(t *testing.T) {
	tests := []struct {
		name string
		m    message
		want string
	}{
		{"records", message{N: 1, DeviceID: "dev1", Body: `{"records":[{"seq":42,"ts":"2026-11-22T10:00:00.123Z","sensor":"env","values":{"temperature_c":21.4,"humidity_pct":40}},{"seq":43,"ts":"t","sensor":"power","values":{"voltage_v":5.1}}]}`},
			"dev1 seq=42 ts=2026-11-22T10:00:00.123Z sensor=env humidity_pct=40 temperature_c=21.4\ndev1 seq=43 ts=t sensor=power voltage_v=5.1\n"},
		{"base64 body", message{N: 2, DeviceID: "dev1", BodyBase64: "eyJyZWNvcmRzIjpbeyJzZXEiOjEsInRzIjoieCIsInNlbnNvciI6InMiLCJ2YWx1ZXMiOnsiYSI6MX19XX0="},
			"dev1 seq=1 ts=x sensor=s a=1\n"},
		{"not records", message{N: 7, DeviceID: "dev2", Body: "hello"}, "dev2 n=7 body=\"hello\"\n"},
		{"no seq", message{N: 8, DeviceID: "d", Body: `{"records":[{"sensor":"s","values":{}}]}`}, "d seq=? ts= sensor=s\n"},
		{"odd strings", message{N: 9, DeviceID: "d", Body: "{\"records\":[{\"seq\":1,\"sensor\":\"a\\nb\",\"values\":{\"x y\":[1,\n 2]}}]}"}, "d seq=1 ts= sensor=\"a\\nb\" \"x y\"=[1,2]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printMessage(&b, tt.m)
			if b.String() != tt.want {
				t.Fatalf("printMessage = %q; want %q", b.String(), tt.want)
			}
		})
	}
}

// fakeMessages serves GET /emulator/messages over TLS, checking the service
// SAS like the emulator does.
type fakeMessages struct {
	mu    sync.Mutex // guards msgs and polls
	msgs  []message
	polls int
}

func (f *fakeMessages) pollCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polls
}

func (f *fakeMessages) add(m message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m.N = int64(len(f.msgs) + 1)
	f.msgs = append(f.msgs, m)
}

func startFakeMessages(t *testing.T, key *sas.Key) (*fakeMessages, string, *devcert.CA) {
	t.Helper()
	ca, err := devcert.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMessages{}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := sas.Parse(r.Header.Get("Authorization"))
		if err == nil && tok.KeyName == "iothubowner" {
			err = sas.Verify(tok, key, "localhost", time.Now(), 0)
		} else if err == nil {
			err = errors.New("wrong skn")
		}
		if err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		dev := r.URL.Query().Get("deviceId")
		f.mu.Lock()
		f.polls++
		page := messagesPage{Messages: []message{}, Next: int64(len(f.msgs))}
		for _, m := range f.msgs {
			if m.N > after && (dev == "" || m.DeviceID == dev) {
				page.Messages = append(page.Messages, m)
			}
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(page)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f, "https://" + ln.Addr().String(), ca
}

func TestWatch(t *testing.T) {
	key, _ := sas.ParseKey("c2VydmljZS1rZXktc2VydmljZS1rZXktc2VydmljZS0x")
	wrong, _ := sas.ParseKey("d3Jvbmcta2V5")
	rec := func(seq int) string {
		return `{"records":[{"seq":` + strconv.Itoa(seq) + `,"ts":"t","sensor":"env","values":{"v":1}}]}`
	}
	tests := []struct {
		name    string
		all     bool
		device  string
		key     *sas.Key
		want    []string
		notWant []string
		wantErr bool
	}{
		{name: "all", all: true, key: key, want: []string{"dev1 seq=1 ", "dev2 seq=2 ", "dev1 seq=3 "}},
		{name: "new only", key: key, want: []string{"dev1 seq=3 "}, notWant: []string{"seq=1 ", "seq=2 "}},
		{name: "one device", all: true, device: "dev2", key: key, want: []string{"dev2 seq=2 "}, notWant: []string{"dev1"}},
		{name: "wrong key", all: true, key: wrong, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, url, ca := startFakeMessages(t, key)
			f.add(message{DeviceID: "dev1", Body: rec(1)})
			f.add(message{DeviceID: "dev2", Body: rec(2)})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &testlog.Buffer{}
			done := make(chan error, 1)
			go func() {
				done <- watch(ctx, watchOptions{
					BaseURL: url, ServerName: "localhost", RootCAs: ca.Pool(), HubHost: "localhost",
					PolicyName: "iothubowner", PolicyKey: tt.key, DeviceID: tt.device, All: tt.all,
					Interval: 20 * time.Millisecond, Clock: clockwork.NewRealClock(),
				}, out)
			}()
			if tt.wantErr {
				select {
				case err := <-done:
					if !errors.Is(err, errUnauthorized) {
						t.Fatalf("watch error = %v; want errUnauthorized", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("watch did not stop on a refused token")
				}
				return
			}
			// The first poll happens before the new message arrives.
			if !eventually(t, 5*time.Second, func() bool { return f.pollCount() >= 1 }) {
				t.Fatal("watch never polled")
			}
			f.add(message{DeviceID: "dev1", Body: rec(3)})
			for _, w := range tt.want {
				if !eventually(t, 5*time.Second, func() bool { return strings.Contains(out.String(), w) }) {
					t.Fatalf("watch output lacks %q:\n%s", w, out)
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("watch returned %v after cancel; want nil", err)
			}
			for _, nw := range tt.notWant {
				if strings.Contains(out.String(), nw) {
					t.Errorf("watch output has %q:\n%s", nw, out)
				}
			}
			if n := strings.Count(out.String(), "seq=3 "); n != 1 && tt.device != "dev2" {
				t.Errorf("record 3 printed %d times; want once", n)
			}
		})
	}
}

func TestDialAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:8443", "127.0.0.1:8443"},
		{":8443", "127.0.0.1:8443"},
		{"0.0.0.0:8443", "127.0.0.1:8443"},
		{"[::]:8443", "127.0.0.1:8443"},
		{"localhost:1", "localhost:1"},
		{"bad", "bad"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := dialAddr(tt.in); got != tt.want {
				t.Fatalf("dialAddr(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzPrintMessage feeds arbitrary message bodies (outside input from the
// emulator's log) to the watch printer: it must not panic and must print at
// least one line, each naming the device.
func FuzzPrintMessage(f *testing.F) {
	f.Add(`{"records":[{"seq":1,"ts":"t","sensor":"s","values":{"a":1}}]}`, "")
	f.Add(`{"records":[{"seq":"x"}]}`, "")
	f.Add("", "e30=")
	f.Add("\x00\xff", "!!")
	f.Add("{\"records\":[{\"sensor\":\"a\\nb\",\"values\":{\"x y\":[1,\n2]}}]}", "")
	f.Fuzz(func(t *testing.T, body, b64 string) {
		var b bytes.Buffer
		printMessage(&b, message{N: 1, DeviceID: "dev", Body: body, BodyBase64: b64})
		lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
		if b.Len() == 0 || !strings.HasSuffix(b.String(), "\n") {
			t.Fatalf("printMessage printed %q; want whole lines", b.String())
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, "dev ") {
				t.Fatalf("line %q does not start with the device id", l)
			}
		}
	})
}

func TestWatchRetriesUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	key, _ := sas.ParseKey("c2VydmljZS1rZXk=")
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- watch(ctx, watchOptions{BaseURL: "https://" + addr, ServerName: "localhost", HubHost: "localhost",
			PolicyName: "iothubowner", PolicyKey: key, Interval: 10 * time.Millisecond, Clock: clockwork.NewRealClock(),
			Logger: slog.New(slog.NewTextHandler(logs, nil))}, io.Discard)
	}()
	if !eventually(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "emulator not reachable") }) {
		t.Fatalf("watch logged no warning for an unreachable emulator:\n%s", logs)
	}
	select {
	case err := <-done:
		t.Fatalf("watch gave up on an unreachable emulator: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch after cancel = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not stop after cancel")
	}
	if n := strings.Count(logs.String(), "emulator not reachable"); n != 1 {
		t.Errorf("warning logged %d times; want once per outage", n)
	}
}
