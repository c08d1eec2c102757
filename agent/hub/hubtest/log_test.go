package hubtest

import (
	"github.com/fieldgate/fieldgate/internal/testlog"

	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

// TestLogsHaveNoSecrets drives connections (good and bad tokens), methods and
// service calls with a debug logger and checks that no key or signature is
// logged, while the expected one-line events are.
func TestLogsHaveNoSecrets(t *testing.T) {
	var buf testlog.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := startHub(t, Options{Logger: log})
	key := addDevice(t, h, "dev1")
	good := deviceToken(t, testHub, "dev1", key, time.Now().Add(time.Hour))
	bad := deviceToken(t, testHub, "dev1", newKey(), time.Now().Add(time.Hour))
	if _, err := dial(t, devOpts{broker: "tcp://" + h.MQTTAddr(), clientID: "dev1",
		username: testHub + "/dev1/?api-version=2021-04-12", password: bad, clean: true}); err == nil {
		t.Fatal("bad token accepted")
	}
	d := connectDevice(t, h, "dev1", key)
	d.subscribe(t, "$iothub/methods/POST/#")
	go func() {
		m := d.next(t, "$iothub/methods/POST/")
		d.Publish("$iothub/methods/res/200/"+m.Topic[strings.Index(m.Topic, "?"):], 0, false, []byte("{}"))
	}()
	if _, err := h.InvokeMethod(ctxT(t), "dev1", "ping", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s := newSvc(t, h)
	s.do("GET", "/devices/dev1", "", nil, nil)
	d.Disconnect(0)
	if err := h.WaitDisconnected(ctxT(t), "dev1"); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	var secrets []string
	for _, tok := range []string{good, bad, s.token} {
		p, err := sas.Parse(tok)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, p.Signature, url.QueryEscape(p.Signature))
	}
	dev, _ := h.Device("dev1")
	secrets = append(secrets, dev.PrimaryKey, dev.SecondaryKey, h.ServicePolicy().Key)
	for _, sec := range secrets {
		if strings.Contains(out, sec) {
			t.Fatalf("log contains a secret:\n%s", out)
		}
		b, _ := json.Marshal(sec)
		if strings.Contains(out, strings.Trim(string(b), `"`)) {
			t.Fatalf("log contains an escaped secret:\n%s", out)
		}
	}
	for _, want := range []string{"device connect refused", "device connected", "direct method", "device disconnected"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
