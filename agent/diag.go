package agent

import (
	"time"
)

// Diagnostics is what getDiagnostics returns and what the twin's "fieldgate"
// section reports. It never holds secrets.
type Diagnostics struct {
	Version      string                  `json:"version"`
	StartTime    time.Time               `json:"startTime"`
	Now          time.Time               `json:"now"`
	Clock        ClockInfo               `json:"clock"`
	Provisioning ProvisioningInfo        `json:"provisioning"`
	Hub          HubInfo                 `json:"hub"`
	Spool        SpoolInfo               `json:"spool"`
	Sensors      map[string]SensorStatus `json:"sensors"`
	Outputs      map[string]bool         `json:"outputs"`
}

// ClockInfo describes the corrected clock.
type ClockInfo struct {
	Synced    bool      `json:"synced"`
	Source    string    `json:"source"`
	Server    string    `json:"server,omitempty"`
	OffsetMs  int64     `json:"offsetMs"`
	LastSync  time.Time `json:"lastSync,omitzero"`
	LastError string    `json:"lastError,omitempty"`
}

// ProvisioningInfo describes the assignment.
type ProvisioningInfo struct {
	Source         string    `json:"source"`
	Hub            string    `json:"hub,omitempty"`
	DeviceID       string    `json:"deviceId,omitempty"`
	RegistrationID string    `json:"registrationId,omitempty"`
	AssignedAt     time.Time `json:"assignedAt,omitzero"`
	Substatus      string    `json:"substatus,omitempty"`
	LastError      string    `json:"lastError,omitempty"`
}

// HubInfo describes the hub session.
type HubInfo struct {
	State        string    `json:"state"`
	Transport    string    `json:"transport"`
	ConnectedAt  time.Time `json:"connectedAt,omitzero"`
	TokenExpiry  time.Time `json:"tokenExpiry,omitzero"`
	Connects     int       `json:"connects"`
	LastError    string    `json:"lastError,omitempty"`
	Published    uint64    `json:"publishedRecords"`
	Messages     uint64    `json:"publishedMessages"`
	LastDisconn  string    `json:"lastDisconnect,omitempty"`
	AuthFailures int       `json:"authFailures"`
}

// SpoolInfo describes the spool.
type SpoolInfo struct {
	Depth     int    `json:"depth"`
	Bytes     int64  `json:"bytes"`
	Dropped   uint64 `json:"dropped"`
	NextSeq   uint64 `json:"nextSeq"`
	InMemory  bool   `json:"inMemory"`
	LastError string `json:"lastError,omitempty"`
}

// Diagnostics returns the agent's current state.
func (a *Agent) Diagnostics() Diagnostics {
	st := a.sync.Status()
	sp := a.spool.Stats()
	a.mu.Lock()
	asg, provErr, hc := a.assignment, a.provErr, a.hubClient
	published, messages := a.published, a.messages
	a.mu.Unlock()
	d := Diagnostics{
		Version:   a.o.Version,
		StartTime: a.start.UTC(),
		Now:       a.sync.Now().UTC(),
		Clock: ClockInfo{Synced: st.Synced, Source: string(st.Source), Server: st.Server,
			OffsetMs: st.Offset.Milliseconds(), LastSync: st.LastSync, LastError: st.LastError},
		Provisioning: ProvisioningInfo{Source: a.cfg.Provisioning.Source, Hub: asg.Hub, DeviceID: asg.DeviceID,
			RegistrationID: asg.RegistrationID, AssignedAt: asg.AssignedAt, Substatus: asg.Substatus, LastError: provErr},
		Spool: SpoolInfo{Depth: sp.Depth, Bytes: sp.Bytes, Dropped: sp.Dropped, NextSeq: sp.NextSeq,
			InMemory: sp.InMemory, LastError: sp.LastError},
		Sensors: a.currentSampler().statuses(),
		Outputs: a.outputs.states(),
	}
	d.Hub = HubInfo{State: "idle", Transport: a.cfg.Hub.Transport, Published: published, Messages: messages}
	if hc != nil {
		hs := hc.Status()
		d.Hub.State = string(hs.State)
		d.Hub.ConnectedAt = hs.ConnectedAt
		d.Hub.TokenExpiry = hs.TokenExpiry
		d.Hub.Connects = hs.Connects
		d.Hub.LastError = hs.LastError
		d.Hub.LastDisconn = hs.LastDisconnect
		d.Hub.AuthFailures = hs.AuthFailures
	}
	return d
}
