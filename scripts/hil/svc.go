//go:build ignore

// hil-svc calls the emulator's service API from inside the HIL VM (busybox
// wget's built-in TLS cannot talk to Go's TLS server):
//
//	hil-svc -ca ca.pem -sas "$SAS" GET|POST|PATCH URL [BODY]
//
// It prints the response body and exits 1 on a non-2xx status.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	ca := flag.String("ca", "", "PEM file of the emulator's CA")
	sas := flag.String("sas", "", "service SAS token")
	flag.Parse()
	if flag.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "usage: hil-svc -ca FILE -sas TOKEN METHOD URL [BODY]")
		os.Exit(2)
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var body io.Reader
	if flag.NArg() > 2 {
		body = strings.NewReader(flag.Arg(2))
	}
	req, err := http.NewRequest(flag.Arg(0), flag.Arg(1), body)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	req.Header.Set("Authorization", *sas)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s\n", b)
	if resp.StatusCode/100 != 2 {
		fmt.Fprintln(os.Stderr, resp.Status)
		os.Exit(1)
	}
}
