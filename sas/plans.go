package sas

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PlansStaticRequest holds the signed parameters of a Locatrix Plans Static
// API image URL. Exactly one of the floor, campus or plan code goes in Code.
// Icons and Layers are optional lists: nil means the URL parameter is absent
// (nothing goes into the string-to-sign), a non-nil empty slice means it is
// present but empty ("&icons=") and still takes its place as an empty field.
type PlansStaticRequest struct {
	Code    string   // floor, campus or plan code, e.g. flr_95kpvk552x7ue5xvb4f290a4q
	Icons   []string // nil = absent
	Layers  []string // nil = absent
	Partner string   // partner code
	Expiry  int64    // Unix seconds
}

// StringToSign returns {code}[:{icons}][:{layers}]:{partner}:{expiry}, lists
// comma-joined.
func (r PlansStaticRequest) StringToSign() string {
	parts := []string{r.Code}
	if r.Icons != nil {
		parts = append(parts, strings.Join(r.Icons, ","))
	}
	if r.Layers != nil {
		parts = append(parts, strings.Join(r.Layers, ","))
	}
	parts = append(parts, r.Partner, strconv.FormatInt(r.Expiry, 10))
	return strings.Join(parts, ":")
}

// PlansStaticSignature returns the URL-encoded base64 HMAC-SHA256 of the
// request's string-to-sign, the value of the URL's sas= parameter. The signer
// must hold the API secret as UTF-8 bytes (NewKey([]byte(secret))).
func PlansStaticSignature(r PlansStaticRequest, s Signer) (string, error) {
	if r.Code == "" || r.Partner == "" {
		return "", errors.New("sas: plans static signature: the floor/campus/plan code and the partner code are required")
	}
	if r.Expiry <= 0 {
		return "", fmt.Errorf("sas: plans static signature: expiry %d must be a positive Unix time", r.Expiry)
	}
	sig, err := s.Sign([]byte(r.StringToSign()))
	if err != nil {
		return "", fmt.Errorf("sas: plans static signature: %w", err)
	}
	return Encode(base64.StdEncoding.EncodeToString(sig)), nil
}
