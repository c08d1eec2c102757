// Package ntptest provides a real NTP (SNTP v3/v4) server on UDP loopback for
// tests: agent time-sync tests, end-to-end agent tests and `fieldgate doctor`
// tests point their NTP client at Server.Addr and control what the server
// claims (offset, stratum, leap indicator, kiss-of-death, reference age) or
// make it silent.
//
// Only test code should import this package; it has no place in a production
// binary.
package ntptest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// packetSize is the size of an NTP v3/v4 header without extension fields or
// MAC.
const packetSize = 48

// ntpEpochOffset is the number of seconds from 1900-01-01 (NTP era 0) to
// 1970-01-01 (Unix epoch).
const ntpEpochOffset = 2208988800

// Options shapes what the server answers. The zero value is a healthy
// stratum-2 server that reports the real time.
type Options struct {
	// Offset is added to Now: the server's time is Now() + Offset.
	Offset time.Duration
	// Stratum reported in answers; 0 means 2. Use 16 for "unsynchronized".
	// Ignored when KissCode is set.
	Stratum uint8
	// Leap is the leap indicator (0 none, 1 add second, 2 delete second,
	// 3 not in sync). Only the low two bits are used.
	Leap uint8
	// KissCode, when non-empty, makes every answer a kiss-of-death packet:
	// stratum 0 with the code (up to 4 ASCII characters, e.g. "RATE", "DENY")
	// in the reference ID.
	KissCode string
	// ReferenceAge is how long ago the server claims its clock was last
	// set: reference time = server time − ReferenceAge. Use more than 36 h to
	// make clients reject the answer as stale; a negative value puts the
	// reference time in the future (also invalid).
	ReferenceAge time.Duration
	// Now is the server's base clock; nil means time.Now.
	Now func() time.Time
	// Drop makes the server count requests but never answer them.
	Drop bool
}

// Server is a running NTP responder bound to 127.0.0.1 on a free UDP port.
type Server struct {
	conn *net.UDPConn
	done chan struct{}

	closeOnce sync.Once

	// mu guards opts and requests.
	mu       sync.Mutex
	opts     Options
	requests int
}

// Start opens a UDP socket on 127.0.0.1 port 0 and serves NTP requests until
// Close.
func Start(opts Options) (*Server, error) {
	if len(opts.KissCode) > 4 {
		return nil, fmt.Errorf("ntptest: kiss code %q is longer than 4 characters; use a code such as \"RATE\" or \"DENY\"", opts.KissCode)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0})
	if err != nil {
		return nil, fmt.Errorf("ntptest: listen on 127.0.0.1 udp: %w", err)
	}
	s := &Server{conn: conn, done: make(chan struct{}), opts: opts}
	go s.serve()
	return s, nil
}

// Addr returns the server address as "127.0.0.1:port".
func (s *Server) Addr() string { return s.conn.LocalAddr().String() }

// Requests returns how many well-formed client requests the server has
// received (answered or dropped).
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// SetOffset changes the offset of the server's clock for later answers.
func (s *Server) SetOffset(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Offset = d
}

// SetDrop switches between answering (false) and silently dropping (true)
// requests, to simulate a server that goes away and comes back.
func (s *Server) SetDrop(drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Drop = drop
}

// Close stops the server and waits for its goroutine to exit. It is safe to
// call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.conn.Close()
		<-s.done
	})
}

func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, 1024)
	for {
		n, addr, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.mu.Lock()
		opts := s.opts
		s.mu.Unlock()
		recv := serverTime(opts)
		req, err := parseRequest(buf[:n])
		if err != nil {
			continue // not a client request: ignore, like a real server would
		}
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		if opts.Drop {
			continue
		}
		resp := buildResponse(req, opts, recv, serverTime(opts))
		_, _ = s.conn.WriteToUDP(resp, addr)
	}
}

func serverTime(opts Options) time.Time {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	return now().Add(opts.Offset)
}

// request is the part of a client packet the server needs.
type request struct {
	Version  uint8
	Poll     int8
	Transmit uint64 // client transmit timestamp, echoed as origin
}

// errNotClientRequest is returned by parseRequest for anything that is not a
// v3/v4 client-mode packet.
var errNotClientRequest = errors.New("ntptest: not an NTP v3/v4 client request")

// parseRequest decodes a client packet: at least 48 bytes (extension fields
// or a MAC may follow and are ignored), version 3 or 4, mode 3 (client).
func parseRequest(b []byte) (request, error) {
	if len(b) < packetSize {
		return request{}, fmt.Errorf("%w: %d bytes, want at least %d", errNotClientRequest, len(b), packetSize)
	}
	version := (b[0] >> 3) & 0x7
	mode := b[0] & 0x7
	if version != 3 && version != 4 {
		return request{}, fmt.Errorf("%w: version %d", errNotClientRequest, version)
	}
	if mode != 3 {
		return request{}, fmt.Errorf("%w: mode %d", errNotClientRequest, mode)
	}
	return request{
		Version:  version,
		Poll:     int8(b[2]),
		Transmit: binary.BigEndian.Uint64(b[40:48]),
	}, nil
}

// buildResponse encodes a server-mode (4) answer to req.
func buildResponse(req request, opts Options, recv, xmit time.Time) []byte {
	b := make([]byte, packetSize)
	stratum := opts.Stratum
	if stratum == 0 {
		stratum = 2
	}
	refID := uint32(0x7f000001) // stratum ≥ 2: IPv4 address of the upstream
	if stratum == 1 {
		refID = binary.BigEndian.Uint32([]byte("GPS\x00"))
	}
	if opts.KissCode != "" {
		stratum = 0
		var code [4]byte
		copy(code[:], opts.KissCode)
		refID = binary.BigEndian.Uint32(code[:])
	}
	b[0] = (opts.Leap&0x3)<<6 | req.Version<<3 | 4
	b[1] = stratum
	b[2] = byte(req.Poll)
	b[3] = byte(0xec)                         // precision 2^-20 s ≈ 1 µs
	binary.BigEndian.PutUint32(b[4:], 0x0041) // root delay ≈ 1 ms (Q16.16)
	binary.BigEndian.PutUint32(b[8:], 0x0041) // root dispersion ≈ 1 ms
	binary.BigEndian.PutUint32(b[12:], refID) // reference ID / kiss code
	binary.BigEndian.PutUint64(b[16:], toNTP(xmit.Add(-opts.ReferenceAge)))
	binary.BigEndian.PutUint64(b[24:], req.Transmit)
	binary.BigEndian.PutUint64(b[32:], toNTP(recv))
	binary.BigEndian.PutUint64(b[40:], toNTP(xmit))
	return b
}

// toNTP converts t to a 64-bit NTP timestamp (seconds since 1900 in the
// upper 32 bits, wrapping at era boundaries; binary fraction in the lower).
func toNTP(t time.Time) uint64 {
	secs := uint64(t.Unix()+ntpEpochOffset) & 0xffffffff
	frac := (uint64(t.Nanosecond()) << 32) / uint64(time.Second)
	return secs<<32 | frac
}
