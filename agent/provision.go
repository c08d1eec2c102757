package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/provisioning"
	"github.com/fieldgate/fieldgate/sas"
)

// provision returns the hub assignment: for source = "manual" straight from
// the config; for DPS from the cache when it matches the current identity
// (unless force), otherwise by registering (retrying until it succeeds or
// ctx ends) and caching the result.
func (a *Agent) provision(ctx context.Context, key *sas.Key, regID string, force bool) (provisioning.Assignment, error) {
	p := a.cfg.Provisioning
	if p.Source == config.SourceManual {
		return provisioning.Assignment{Hub: p.HubHost, DeviceID: p.DeviceID}, nil
	}
	fp, err := provisioning.KeyFingerprint(key)
	if err != nil {
		return provisioning.Assignment{}, fmt.Errorf("agent: key fingerprint: %w", err)
	}
	want := provisioning.Identity{IDScope: p.IDScope, RegistrationID: regID, Endpoint: p.GlobalEndpoint, KeyFingerprint: fp}
	if !force {
		asg, ok, err := provisioning.LoadCache(a.cfg.State.Dir, want)
		switch {
		case err != nil:
			a.log.Warn("provisioning cache unusable: registering with DPS", "err", err)
		case ok:
			a.log.Info("using cached assignment (DPS not called)", "hub", asg.Hub, "device_id", asg.DeviceID,
				"assigned_at", asg.AssignedAt.UTC().Format(time.RFC3339))
			return asg, nil
		default:
			a.log.Info("no cached assignment for this identity: registering with DPS", "registration_id", regID)
		}
	} else {
		a.log.Info("re-provisioning: registering with DPS", "registration_id", regID)
	}
	a.setStatus("provisioning through DPS as " + regID)

	hc, err := a.httpClient()
	if err != nil {
		return provisioning.Assignment{}, err
	}
	var payload json.RawMessage
	if len(p.Payload) > 0 {
		payload, err = json.Marshal(p.Payload)
		if err != nil {
			return provisioning.Assignment{}, fmt.Errorf("agent: provisioning.payload: %w", err)
		}
	}
	client, err := provisioning.New(provisioning.Options{
		Endpoint:       p.GlobalEndpoint,
		IDScope:        p.IDScope,
		RegistrationID: regID,
		Signer:         key,
		Payload:        payload,
		HTTPClient:     hc,
		Now:            a.sync.Now,
		Clock:          a.clk,
		Logger:         a.log.With("component", "provisioning"),
		UserAgent:      "fieldgate/" + a.o.Version,
	})
	if err != nil {
		return provisioning.Assignment{}, err
	}
	for attempt := 0; ; attempt++ {
		asg, err := client.Register(ctx)
		if err == nil {
			if err := provisioning.SaveCache(a.cfg.State.Dir, asg); err != nil {
				a.log.Warn("assignment not cached (DPS will be called again at next start)", "err", err)
			}
			a.log.Info("provisioned", "hub", asg.Hub, "device_id", asg.DeviceID, "substatus", asg.Substatus)
			return asg, nil
		}
		if ctx.Err() != nil {
			return provisioning.Assignment{}, ctx.Err()
		}
		a.setProvErr(err)
		// Disabled / failed registrations are terminal for DPS but an
		// operator can fix the enrollment: try again much later rather than
		// exiting (a restart loop would only hammer DPS).
		wait := 5 * time.Minute
		if !errors.Is(err, provisioning.ErrDisabled) && !errors.Is(err, provisioning.ErrFailed) {
			wait = time.Duration(float64(time.Minute) * (0.5 + rand.Float64()))
		}
		a.log.Error("provisioning failed; will retry", "err", err, "retry_in", wait.Round(time.Second), "attempt", attempt+1)
		select {
		case <-ctx.Done():
			return provisioning.Assignment{}, ctx.Err()
		case <-a.clk.After(wait):
		}
	}
}

// ProvisionOnce syncs time, loads the key and returns the assignment (from
// the cache unless force), registering with DPS when needed. It is what
// `fieldgate provision` runs.
func (a *Agent) ProvisionOnce(ctx context.Context, force bool) (provisioning.Assignment, error) {
	defer a.spool.Close()
	if _, err := a.sync.Sync(ctx); err != nil {
		a.log.Warn("no trusted time: continuing on the system clock", "err", err)
	}
	key, regID, err := a.loadIdentity()
	if err != nil {
		return provisioning.Assignment{}, err
	}
	defer key.Destroy()
	return a.provision(ctx, key, regID, force)
}
