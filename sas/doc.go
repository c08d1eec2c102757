// Package sas builds, signs, parses and verifies shared access signatures
// (SAS tokens) for Azure IoT Hub, the Device Provisioning Service, the IoT
// Plug and Play model repository, Service Bus style resources and the
// Locatrix Plans Static API, and derives device keys from enrollment-group
// keys.
//
// The package is pure: it does no I/O and never reads the clock. Every expiry
// and every "now" is passed in by the caller, so a device with a corrected
// (NTP) clock signs with the corrected time.
//
// Encoding rule: the resource URI is percent-encoded once with upper-case hex
// (everything except A-Z a-z 0-9 - _ . ~ is encoded) and exactly that string
// is put into sr= and into the string-to-sign. A parsed token keeps sr as it
// was transmitted, and Verify signs over that literal value, which is how the
// cloud accepts the different encodings shipped by Microsoft's SDKs.
//
// Keys are held behind the small Signer interface so that a TPM or HSM signer
// can replace the in-memory Key without changing callers.
package sas
