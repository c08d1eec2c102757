package hwtest

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/hw"
)

func TestSensorScript(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("no device at 0x76")
	s := NewSensor("env", Step{Values: hw.Values{"t": 1}}, Step{Err: boom})
	s.Push(hw.Values{"t": 3})
	s.PushErr(boom)

	steps := []struct {
		name    string
		want    hw.Values
		wantErr error
	}{
		{"first scripted", hw.Values{"t": 1}, nil},
		{"scripted error", nil, boom},
		{"pushed values", hw.Values{"t": 3}, nil},
		{"pushed error", nil, boom},
		{"exhausted", nil, ErrExhausted},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			v, err := s.Read(ctx)
			if !errors.Is(err, st.wantErr) || !reflect.DeepEqual(v, st.want) {
				t.Fatalf("Read = %v, %v; want %v, %v", v, err, st.want, st.wantErr)
			}
			if s.Reads() != i+1 {
				t.Fatalf("Reads() = %d, want %d", s.Reads(), i+1)
			}
		})
	}
	t.Run("default after script", func(t *testing.T) {
		s.SetDefault(hw.Values{"t": 9})
		for range 3 {
			if v, err := s.Read(ctx); err != nil || v["t"] != 9 {
				t.Fatalf("Read = %v, %v", v, err)
			}
		}
		s.SetDefault(nil)
		if _, err := s.Read(ctx); !errors.Is(err, ErrExhausted) {
			t.Fatalf("after SetDefault(nil): %v", err)
		}
	})
	t.Run("returned values are copies", func(t *testing.T) {
		in := hw.Values{"t": 1}
		s.Push(in)
		in["t"] = 2
		v, _ := s.Read(ctx)
		if v["t"] != 1 {
			t.Fatalf("script aliased the caller's map: %v", v)
		}
	})
	t.Run("cancelled context does not consume", func(t *testing.T) {
		s.Push(hw.Values{"t": 5})
		c, cancel := context.WithCancel(ctx)
		cancel()
		n := s.Reads()
		if _, err := s.Read(c); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if s.Reads() != n || s.Pending() != 1 {
			t.Fatalf("reads %d pending %d after a cancelled read", s.Reads(), s.Pending())
		}
	})
	t.Run("close", func(t *testing.T) {
		closeErr := errors.New("busy")
		s.SetCloseErr(closeErr)
		if err := s.Close(); !errors.Is(err, closeErr) || !s.Closed() {
			t.Fatalf("Close = %v closed=%v", err, s.Closed())
		}
		if _, err := s.Read(ctx); err == nil {
			t.Fatal("Read after Close succeeded")
		}
	})
	if s.Name() != "env" || s.Kind() != Kind || s.WithKind("bme280").Kind() != "bme280" {
		t.Fatalf("Name/Kind = %s/%s", s.Name(), s.Kind())
	}
}

func TestEdgeSensor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := NewEdgeSensor("door", 1, Step{Values: hw.Values{"open": 0}})
	var _ hw.EdgeSensor = e

	if err := e.Emit(ctx, hw.Values{"open": 1}); err != nil {
		t.Fatal(err)
	}
	if got := <-e.Events(); got["open"] != 1 {
		t.Fatalf("event = %v", got)
	}
	if v, err := e.Read(ctx); err != nil || v["open"] != 0 {
		t.Fatalf("Read = %v, %v", v, err)
	}

	// A full buffer blocks Emit until its context ends.
	if err := e.Emit(ctx, hw.Values{"open": 0}); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if err := e.Emit(short, hw.Values{"open": 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Emit on a full buffer = %v", err)
	}

	// Close while an emitter is blocked: the emitter returns, the channel
	// closes after the buffered event, and Emit fails afterwards.
	var wg sync.WaitGroup
	wg.Add(1)
	blocked := make(chan error, 1)
	go func() {
		defer wg.Done()
		blocked <- e.Emit(ctx, hw.Values{"open": 1})
	}()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-blocked; err == nil {
		t.Fatal("blocked Emit succeeded after Close")
	}
	if got, ok := <-e.Events(); !ok || got["open"] != 0 {
		t.Fatalf("buffered event = %v, %v", got, ok)
	}
	if _, ok := <-e.Events(); ok {
		t.Fatal("events channel still open after Close")
	}
	if err := e.Emit(ctx, hw.Values{"open": 1}); err == nil {
		t.Fatal("Emit after Close succeeded")
	}
	if err := e.Close(); err != nil || !e.Closed() {
		t.Fatalf("second Close = %v", err)
	}
}

func TestOutput(t *testing.T) {
	o := NewOutput("relay", false)
	fail := errors.New("line busy")
	steps := []struct {
		name      string
		set       bool
		failWith  error
		wantState bool
	}{
		{"on", true, nil, true},
		{"failed off keeps state", false, fail, true},
		{"off", false, nil, false},
		{"on again", true, nil, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.failWith != nil {
				o.FailNext(st.failWith)
			}
			if err := o.Set(st.set); !errors.Is(err, st.failWith) {
				t.Fatalf("Set(%v) = %v, want %v", st.set, err, st.failWith)
			}
			if o.State() != st.wantState {
				t.Fatalf("State() = %v, want %v", o.State(), st.wantState)
			}
		})
	}
	if got := o.Calls(); !reflect.DeepEqual(got, []bool{true, false, false, true}) {
		t.Fatalf("Calls() = %v", got)
	}
	if err := o.Close(); err != nil || o.State() || !o.Closed() {
		t.Fatalf("Close = %v, state %v (want safe state false)", err, o.State())
	}
	if err := o.Set(true); err == nil || o.State() {
		t.Fatalf("Set after Close = %v, state %v", err, o.State())
	}
	hi := NewOutput("fan", true)
	_ = hi.Set(false)
	_ = hi.Close()
	if !hi.State() || hi.Name() != "fan" {
		t.Fatalf("Close did not restore initial high: %v", hi.State())
	}
}

func TestConcurrentUse(t *testing.T) {
	s := NewSensor("env")
	s.SetDefault(hw.Values{"t": 1})
	o := NewOutput("relay", false)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				_, _ = s.Read(context.Background())
				_ = o.Set(i%2 == 0)
				_ = o.State()
			}
		}()
	}
	wg.Wait()
	if s.Reads() != 400 || len(o.Calls()) != 400 {
		t.Fatalf("reads %d calls %d", s.Reads(), len(o.Calls()))
	}
}
