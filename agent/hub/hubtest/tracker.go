package hubtest

import (
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tracker remembers every raw connection handed to the broker, so Close can
// end them all — including ones that never sent CONNECT — before it stops
// mochi. mochi v2.7.9's Server.Close can deadlock when a client is still
// being removed while it closes its listeners (Clients.GetByListener takes
// its read lock twice); with every connection gone first, that cannot happen.
//
// It also counts the broker sessions in flight (begin/end around mochi's
// EstablishConnection), so Close can wait for them: mochi's own ClientsWg is
// incremented inside the session goroutine, which races with a concurrent
// Wait (the race detector reports it); here the increment happens under mu
// and never after closeAll.
type tracker struct {
	// mu guards the fields below, and orders sessions.Add before Wait.
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	sessions sync.WaitGroup
}

// begin registers a broker session; false once the tracker is closed.
func (t *tracker) begin() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.sessions.Add(1)
	return true
}

func (t *tracker) end() { t.sessions.Done() }

// wrap returns establish counted as a session; connections arriving after
// closeAll are closed unserved.
func (t *tracker) wrap(establish listeners.EstablishFn) listeners.EstablishFn {
	return func(id string, c net.Conn) error {
		if !t.begin() {
			return c.Close()
		}
		defer t.end()
		return establish(id, c)
	}
}

// wait waits until every session has ended (call after closeAll).
func (t *tracker) wait() { t.sessions.Wait() }

// trackedNet is mochi's TCP listener with its sessions counted.
type trackedNet struct {
	*listeners.Net
	t *tracker
}

func (l trackedNet) Serve(establish listeners.EstablishFn) { l.Net.Serve(l.t.wrap(establish)) }

// add records c; it closes c and returns false once the tracker is closed.
func (t *tracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return false
	}
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tracker) remove(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
}

// closeAll closes every tracked connection and refuses new ones.
func (t *tracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// trackedListener records the connections it accepts.
type trackedListener struct {
	net.Listener
	t *tracker
}

func (l trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.t.add(c) {
			return &trackedConn{Conn: c, t: l.t}, nil
		}
	}
}

type trackedConn struct {
	net.Conn
	t    *tracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.t.remove(c.Conn) })
	return c.Conn.Close()
}
