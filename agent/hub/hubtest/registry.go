package hubtest

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

// Device status values.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// Device is an identity-registry entry authenticated with symmetric keys.
// PrimaryKey and SecondaryKey are credentials.
type Device struct {
	ID           string    `json:"deviceId"`
	PrimaryKey   string    `json:"primaryKey"`
	SecondaryKey string    `json:"secondaryKey"`
	Status       string    `json:"status"` // "enabled" (default) or "disabled"
	StatusReason string    `json:"statusReason,omitempty"`
	ETag         string    `json:"etag"`
	GenerationID string    `json:"generationId"`
	Updated      time.Time `json:"updated"` // emulator clock, last registry change
}

// deviceState is everything the hub keeps per device. Guarded by Hub.mu.
type deviceState struct {
	dev     Device
	primary *sas.Key
	second  *sas.Key
	twin    Twin
	c2d     []*c2dEntry
	etagSeq int
}

// ValidDeviceID reports whether id is a legal IoT Hub device id: 1–128
// ASCII letters, digits or any of - . % _ * ? ! ( ) , : = @ $ '.
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == '%' || c == '_' || c == '*' || c == '?' || c == '!' ||
			c == '(' || c == ')' || c == ',' || c == ':' || c == '=' || c == '@' || c == '$' || c == '\'':
		default:
			return false
		}
	}
	return true
}

// UpsertDevice creates deviceID with primaryKey (and a generated secondary
// key), or replaces the primary key of an existing device keeping its
// status. It satisfies dpstest.DeviceRegistry.
func (h *Hub) UpsertDevice(deviceID, primaryKey string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := Device{ID: deviceID, PrimaryKey: primaryKey}
	if ds := h.devices[deviceID]; ds != nil {
		d = ds.dev
		d.PrimaryKey = primaryKey
	}
	_, err := h.putDeviceLocked(d, "")
	return err
}

// PutDevice creates or replaces a device. Empty keys are generated; an empty
// status means enabled. Disabling a device closes its connection.
func (h *Hub) PutDevice(d Device) error {
	h.mu.Lock()
	_, err := h.putDeviceLocked(d, "")
	var drop *conn
	if err == nil && d.Status == StatusDisabled {
		drop = h.current[d.ID]
		if drop != nil && drop.reason == "" {
			drop.reason = "device disabled"
		}
	}
	h.mu.Unlock()
	if drop != nil {
		drop.cl.Stop(errDisabled)
	}
	return err
}

// putDeviceLocked validates and stores d; ifMatch ("" or "*" = any) must
// equal the current etag for an update. Caller holds mu.
func (h *Hub) putDeviceLocked(d Device, ifMatch string) (Device, error) {
	if !ValidDeviceID(d.ID) {
		return Device{}, fmt.Errorf("hubtest: device id %q: want 1-128 letters, digits or - . %% _ * ? ! ( ) , : = @ $ ': %w", d.ID, ErrInvalidArgument)
	}
	switch d.Status {
	case "":
		d.Status = StatusEnabled
	case StatusEnabled, StatusDisabled:
	default:
		return Device{}, fmt.Errorf("hubtest: device %q status %q: want enabled or disabled: %w", d.ID, d.Status, ErrInvalidArgument)
	}
	if d.PrimaryKey == "" {
		d.PrimaryKey = newKey()
	}
	if d.SecondaryKey == "" {
		d.SecondaryKey = newKey()
	}
	pk, err := sas.ParseKey(d.PrimaryKey)
	if err != nil {
		return Device{}, fmt.Errorf("hubtest: device %q primary key: %w: %w", d.ID, err, ErrInvalidArgument)
	}
	sk, err := sas.ParseKey(d.SecondaryKey)
	if err != nil {
		return Device{}, fmt.Errorf("hubtest: device %q secondary key: %w: %w", d.ID, err, ErrInvalidArgument)
	}
	d.PrimaryKey, d.SecondaryKey = pk.Base64(), sk.Base64()
	now := h.now().UTC()
	ds := h.devices[d.ID]
	if ds != nil && ifMatch != "" && ifMatch != "*" && ifMatch != ds.dev.ETag {
		return Device{}, fmt.Errorf("hubtest: device %q: If-Match %q, current etag %q: %w", d.ID, ifMatch, ds.dev.ETag, ErrPreconditionFailed)
	}
	created := ds == nil
	if created {
		ds = &deviceState{twin: newTwin(d.ID)}
		d.GenerationID = strconv.FormatInt(now.UnixNano(), 10)
	} else {
		d.GenerationID = ds.dev.GenerationID
	}
	ds.etagSeq++
	d.ETag = base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(ds.etagSeq)))
	d.Updated = now
	old := ds.dev
	ds.dev, ds.primary, ds.second = d, pk, sk
	if created {
		h.devices[d.ID] = ds
	}
	if err := h.saveDevicesLocked(); err != nil {
		if created {
			delete(h.devices, d.ID)
		} else {
			ds.dev = old
			ds.primary, _ = sas.ParseKey(old.PrimaryKey)
			ds.second, _ = sas.ParseKey(old.SecondaryKey)
		}
		return Device{}, err
	}
	if created {
		if err := h.saveTwinsLocked(); err != nil {
			return Device{}, err
		}
	}
	return d, nil
}

// Device returns the registry entry of id.
func (h *Hub) Device(id string) (Device, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := h.devices[id]
	if ds == nil {
		return Device{}, false
	}
	return ds.dev, true
}

// Devices returns every registry entry, in no particular order.
func (h *Hub) Devices() []Device {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Device, 0, len(h.devices))
	for _, ds := range h.devices {
		out = append(out, ds.dev)
	}
	return out
}

// DeleteDevice removes a device, its twin and its C2D queue, and closes its
// connection.
func (h *Hub) DeleteDevice(id string) error {
	return h.deleteDevice(id, "")
}

func (h *Hub) deleteDevice(id, ifMatch string) error {
	h.mu.Lock()
	ds := h.devices[id]
	if ds == nil {
		h.mu.Unlock()
		return fmt.Errorf("hubtest: delete device %q: %w", id, ErrDeviceNotFound)
	}
	if ifMatch != "" && ifMatch != "*" && ifMatch != ds.dev.ETag {
		h.mu.Unlock()
		return fmt.Errorf("hubtest: delete device %q: If-Match %q, current etag %q: %w", id, ifMatch, ds.dev.ETag, ErrPreconditionFailed)
	}
	delete(h.devices, id)
	err := h.saveAllLocked()
	drop := h.current[id]
	if drop != nil && drop.reason == "" {
		drop.reason = "device deleted"
	}
	h.mu.Unlock()
	if drop != nil {
		drop.cl.Stop(errDeleted)
	}
	return err
}
