package main

import "crypto/x509"

func newPool() *x509.CertPool { return x509.NewCertPool() }
