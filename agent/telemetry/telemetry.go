// Package telemetry packs spooled readings into IoT Hub telemetry messages:
// a JSON body {"records":[{"seq","ts","sensor","values"}]} with content type
// and encoding system properties and a unique message id, each message kept
// within a byte budget (4 KB by default, IoT Hub's billing unit) counting the
// body and the property bag as IoT Hub meters them.
package telemetry

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/fieldgate/fieldgate/agent/hub/propbag"
	"github.com/fieldgate/fieldgate/agent/spool"
)

// TimeFormat is the record timestamp layout: UTC with milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// Message is one packed telemetry message.
type Message struct {
	ID         string // $.mid
	Body       []byte
	Properties []propbag.Pair
	Seqs       []uint64 // the records it carries, in order
}

// Size is what IoT Hub meters: body plus property names and values.
func (m Message) Size() int {
	n := len(m.Body)
	for _, p := range m.Properties {
		n += len(p.Key) + len(p.Value)
	}
	return n
}

// NewMessageID returns a random 128-bit hex message id.
func NewMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Properties returns the system properties of a telemetry message.
func Properties(id string) []propbag.Pair {
	return []propbag.Pair{
		{Key: "$.mid", Value: id},
		{Key: "$.ct", Value: "application/json"},
		{Key: "$.ce", Value: "utf-8"},
	}
}

// AppendRecord appends the JSON encoding of r to dst.
func AppendRecord(dst []byte, r spool.Record) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"ts":"`...)
	dst = r.TS.UTC().AppendFormat(dst, TimeFormat)
	dst = append(dst, `","sensor":`...)
	dst = appendJSONString(dst, r.Sensor)
	dst = append(dst, `,"values":{`...)
	keys := make([]string, 0, len(r.Values))
	for k := range r.Values {
		keys = append(keys, k)
	}
	sortStrings(keys)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendFloat(dst, r.Values[k])
	}
	return append(dst, "}}"...)
}

func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

func appendJSONString(dst []byte, s string) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		return append(dst, `""`...)
	}
	return append(dst, b...)
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// Pack builds the next message from recs (in order), taking as many records
// as fit within maxBytes (body + properties). A first record that alone
// exceeds maxBytes is sent by itself so the queue never stalls. It returns
// the message and the number of records consumed (0 only for empty recs).
func Pack(recs []spool.Record, maxBytes int) (Message, int, error) {
	if len(recs) == 0 {
		return Message{}, 0, nil
	}
	id := NewMessageID()
	props := Properties(id)
	m := Message{ID: id, Properties: props}
	overhead := m.Size()
	body := make([]byte, 0, min(maxBytes, 4096))
	body = append(body, `{"records":[`...)
	var scratch []byte
	n := 0
	for _, r := range recs {
		scratch = AppendRecord(scratch[:0], r)
		extra := len(scratch) + 2 // separator and closing "]}"
		if n > 0 {
			extra++
		}
		if n > 0 && overhead+len(body)+extra > maxBytes {
			break
		}
		if n > 0 {
			body = append(body, ',')
		}
		body = append(body, scratch...)
		m.Seqs = append(m.Seqs, r.Seq)
		n++
	}
	body = append(body, "]}"...)
	if len(body) > 256*1024 {
		return Message{}, 0, fmt.Errorf("telemetry: record %d encodes to %d bytes, over IoT Hub's 256 KB message limit", recs[0].Seq, len(body))
	}
	m.Body = body
	return m, n, nil
}

// Decode parses a telemetry body (used by tests, the emulator's watch view
// and benchmarks).
func Decode(body []byte) ([]DecodedRecord, error) {
	var doc struct {
		Records []DecodedRecord `json:"records"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("telemetry: decode body: %w", err)
	}
	return doc.Records, nil
}

// DecodedRecord is a record as found in a message body.
type DecodedRecord struct {
	Seq    uint64             `json:"seq"`
	TS     time.Time          `json:"ts"`
	Sensor string             `json:"sensor"`
	Values map[string]float64 `json:"values"`
}
