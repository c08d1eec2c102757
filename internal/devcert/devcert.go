// Package devcert owns the emulator's throwaway certificate authority: an
// ECDSA P-256 CA created by `fieldgate-emulator init`, stored as PEM files, and
// the short-lived server certificates the emulator issues from it at every
// start (so a clock-skewed emulator presents a certificate whose validity
// window follows its skewed clock).
//
// Nothing here is meant for production trust: the CA key sits in a file next
// to the emulator configuration. Only cmd/fieldgate-emulator and tests import
// this package.
package devcert

import (
	"github.com/fieldgate/fieldgate/internal/atomicfile"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// CAValidity is how long a new CA is valid, counted from one hour before its
// creation.
const CAValidity = 10 * 365 * 24 * time.Hour

// DefaultHosts are always placed in an issued server certificate.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// CA is a certificate authority whose private key is held in memory.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed ECDSA P-256 CA valid from now−1h for CAValidity.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devcert: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-time.Hour).UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "fieldgate-emulator throwaway CA", Organization: []string{"fieldgate-emulator"}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("devcert: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devcert: parse new CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a certificate pool holding only this CA, for clients.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue signs a server certificate (a fresh P-256 key) for DefaultHosts plus
// hosts, valid from notBefore to notAfter. Entries of hosts that parse as IP
// addresses become IP SANs, the others DNS SANs; duplicates and empty entries
// are dropped. The returned certificate has Leaf set.
func (ca *CA) Issue(hosts []string, notBefore, notAfter time.Time) (tls.Certificate, error) {
	if !notAfter.After(notBefore) {
		return tls.Certificate{}, fmt.Errorf("devcert: issue: notAfter %s is not after notBefore %s", notAfter.UTC().Format(time.RFC3339), notBefore.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("devcert: generate server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "fieldgate-emulator", Organization: []string{"fieldgate-emulator"}},
		NotBefore:    notBefore.UTC(),
		NotAfter:     notAfter.UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range append(append([]string(nil), DefaultHosts...), hosts...) {
		h = strings.TrimSpace(h)
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if h == "" || seen[strings.ToLower(h)] {
			continue
		}
		seen[strings.ToLower(h)] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("devcert: issue server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("devcert: parse issued certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CertPEM returns the CA certificate in PEM form (public; give it to clients).
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// KeyPEM returns the CA private key as a PKCS#8 PEM block. It is a secret.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("devcert: encode CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFiles writes the CA certificate to certPath (mode 0644) and its key to
// keyPath (mode 0600). Each file is written to a temporary file in the same
// directory and renamed into place.
func (ca *CA) WriteFiles(certPath, keyPath string) error {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, ca.CertPEM(), 0o644)
}

// ParseCA reads a CA from its PEM certificate and PEM private key (PKCS#8,
// SEC 1 "EC PRIVATE KEY" also accepted). The key must match the certificate
// and the certificate must be a CA.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("devcert: certificate is not a CA (basic constraints CA:FALSE); use the ca.pem written by `fieldgate-emulator init`")
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("devcert: CA key: no PEM block found; use the ca-key.pem written by `fieldgate-emulator init`")
	}
	var key *ecdsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("devcert: CA key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("devcert: CA key: type %T is not ECDSA", k)
		}
		key = ek
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("devcert: CA key: %w", err)
		}
		key = k
	default:
		return nil, fmt.Errorf("devcert: CA key: PEM block type %q is not a private key", block.Type)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("devcert: CA key does not match the CA certificate; regenerate both with `fieldgate-emulator init --force`")
	}
	return &CA{cert: cert, key: key}, nil
}

// LoadCA reads a CA from certPath and keyPath (see ParseCA).
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("devcert: read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("devcert: read CA key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (files %s, %s)", err, certPath, keyPath)
	}
	return ca, nil
}

// ParseCertPEM returns the first CERTIFICATE block of b.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("devcert: no CERTIFICATE PEM block found")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("devcert: parse certificate: %w", err)
		}
		return cert, nil
	}
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("devcert: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
