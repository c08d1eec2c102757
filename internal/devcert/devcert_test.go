package devcert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func mustCA(t *testing.T, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func TestNewCAValidity(t *testing.T) {
	ca := mustCA(t, t0)
	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Fatalf("CA cert IsCA=%v BasicConstraintsValid=%v; want true, true", c.IsCA, c.BasicConstraintsValid)
	}
	if want := t0.Add(-time.Hour); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %s; want %s", c.NotBefore, want)
	}
	if want := t0.Add(-time.Hour).Add(CAValidity); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %s; want %s", c.NotAfter, want)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA cert lacks KeyUsageCertSign")
	}
}

func TestIssueVerify(t *testing.T) {
	ca := mustCA(t, t0)
	other := mustCA(t, t0)
	nb, na := t0.Add(-time.Hour), t0.Add(24*time.Hour)
	cert, err := ca.Issue([]string{"hub.example.test", "10.1.2.3", "localhost", ""}, nb, na)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	leaf := cert.Leaf
	if got := len(leaf.DNSNames); got != 2 {
		t.Errorf("DNSNames = %v; want localhost and hub.example.test once each", leaf.DNSNames)
	}
	if got := len(leaf.IPAddresses); got != 3 {
		t.Errorf("IPAddresses = %v; want 127.0.0.1, ::1, 10.1.2.3", leaf.IPAddresses)
	}
	tests := []struct {
		name    string
		roots   *x509.CertPool
		host    string
		at      time.Time
		wantErr bool
	}{
		{"localhost now", ca.Pool(), "localhost", t0, false},
		{"ipv4 loopback", ca.Pool(), "127.0.0.1", t0, false},
		{"ipv6 loopback", ca.Pool(), "::1", t0, false},
		{"extra dns", ca.Pool(), "hub.example.test", t0, false},
		{"extra ip", ca.Pool(), "10.1.2.3", t0, false},
		{"unknown host", ca.Pool(), "evil.example.test", t0, true},
		{"before notBefore", ca.Pool(), "localhost", nb.Add(-time.Second), true},
		{"after notAfter", ca.Pool(), "localhost", na.Add(time.Second), true},
		{"other CA", other.Pool(), "localhost", t0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := leaf.Verify(x509.VerifyOptions{Roots: tt.roots, DNSName: tt.host, CurrentTime: tt.at})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify(%s at %s) error = %v; wantErr %v", tt.host, tt.at, err, tt.wantErr)
			}
		})
	}
}

func TestIssueRejectsEmptyWindow(t *testing.T) {
	ca := mustCA(t, t0)
	if _, err := ca.Issue(nil, t0, t0); err == nil {
		t.Fatal("Issue(notAfter == notBefore) succeeded; want error")
	}
}

func TestTLSHandshakeFollowsClientClock(t *testing.T) {
	// A server certificate issued for a skewed clock is accepted by a client
	// whose clock agrees and refused by one that does not.
	skewed := time.Now().Add(2 * time.Hour)
	ca := mustCA(t, time.Now())
	cert, err := ca.Issue(nil, skewed.Add(-time.Hour), skewed.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	tests := []struct {
		name    string
		now     func() time.Time
		wantErr bool
	}{
		{"client clock skewed like the server", func() time.Time { return skewed }, false},
		{"client clock true", time.Now, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &net.Dialer{Timeout: 5 * time.Second}
			c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Time: tt.now})
			if c != nil {
				c.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("dial error = %v; wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestWriteLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, t0)
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.WriteFiles(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{certPath: 0o644, keyPath: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %o; want %o", filepath.Base(path), got, want)
		}
	}
	loaded, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Fatal("loaded CA certificate differs from the written one")
	}
	// The loaded CA signs certificates the original CA's pool accepts.
	cert, err := loaded.Issue(nil, t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost", CurrentTime: t0}); err != nil {
		t.Fatalf("certificate from reloaded CA does not verify: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries; want exactly ca.pem and ca-key.pem (no temp files)", len(entries))
	}
}

func TestParseCAErrors(t *testing.T) {
	ca := mustCA(t, t0)
	other := mustCA(t, t0)
	keyPEM, _ := ca.KeyPEM()
	otherKey, _ := other.KeyPEM()
	leaf, err := ca.Issue(nil, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leafPEM := pemCert(leaf.Leaf)
	tests := []struct {
		name      string
		cert, key []byte
	}{
		{"garbage cert", []byte("not pem"), keyPEM},
		{"garbage key", ca.CertPEM(), []byte("not pem")},
		{"mismatched key", ca.CertPEM(), otherKey},
		{"not a CA", leafPEM, keyPEM},
		{"cert block as key", ca.CertPEM(), ca.CertPEM()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCA(tt.cert, tt.key); err == nil {
				t.Fatal("ParseCA succeeded; want error")
			}
		})
	}
	if _, err := LoadCA(filepath.Join(t.TempDir(), "missing.pem"), "x"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadCA(missing) error = %v; want os.ErrNotExist", err)
	}
}

func pemCert(c *x509.Certificate) []byte {
	ca := &CA{cert: c}
	return ca.CertPEM()
}

func FuzzParseCA(f *testing.F) {
	ca, err := NewCA(t0)
	if err != nil {
		f.Fatal(err)
	}
	keyPEM, _ := ca.KeyPEM()
	f.Add(ca.CertPEM(), keyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		got, err := ParseCA(certPEM, keyPEM)
		if err == nil && (got == nil || !got.Certificate().IsCA) {
			t.Fatal("ParseCA accepted input without a CA certificate")
		}
	})
}
