package hubtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/sas"
)

const testHub = "test-hub.local"

// eventually polls cond until it is true or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startHub starts a hub on 127.0.0.1:0 and closes it at cleanup.
func startHub(t *testing.T, o Options) *Hub {
	t.Helper()
	if o.HubHost == "" {
		o.HubHost = testHub
	}
	h, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := h.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

// addDevice registers id and returns its primary key.
func addDevice(t *testing.T, h *Hub, id string) string {
	t.Helper()
	key := newKey()
	if err := h.UpsertDevice(id, key); err != nil {
		t.Fatalf("UpsertDevice(%q): %v", id, err)
	}
	return key
}

// deviceToken signs a device token for id with key, valid until expiry.
func deviceToken(t *testing.T, hubHost, id, key string, expiry time.Time) string {
	t.Helper()
	k, err := sas.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.NewDeviceToken(hubHost, id, "", expiry.Unix(), k)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

// received is one message a test device got.
type received struct {
	Topic   string
	Payload []byte
	Qos     byte
	Dup     bool
}

// device is a paho client acting as an IoT Hub device.
type device struct {
	paho.Client
	in chan received
	rc byte // CONNACK return code

	mu   sync.Mutex
	lost []error
}

func (d *device) connectionLost() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lost) > 0
}

type devOpts struct {
	broker   string
	clientID string
	username string
	password string
	version  uint
	clean    bool
	noAck    bool
	tls      *tls.Config
}

// dial connects a device; it returns the client and the connect error.
func dial(t *testing.T, o devOpts) (*device, error) {
	t.Helper()
	d := &device{in: make(chan received, 200)}
	po := paho.NewClientOptions().AddBroker(o.broker).SetClientID(o.clientID).
		SetUsername(o.username).SetPassword(o.password).SetCleanSession(o.clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(false).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
		SetAutoAckDisabled(o.noAck).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			d.in <- received{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Qos: m.Qos(), Dup: m.Duplicate()}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			d.mu.Lock()
			d.lost = append(d.lost, err)
			d.mu.Unlock()
		})
	if o.version == 0 {
		o.version = 4
	}
	po.SetProtocolVersion(o.version)
	if o.tls != nil {
		po.SetTLSConfig(o.tls)
	}
	d.Client = paho.NewClient(po)
	tok := d.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("connect of %q did not complete", o.clientID)
	}
	if ct, ok := tok.(*paho.ConnectToken); ok {
		d.rc = ct.ReturnCode()
	}
	if err := tok.Error(); err != nil {
		return d, err
	}
	t.Cleanup(func() { d.Disconnect(0) })
	return d, nil
}

// connectDevice connects id with a valid one-hour token (clean session).
func connectDevice(t *testing.T, h *Hub, id, key string) *device {
	t.Helper()
	return connectWith(t, h, id, key, true)
}

func connectWith(t *testing.T, h *Hub, id, key string, clean bool) *device {
	t.Helper()
	d, err := dial(t, devOpts{
		broker:   "tcp://" + h.MQTTAddr(),
		clientID: id,
		username: testHub + "/" + id + "/?api-version=2021-04-12",
		password: deviceToken(t, testHub, id, key, h.now().Add(time.Hour)),
		clean:    clean,
	})
	if err != nil {
		t.Fatalf("connect %q: %v", id, err)
	}
	// CONNACK reaches paho a moment before the hub marks the session established.
	if err := h.WaitConnected(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *device) subscribe(t *testing.T, filters ...string) []byte {
	t.Helper()
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	tok := d.SubscribeMultiple(m, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %v: %v", filters, tok.Error())
	}
	st := tok.(*paho.SubscribeToken)
	var codes []byte
	for _, f := range filters {
		codes = append(codes, st.Result()[f])
	}
	return codes
}

func (d *device) publish(t *testing.T, topic string, qos byte, payload []byte) {
	t.Helper()
	tok := d.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %q: %v", topic, tok.Error())
	}
}

// next waits for the next message whose topic starts with prefix, skipping others.
func (d *device) next(t *testing.T, prefix string) received {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-d.in:
			if strings.HasPrefix(m.Topic, prefix) {
				return m
			}
		case <-timeout:
			t.Fatalf("no message with topic prefix %q", prefix)
		}
	}
}

// none asserts that nothing arrives within a short window.
func (d *device) none(t *testing.T, window time.Duration) {
	t.Helper()
	select {
	case m := <-d.in:
		t.Fatalf("unexpected message on %q: %s", m.Topic, m.Payload)
	case <-time.After(window):
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// selfSignedTLS returns a server config for 127.0.0.1 and a client config
// trusting it.
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hubtest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1"}
	return server, client
}
