package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/sas"
)

// watchOptions configure watch.
type watchOptions struct {
	BaseURL    string         // https://host:port of the emulator's HTTPS listener
	ServerName string         // TLS server name (the hub host)
	RootCAs    *x509.CertPool // the emulator CA
	HubHost    string         // sr of the service token
	PolicyName string         // skn of the service token
	PolicyKey  sas.Signer     // service policy key
	DeviceID   string         // "" → every device
	All        bool           // print the messages already stored, not only new ones
	Interval   time.Duration  // poll period
	TokenTTL   time.Duration  // lifetime of each service token
	Clock      clockwork.Clock
	Skew       time.Duration // added to Clock.Now for token expiry (match the emulator's --clock-skew)
	Logger     *slog.Logger  // or nil
}

// message is one entry of GET /emulator/messages.
type message struct {
	N                int64             `json:"n"`
	DeviceID         string            `json:"deviceId"`
	EnqueuedTimeUTC  string            `json:"enqueuedTimeUtc"`
	Properties       map[string]string `json:"properties"`
	SystemProperties map[string]string `json:"systemProperties"`
	Body             string            `json:"body"`
	BodyBase64       string            `json:"bodyBase64"`
}

type messagesPage struct {
	Messages []message `json:"messages"`
	Next     int64     `json:"next"`
}

// errUnauthorized reports a refused service token: retrying cannot help.
var errUnauthorized = errors.New("the emulator refused the service token")

// watch polls GET /emulator/messages and prints one line per telemetry
// record to out until ctx is done (then it returns nil). A refused token is
// fatal; network errors are logged and retried, so watch may start before
// the emulator.
func watch(ctx context.Context, o watchOptions, out io.Writer) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = time.Hour
	}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				RootCAs:    o.RootCAs,
				ServerName: o.ServerName,
				MinVersion: tls.VersionTLS12,
				Time:       func() time.Time { return o.Clock.Now().Add(o.Skew) },
			},
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
	defer client.CloseIdleConnections()

	var after int64
	primed := o.All
	failing := false
	for {
		page, err := fetchMessages(ctx, client, o, after)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errUnauthorized):
			return err
		case err != nil:
			if !failing {
				log.Warn("watch: emulator not reachable; retrying", "url", o.BaseURL, "err", err)
				failing = true
			}
		default:
			if failing {
				log.Info("watch: emulator reachable", "url", o.BaseURL)
				failing = false
			}
			if primed {
				for _, m := range page.Messages {
					printMessage(out, m)
				}
			}
			primed = true
			if page.Next > after {
				after = page.Next
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-o.Clock.After(o.Interval):
		}
	}
}

func fetchMessages(ctx context.Context, client *http.Client, o watchOptions, after int64) (*messagesPage, error) {
	q := url.Values{}
	q.Set("after", strconv.FormatInt(after, 10))
	if o.DeviceID != "" {
		q.Set("deviceId", o.DeviceID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.BaseURL+"/emulator/messages?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	expiry := o.Clock.Now().Add(o.Skew).Add(o.TokenTTL).Unix()
	tok, err := sas.New(o.HubHost, o.PolicyName, expiry, o.PolicyKey)
	if err != nil {
		return nil, fmt.Errorf("watch: service token: %w", err)
	}
	req.Header.Set("Authorization", tok.String())
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("watch: read reply: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("watch: %w (HTTP %d); check [service_policy] in the emulator config and --clock-skew", errUnauthorized, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("watch: GET /emulator/messages: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	var page messagesPage
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, fmt.Errorf("watch: GET /emulator/messages: reply is not the expected JSON: %w", err)
	}
	return &page, nil
}

// record is one telemetry reading in a fieldgate message body.
type record struct {
	Seq    *int64                     `json:"seq"`
	TS     string                     `json:"ts"`
	Sensor string                     `json:"sensor"`
	Values map[string]json.RawMessage `json:"values"`
}

// printMessage writes one line per record of a fieldgate telemetry body:
//
//	sensor-1 seq=42 ts=2026-11-22T10:00:00.123Z sensor=env humidity_pct=40.2 temperature_c=21.4
//
// and one line with the raw body for anything else.
func printMessage(out io.Writer, m message) {
	body := []byte(m.Body)
	if m.Body == "" && m.BodyBase64 != "" {
		if b, err := base64.StdEncoding.DecodeString(m.BodyBase64); err == nil {
			body = b
		}
	}
	var doc struct {
		Records []record `json:"records"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Records) == 0 {
		fmt.Fprintf(out, "%s n=%d body=%s\n", m.DeviceID, m.N, strconv.Quote(truncate(string(body), 200)))
		return
	}
	for _, r := range doc.Records {
		var b strings.Builder
		b.WriteString(m.DeviceID)
		if r.Seq != nil {
			fmt.Fprintf(&b, " seq=%d", *r.Seq)
		} else {
			b.WriteString(" seq=?")
		}
		fmt.Fprintf(&b, " ts=%s sensor=%s", field(r.TS), field(r.Sensor))
		names := make([]string, 0, len(r.Values))
		for k := range r.Values {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			var v bytes.Buffer
			if err := json.Compact(&v, r.Values[k]); err != nil {
				v.Reset()
				v.Write(r.Values[k])
			}
			fmt.Fprintf(&b, " %s=%s", field(k), field(v.String()))
		}
		b.WriteByte('\n')
		io.WriteString(out, b.String())
	}
}

// field returns s as is when it is printable without spaces, else quoted,
// so one record stays one line.
func field(s string) string {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
