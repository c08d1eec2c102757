package ntptest

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/beevik/ntp"
)

func query(t *testing.T, s *Server, timeout time.Duration, version int) (*ntp.Response, error) {
	t.Helper()
	return ntp.QueryWithOptions(s.Addr(), ntp.QueryOptions{Timeout: timeout, Version: version})
}

func TestStart_answersValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		version int
		wantErr error // from Validate
		stratum uint8
		leap    ntp.LeapIndicator
		kiss    string
	}{
		{name: "default", opts: Options{}, version: 4, stratum: 2},
		{name: "v3", opts: Options{}, version: 3, stratum: 2},
		{name: "stratum1", opts: Options{Stratum: 1}, version: 4, stratum: 1},
		{name: "leap_add", opts: Options{Leap: 1}, version: 4, stratum: 2, leap: ntp.LeapAddSecond},
		{name: "kiss_of_death", opts: Options{KissCode: "RATE"}, version: 4, wantErr: ntp.ErrKissOfDeath, kiss: "RATE"},
		{name: "stratum16", opts: Options{Stratum: 16}, version: 4, wantErr: ntp.ErrInvalidStratum, stratum: 16},
		{name: "leap_not_in_sync", opts: Options{Leap: 3}, version: 4, wantErr: ntp.ErrInvalidLeapSecond, stratum: 2, leap: ntp.LeapNotInSync},
		{name: "stale_reference", opts: Options{ReferenceAge: 48 * time.Hour}, version: 4, wantErr: ntp.ErrServerClockFreshness, stratum: 2},
		{name: "reference_in_future", opts: Options{ReferenceAge: -time.Hour}, version: 4, wantErr: ntp.ErrInvalidTime, stratum: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Start(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			r, err := query(t, s, 2*time.Second, tc.version)
			if err != nil {
				t.Fatalf("Query(%s) error = %v; want nil", s.Addr(), err)
			}
			if got := r.Validate(); !errors.Is(got, tc.wantErr) {
				t.Errorf("Validate() = %v; want %v", got, tc.wantErr)
			}
			if r.Stratum != tc.stratum {
				t.Errorf("Stratum = %d; want %d", r.Stratum, tc.stratum)
			}
			if r.Leap != tc.leap {
				t.Errorf("Leap = %d; want %d", r.Leap, tc.leap)
			}
			if r.KissCode != tc.kiss {
				t.Errorf("KissCode = %q; want %q", r.KissCode, tc.kiss)
			}
			if r.Version != tc.version {
				t.Errorf("Version = %d; want %d", r.Version, tc.version)
			}
			if abs(r.ClockOffset) > 50*time.Millisecond {
				t.Errorf("ClockOffset = %v; want ~0", r.ClockOffset)
			}
			if got := s.Requests(); got != 1 {
				t.Errorf("Requests() = %d; want 1", got)
			}
		})
	}
}

func TestServer_offset(t *testing.T) {
	for _, off := range []time.Duration{2 * time.Hour, -2 * time.Hour, 1500 * time.Millisecond} {
		t.Run(off.String(), func(t *testing.T) {
			s, err := Start(Options{Offset: off})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			r, err := query(t, s, 2*time.Second, 4)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Validate(); err != nil {
				t.Fatalf("Validate() = %v; want nil", err)
			}
			if d := abs(r.ClockOffset - off); d > 50*time.Millisecond {
				t.Errorf("ClockOffset = %v; want %v ± 50ms", r.ClockOffset, off)
			}
			s.SetOffset(-off)
			r, err = query(t, s, 2*time.Second, 4)
			if err != nil {
				t.Fatal(err)
			}
			if d := abs(r.ClockOffset + off); d > 50*time.Millisecond {
				t.Errorf("after SetOffset: ClockOffset = %v; want %v ± 50ms", r.ClockOffset, -off)
			}
		})
	}
}

func TestServer_nowInjected(t *testing.T) {
	base := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	s, err := Start(Options{Now: func() time.Time { return base }, Offset: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := query(t, s, 2*time.Second, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := base.Add(time.Minute)
	if got := r.Timestamps.ServerXmit; !got.Equal(want) {
		t.Errorf("ServerXmit = %v; want %v", got, want)
	}
	if got := r.ReferenceTime; !got.Equal(want) {
		t.Errorf("ReferenceTime = %v; want %v", got, want)
	}
}

func TestServer_drop(t *testing.T) {
	s, err := Start(Options{Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = query(t, s, 200*time.Millisecond, 4)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Query on dropping server error = %v; want a timeout", err)
	}
	if got := s.Requests(); got != 1 {
		t.Errorf("Requests() = %d; want 1 (dropped requests are counted)", got)
	}
	s.SetDrop(false)
	if _, err := query(t, s, 2*time.Second, 4); err != nil {
		t.Fatalf("Query after SetDrop(false) error = %v; want nil", err)
	}
	if got := s.Requests(); got != 2 {
		t.Errorf("Requests() = %d; want 2", got)
	}
}

func TestServer_ignoresMalformed(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	server := make([]byte, 48)
	server[0] = 4<<3 | 4 // a server-mode packet sent to the server
	v2 := make([]byte, 48)
	v2[0] = 2<<3 | 3
	for _, p := range [][]byte{{}, {0x23}, make([]byte, 47), server, v2} {
		if _, err := c.Write(p); err != nil && len(p) > 0 {
			t.Fatal(err)
		}
	}
	// A valid request still works afterwards, and only it was counted.
	if _, err := query(t, s, 2*time.Second, 4); err != nil {
		t.Fatalf("Query after garbage error = %v; want nil", err)
	}
	if got := s.Requests(); got != 1 {
		t.Errorf("Requests() = %d; want 1", got)
	}
}

func TestStart_badKissCode(t *testing.T) {
	if _, err := Start(Options{KissCode: "TOOLONG"}); err == nil {
		t.Fatal("Start(KissCode TOOLONG) error = nil; want error")
	}
}

func TestClose_idempotent(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
}

func TestParseRequest(t *testing.T) {
	valid := func(first byte) []byte {
		b := make([]byte, 48)
		b[0] = first
		b[2] = 6
		binary.BigEndian.PutUint64(b[40:], 0x0102030405060708)
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		wantErr bool
		want    request
	}{
		{name: "v4", in: valid(4<<3 | 3), want: request{Version: 4, Poll: 6, Transmit: 0x0102030405060708}},
		{name: "v3", in: valid(3<<3 | 3), want: request{Version: 3, Poll: 6, Transmit: 0x0102030405060708}},
		{name: "with_mac", in: append(valid(4<<3|3), make([]byte, 20)...), want: request{Version: 4, Poll: 6, Transmit: 0x0102030405060708}},
		{name: "short", in: valid(4<<3 | 3)[:47], wantErr: true},
		{name: "empty", in: nil, wantErr: true},
		{name: "v5", in: valid(5<<3 | 3), wantErr: true},
		{name: "v2", in: valid(2<<3 | 3), wantErr: true},
		{name: "server_mode", in: valid(4<<3 | 4), wantErr: true},
		{name: "broadcast_mode", in: valid(4<<3 | 5), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRequest(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseRequest() error = %v; wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("parseRequest() = %+v; want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseRequest(f *testing.F) {
	seed := make([]byte, 48)
	seed[0] = 4<<3 | 3
	f.Add(seed)
	f.Add([]byte{})
	f.Add(make([]byte, 47))
	f.Add(append(seed, 1, 2, 3, 4))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseRequest(b)
		if err != nil {
			return
		}
		if req.Version != 3 && req.Version != 4 {
			t.Fatalf("accepted version %d", req.Version)
		}
		resp := buildResponse(req, Options{}, time.Unix(1, 0), time.Unix(2, 0))
		if len(resp) != 48 || resp[0]&7 != 4 || binary.BigEndian.Uint64(resp[24:]) != req.Transmit {
			t.Fatalf("bad response %x to %x", resp, b)
		}
	})
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
