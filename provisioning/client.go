package provisioning

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/sas"
	"github.com/jonboulle/clockwork"
)

// Defaults of Options.
const (
	DefaultEndpoint    = "https://global.azure-devices-provisioning.net"
	DefaultAPIVersion  = "2021-06-01"
	DefaultTokenTTL    = time.Hour
	DefaultMaxPollTime = 5 * time.Minute
	DefaultUserAgent   = "fieldgate"

	// defaultRequestTimeout applies when the caller's http.Client has none.
	defaultRequestTimeout = 30 * time.Second
)

// Assignment is the outcome of a successful registration: where the device
// lives and under which identity it was provisioned. It holds no secret;
// KeyFingerprint identifies the key without revealing it.
type Assignment struct {
	Hub            string          `json:"hub"`      // host[:port] of the assigned IoT hub
	DeviceID       string          `json:"deviceId"` // may differ from RegistrationID for individual enrollments
	Substatus      string          `json:"substatus,omitempty"`
	RegistrationID string          `json:"registrationId"`
	IDScope        string          `json:"idScope"`
	Endpoint       string          `json:"endpoint"`   // DPS endpoint used, normalized
	AssignedAt     time.Time       `json:"assignedAt"` // corrected wall clock when the assignment arrived
	Payload        json.RawMessage `json:"payload,omitempty"`
	KeyFingerprint string          `json:"keyFingerprint"`
}

// Identity returns the settings the assignment was obtained with.
func (a Assignment) Identity() Identity {
	return Identity{IDScope: a.IDScope, RegistrationID: a.RegistrationID, Endpoint: a.Endpoint, KeyFingerprint: a.KeyFingerprint}
}

// Options configure a Client. IDScope, RegistrationID and Signer are
// required; the rest have defaults.
type Options struct {
	Endpoint       string           // default DefaultEndpoint; https only
	IDScope        string           // e.g. 0ne00000000
	RegistrationID string           // the enrollment's registration id
	Signer         sas.Signer       // device key (individual, or derived from the group key); non-nil
	Payload        json.RawMessage  // optional custom-allocation payload (valid JSON, ≤ 64 KiB), or nil
	HTTPClient     *http.Client     // or nil; TLS config (roots, tls.Config.Time) is the caller's
	Now            func() time.Time // corrected wall clock for SAS expiry and AssignedAt; nil → Clock.Now
	Clock          clockwork.Clock  // waits and backoff; nil → real clock
	Logger         *slog.Logger     // or nil (discard)
	APIVersion     string           // default DefaultAPIVersion
	TokenTTL       time.Duration    // default 1h; at least 1m
	MaxPollTime    time.Duration    // default 5m, then a fresh PUT; at least 10s
	Rand           func() float64   // jitter source in [0,1); nil → math/rand/v2
	UserAgent      string           // default DefaultUserAgent; e.g. "fieldgate/1.2.3"
}

// Client registers one device with DPS. Create it with New; Register may be
// called again later (re-provisioning), calls are serialized.
type Client struct {
	base        string // endpoint without trailing slash
	endpoint    string // normalized endpoint for Assignment.Endpoint
	idScope     string
	regID       string
	signer      sas.Signer
	payload     json.RawMessage
	hc          *http.Client
	now         func() time.Time
	clock       clockwork.Clock
	log         *slog.Logger
	apiVersion  string
	tokenTTL    time.Duration
	maxPoll     time.Duration
	rand        func() float64
	userAgent   string
	fingerprint string

	// onWait, when not nil, is told about every wait before it starts (test
	// seam used to drive a fake clock exactly).
	onWait func(d time.Duration, reason string)

	// mu serializes Register and guards the fields below.
	mu     sync.Mutex
	window requestWindow
}

// New validates o and returns a Client. Errors name the option and the fix.
func New(o Options) (*Client, error) {
	c := &Client{
		idScope:    o.IDScope,
		regID:      o.RegistrationID,
		signer:     o.Signer,
		hc:         o.HTTPClient,
		now:        o.Now,
		clock:      o.Clock,
		log:        o.Logger,
		apiVersion: o.APIVersion,
		tokenTTL:   o.TokenTTL,
		maxPoll:    o.MaxPollTime,
		rand:       o.Rand,
		userAgent:  o.UserAgent,
	}
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	ep, err := NormalizeEndpoint(o.Endpoint)
	if err != nil {
		return nil, err
	}
	c.base, c.endpoint = ep, ep
	if err := validIDScope(o.IDScope); err != nil {
		return nil, fmt.Errorf("provisioning: id_scope: %w", err)
	}
	if err := validRegistrationID(o.RegistrationID); err != nil {
		return nil, fmt.Errorf("provisioning: registration_id: %w", err)
	}
	if o.Signer == nil {
		return nil, errors.New("provisioning: no signer; load the device key (key_file, group_key_file or key_credential) first")
	}
	if len(o.Payload) > 0 {
		if len(o.Payload) > maxPayload {
			return nil, fmt.Errorf("provisioning: payload is %d bytes; DPS accepts at most %d", len(o.Payload), maxPayload)
		}
		if !json.Valid(o.Payload) {
			return nil, errors.New("provisioning: payload is not valid JSON")
		}
		c.payload = append(json.RawMessage(nil), o.Payload...)
	}
	if c.clock == nil {
		c.clock = clockwork.NewRealClock()
	}
	if c.now == nil {
		c.now = c.clock.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("registration_id", o.RegistrationID, "id_scope", o.IDScope)
	if c.apiVersion == "" {
		c.apiVersion = DefaultAPIVersion
	}
	for i := 0; i < len(c.apiVersion); i++ {
		if ch := c.apiVersion[i]; !isAlnum(ch) && ch != '-' && ch != '.' {
			return nil, fmt.Errorf("provisioning: api version %q is not of the form 2021-06-01", c.apiVersion)
		}
	}
	switch {
	case c.tokenTTL == 0:
		c.tokenTTL = DefaultTokenTTL
	case c.tokenTTL < time.Minute:
		return nil, fmt.Errorf("provisioning: token TTL %s is too short to outlive register and poll; use at least 1m", c.tokenTTL)
	}
	switch {
	case c.maxPoll == 0:
		c.maxPoll = DefaultMaxPollTime
	case c.maxPoll < 10*time.Second:
		return nil, fmt.Errorf("provisioning: max poll time %s is too short; use at least 10s", c.maxPoll)
	}
	if c.rand == nil {
		c.rand = rand.Float64
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	// Own copy of the client: never follow redirects (the token must only go
	// to the configured endpoint) and always have a request timeout.
	var hc http.Client
	if c.hc != nil {
		hc = *c.hc
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if hc.Timeout == 0 {
		hc.Timeout = defaultRequestTimeout
	}
	c.hc = &hc
	fp, err := KeyFingerprint(o.Signer)
	if err != nil {
		return nil, fmt.Errorf("provisioning: %w", err)
	}
	c.fingerprint = fp
	return c, nil
}

// Identity returns the identity settings of this client, for LoadCache.
func (c *Client) Identity() Identity {
	return Identity{IDScope: c.idScope, RegistrationID: c.regID, Endpoint: c.endpoint, KeyFingerprint: c.fingerprint}
}

// response is one HTTP answer, body already read (bounded).
type response struct {
	status int
	header http.Header
	body   []byte
}

// Register provisions the device: PUT register, then poll the operation
// until DPS assigns a hub, reports failure or a disabled enrollment, or ctx
// is done. Transient problems (network, 429, 5xx, unusable responses) and
// 401/403/404 are retried internally with the waits described in the package
// documentation; Register returns only
//   - the Assignment,
//   - ErrDisabled or a *FailedError (ErrFailed): terminal for this call,
//   - a *StatusError wrapping ErrRejected (a 4xx retrying cannot fix),
//   - a signer error, or
//   - ctx's error, joined with the last failure seen (errors.Is and
//     errors.As see both).
func (c *Client) Register(ctx context.Context) (Assignment, error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	var (
		phasePoll  bool      // false: PUT register; true: GET operation status
		opID       string    // operation being polled
		pollStart  time.Time // clock time of the PUT that started polling
		transient  int       // consecutive transient failures
		slow       int       // consecutive 401/403/404 on PUT
		lastErr    error
		lastClass  error            // class of the last logged failure, to log changes only
		hintLogged = map[int]bool{} // HTTP statuses whose likely cause was logged
	)
	fail := func(err error) (Assignment, error) {
		if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
			return Assignment{}, err
		}
		if lastErr != nil {
			return Assignment{}, fmt.Errorf("provisioning: register %s: %w (last failure: %w)", c.regID, err, lastErr)
		}
		return Assignment{}, fmt.Errorf("provisioning: register %s: %w", c.regID, err)
	}
	// retry records err, logs it when its class changed, and waits d.
	retry := func(err error, d time.Duration, reason string) error {
		lastErr = err
		class := errClass(err)
		lvl := slog.LevelDebug
		if class != lastClass {
			lvl = slog.LevelWarn
			lastClass = class
		}
		c.log.Log(ctx, lvl, "provisioning: retrying", "err", err, "wait", d, "reason", reason)
		return c.sleep(ctx, d, reason)
	}

	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if phasePoll && c.clock.Since(pollStart) >= c.maxPoll {
			c.log.Warn("provisioning: operation still not complete; registering again", "operation_id", opID, "polled_for", c.clock.Since(pollStart))
			phasePoll, opID = false, ""
		}

		opName := "register"
		var res response
		var tok sas.Token
		var err error
		if !phasePoll {
			res, tok, err = c.put(ctx)
		} else {
			opName = "operation status"
			res, tok, err = c.get(ctx, opID)
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		if err != nil {
			if errors.Is(err, errSigner) {
				return fail(err)
			}
			reason := "network"
			if errors.Is(err, ErrBadResponse) {
				reason = "bad response"
			}
			d := backoff(transient, backoffBase, networkFloor, backoffMax, c.rand())
			transient++
			if err := retry(err, d, reason); err != nil {
				return fail(err)
			}
			continue
		}
		secrets := []string{tok.Signature, sas.Encode(tok.Signature)}

		switch s := res.status; {
		case s == http.StatusOK || s == http.StatusAccepted:
			op, err := decodeOperation(res.body)
			if err == nil && op.RegistrationState != nil && op.RegistrationState.RegistrationID != "" &&
				!strings.EqualFold(op.RegistrationState.RegistrationID, c.regID) {
				err = badResponse("registrationState.registrationId %q is not %q", sanitize(op.RegistrationState.RegistrationID, 130), c.regID)
			}
			if err != nil {
				err = fmt.Errorf("provisioning: %s: %w", opName, err)
				d := backoff(transient, backoffBase, networkFloor, backoffMax, c.rand())
				transient++
				if err := retry(err, d, "bad response"); err != nil {
					return fail(err)
				}
				continue
			}
			switch op.Status {
			case statusAssigned:
				a := c.assignment(op.RegistrationState)
				c.log.Info("provisioning: assigned", "hub", a.Hub, "device_id", a.DeviceID, "substatus", a.Substatus)
				return a, nil
			case statusDisabled:
				c.log.Error("provisioning: DPS reports the enrollment disabled; enable it in DPS")
				return fail(fmt.Errorf("%w: registration %s; enable the enrollment (and the device registration) in DPS", ErrDisabled, c.regID))
			case statusFailed:
				fe := &FailedError{}
				if rs := op.RegistrationState; rs != nil {
					if rs.ErrorCode != nil {
						fe.ErrorCode = int(min(max(*rs.ErrorCode, -1), 1<<31-1))
					}
					fe.Message = sanitize(rs.ErrorMessage, 200, secrets...)
				}
				c.log.Error("provisioning: DPS reports the registration failed", "err", fe)
				return fail(fe)
			default: // assigning, unassigned
				transient, slow = 0, 0
				if !phasePoll {
					phasePoll, pollStart = true, c.clock.Now()
				}
				opID = op.OperationID
				d, _ := parseRetryAfter(res.header.Get("Retry-After"))
				c.log.Debug("provisioning: assigning", "operation_id", opID, "wait", d)
				if err := c.sleep(ctx, d, "retry-after"); err != nil {
					return fail(err)
				}
			}

		case s == http.StatusTooManyRequests:
			se := decodeError(opName, s, res.body, secrets...)
			d, ok := parseRetryAfter(res.header.Get("Retry-After"))
			if !ok {
				d = backoff(transient, backoffBase, serverErrorFloor, backoffMax, c.rand())
			}
			transient++
			if err := retry(se, d, "throttled"); err != nil {
				return fail(err)
			}

		case s >= 500 || s == http.StatusRequestTimeout || s == http.StatusConflict || s == http.StatusPreconditionFailed:
			se := decodeError(opName, s, res.body, secrets...)
			d := backoff(transient, backoffBase, serverErrorFloor, backoffMax, c.rand())
			if ra, ok := parseRetryAfter(res.header.Get("Retry-After")); ok {
				d = max(d, ra)
			}
			transient++
			if err := retry(se, d, "service error"); err != nil {
				return fail(err)
			}

		case s == http.StatusUnauthorized || s == http.StatusForbidden || s == http.StatusNotFound:
			se := decodeError(opName, s, res.body, secrets...)
			if phasePoll {
				// The operation is gone or the token went stale: start over
				// with a fresh PUT (and a fresh token).
				phasePoll, opID = false, ""
				d := backoff(transient, backoffBase, networkFloor, backoffMax, c.rand())
				transient++
				if err := retry(se, d, "operation lost"); err != nil {
					return fail(err)
				}
				continue
			}
			if !hintLogged[s] {
				hintLogged[s] = true
				c.log.Warn("provisioning: "+hint(s), "status", s, "error_code", se.ErrorCode, "tracking_id", se.TrackingID)
			}
			d := backoff(slow, slowBase, slowFloor, slowMax, c.rand())
			slow++
			if err := retry(se, d, "slow retry"); err != nil {
				return fail(err)
			}

		case s >= 400:
			se := decodeError(opName, s, res.body, secrets...)
			c.log.Error("provisioning: DPS rejected the request", "err", se)
			return fail(se)

		default: // 1xx, 3xx (redirects are not followed), other 2xx
			err := fmt.Errorf("provisioning: %s: %w", opName, badResponse("unexpected HTTP status %d", s))
			d := backoff(transient, backoffBase, networkFloor, backoffMax, c.rand())
			transient++
			if err := retry(err, d, "bad response"); err != nil {
				return fail(err)
			}
		}
	}
}

// errClass returns the class sentinel of err, for log de-duplication.
func errClass(err error) error {
	for _, class := range []error{ErrUnauthorized, ErrNotFound, ErrThrottled, ErrServer, ErrConflict, ErrBadResponse, ErrNetwork} {
		if errors.Is(err, class) {
			return class
		}
	}
	return nil
}

// errSigner marks a failure of the Signer (a destroyed key, a broken HSM):
// terminal, retrying cannot help.
var errSigner = errors.New("provisioning: cannot sign the registration token")

func (c *Client) assignment(rs *registrationState) Assignment {
	a := Assignment{
		Hub:            rs.AssignedHub,
		DeviceID:       rs.DeviceID,
		Substatus:      rs.Substatus,
		RegistrationID: c.regID,
		IDScope:        c.idScope,
		Endpoint:       c.endpoint,
		AssignedAt:     c.now().UTC(),
		KeyFingerprint: c.fingerprint,
	}
	a.Payload = compactJSON(rs.Payload)
	return a
}

// sleep waits d on the injected clock, or until ctx is done.
func (c *Client) sleep(ctx context.Context, d time.Duration, reason string) error {
	if d <= 0 {
		return ctx.Err()
	}
	if c.onWait != nil {
		c.onWait(d, reason)
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) registrationURL() string {
	return c.base + "/" + url.PathEscape(c.idScope) + "/registrations/" + url.PathEscape(c.regID)
}

func (c *Client) put(ctx context.Context) (response, sas.Token, error) {
	body, err := json.Marshal(registerRequest{RegistrationID: c.regID, Payload: c.payload})
	if err != nil {
		return response{}, sas.Token{}, fmt.Errorf("provisioning: encode register body: %w", err)
	}
	u := c.registrationURL() + "/register?api-version=" + url.QueryEscape(c.apiVersion)
	return c.do(ctx, http.MethodPut, u, body)
}

func (c *Client) get(ctx context.Context, opID string) (response, sas.Token, error) {
	u := c.registrationURL() + "/operations/" + url.PathEscape(opID) + "?api-version=" + url.QueryEscape(c.apiVersion)
	return c.do(ctx, http.MethodGet, u, nil)
}

// do sends one request after the request window allows it, with a fresh
// token, and reads at most maxBody+1 bytes of the answer.
func (c *Client) do(ctx context.Context, method, u string, body []byte) (response, sas.Token, error) {
	if d := c.window.wait(c.clock.Now()); d > 0 {
		c.log.Debug("provisioning: request window full; waiting", "wait", d)
		if err := c.sleep(ctx, d, "request window"); err != nil {
			return response{}, sas.Token{}, err
		}
	}
	tok, err := sas.NewRegistrationToken(c.idScope, c.regID, c.now().Add(c.tokenTTL).Unix(), c.signer)
	if err != nil {
		return response{}, sas.Token{}, fmt.Errorf("%w: %w", errSigner, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return response{}, tok, fmt.Errorf("provisioning: build request: %w", err)
	}
	req.Header.Set("Authorization", tok.String())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	c.window.add(c.clock.Now())
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, tok, fmt.Errorf("provisioning: %s %s: %w", method, c.base, &classError{class: ErrNetwork, msg: "network error", cause: transportCause(err)})
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return response{}, tok, fmt.Errorf("provisioning: read %s answer: %w", method, &classError{class: ErrNetwork, msg: "network error", cause: err})
	}
	if len(b) > maxBody {
		return response{}, tok, fmt.Errorf("provisioning: %s answer: %w", method, badResponse("body exceeds %d bytes", maxBody))
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, tok, nil
}

// transportCause strips the *url.Error wrapper (method and full URL, already
// in the message and the log context) from a transport error.
func transportCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
