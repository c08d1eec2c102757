package provisioning

import (
	"strconv"
	"strings"
	"time"
)

// Waiting rules (azure-iot-protocol.md §3.4, §3.5, §4.2).
const (
	retryAfterDefault = 2 * time.Second   // Retry-After missing or unusable
	retryAfterMin     = 2 * time.Second   // never poll faster than 5 per 10 s
	retryAfterMax     = 300 * time.Second // cap on what the service may ask for

	// Sliding window: at most windowRequests requests per window, plus slack
	// for the network delay between our clock and the service's.
	windowRequests = 5
	window         = 10 * time.Second
	windowSlack    = 250 * time.Millisecond

	// Backoff for network errors, 429 without Retry-After and 5xx.
	backoffBase      = 2 * time.Second
	backoffMax       = 60 * time.Second
	networkFloor     = 1 * time.Second
	serverErrorFloor = 5 * time.Second

	// Slow retry for 401/403/404: the enrollment may be created later, the
	// clock may be corrected later, but hammering DPS helps nobody.
	slowBase  = 60 * time.Second
	slowFloor = 60 * time.Second
	slowMax   = 5 * time.Minute
)

// parseRetryAfter reads a Retry-After header as integer seconds, clamped to
// [2 s, 300 s]. Missing, negative, fractional, HTTP-date or garbage values
// give 2 s. ok reports whether the header carried a usable number.
func parseRetryAfter(v string) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return retryAfterDefault, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return retryAfterDefault, false
	}
	d = time.Duration(min(n, int64(retryAfterMax/time.Second))) * time.Second
	return max(d, retryAfterMin), true
}

// backoff returns the n-th (0-based) wait of an exponential backoff with full
// jitter: floor + r × min(limit−floor, base·2ⁿ), r in [0, 1). The result lies
// in [floor, limit).
func backoff(n int, base, floor, limit time.Duration, r float64) time.Duration {
	if r < 0 || r >= 1 || r != r { // NaN or out of range from a custom source
		r = 0.5
	}
	span := limit - floor
	if n < 0 {
		n = 0
	}
	if n < 30 {
		span = min(span, base<<n)
	}
	return floor + time.Duration(r*float64(span))
}

// requestWindow remembers the times of recent requests of one registration.
type requestWindow struct {
	times []time.Time // ascending, pruned to the last window
}

// wait returns how long to wait at now before another request keeps at most
// windowRequests requests inside any window (plus slack).
func (w *requestWindow) wait(now time.Time) time.Duration {
	w.prune(now)
	if len(w.times) < windowRequests {
		return 0
	}
	oldest := w.times[len(w.times)-windowRequests]
	return max(oldest.Add(window+windowSlack).Sub(now), 0)
}

// add records a request at now.
func (w *requestWindow) add(now time.Time) {
	w.prune(now)
	w.times = append(w.times, now)
}

func (w *requestWindow) prune(now time.Time) {
	i := 0
	for i < len(w.times) && !w.times[i].Add(window+windowSlack).After(now) {
		i++
	}
	w.times = append(w.times[:0], w.times[i:]...)
}
