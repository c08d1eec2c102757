package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/agent/hub"
	"github.com/fieldgate/fieldgate/agent/telemetry"
)

// pendingBatch is how many records the publisher reads from the spool at a
// time; a 4 KB message holds about 40 typical records.
const pendingBatch = 256

// publisher moves records from the spool to the hub, oldest first, one
// message in flight at a time, acknowledging records in the spool only after
// the PUBACK of the message that carried them on the connection it was sent
// on. After a reconnect everything still in the spool is sent again.
type publisher struct {
	a *Agent

	// mu guards hc.
	mu sync.Mutex
	hc *hub.Client

	running sync.Mutex // held while run is active: one loop at a time
}

func newPublisher(a *Agent) *publisher { return &publisher{a: a} }

func (p *publisher) attach(hc *hub.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hc = hc
}

func (p *publisher) client() *hub.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hc
}

func (p *publisher) run(ctx context.Context) {
	if !p.running.TryLock() {
		return // the loop of a previous hub client is still running and picks up the new client
	}
	defer p.running.Unlock()
	a := p.a
	cfg := a.cfg.Telemetry
	minGap := time.Duration(0)
	if cfg.MaxMessagesPerSecond > 0 {
		minGap = time.Duration(float64(time.Second) / cfg.MaxMessagesPerSecond)
	}
	var lastSend time.Time
	for ctx.Err() == nil {
		hc := p.client()
		if hc == nil {
			return
		}
		conn, err := hc.WaitConn(ctx)
		if err != nil {
			return
		}
		a.setStatus("connected to " + hc.Status().Host)
		waited := false
		for ctx.Err() == nil && hc == p.client() {
			recs, err := a.spool.Pending(0, pendingBatch)
			if err != nil {
				a.log.Error("reading the spool", "err", err)
				if !sleepCtx(ctx, a, time.Second) {
					return
				}
				continue
			}
			if len(recs) == 0 {
				waited = false
				a.setStatus("connected to " + hc.Status().Host + ", spool empty")
				select {
				case <-ctx.Done():
					return
				case <-conn.Lost():
				case <-a.appended:
					continue
				}
				break
			}
			msg, n, err := telemetry.Pack(recs, cfg.MaxMessageBytes)
			if err != nil {
				a.log.Error("record cannot be sent; quarantining it", "seq", recs[0].Seq, "err", err)
				_ = a.spool.Ack(recs[0].Seq)
				continue
			}
			// Batch window: a message with room left waits once for more
			// readings, so low-rate sensors still share a message.
			if n == len(recs) && msg.Size() < cfg.MaxMessageBytes*3/4 && !waited && cfg.BatchWindow.Duration > 0 {
				waited = true
				select {
				case <-ctx.Done():
					return
				case <-conn.Lost():
				case <-a.clk.After(cfg.BatchWindow.Duration):
				}
				continue
			}
			waited = false
			if gap := minGap - a.clk.Since(lastSend); minGap > 0 && !lastSend.IsZero() && gap > 0 {
				if !sleepCtx(ctx, a, gap) {
					return
				}
			}
			lastSend = a.clk.Now()
			err = conn.Publish(ctx, hub.Message{Body: msg.Body, Properties: msg.Properties})
			if err != nil {
				if errors.Is(err, hub.ErrConnectionLost) || ctx.Err() != nil {
					a.log.Info("connection lost with a message in flight; it will be sent again", "records", n)
					break
				}
				a.log.Warn("publish failed", "err", err)
				if !sleepCtx(ctx, a, time.Second) {
					return
				}
				break
			}
			if err := a.spool.Ack(msg.Seqs...); err != nil {
				a.log.Error("acknowledging records in the spool (they may be sent twice)", "err", err)
			}
			a.mu.Lock()
			a.published += uint64(len(msg.Seqs))
			a.messages++
			a.mu.Unlock()
		}
	}
}

func sleepCtx(ctx context.Context, a *Agent, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-a.clk.After(d):
		return true
	}
}
