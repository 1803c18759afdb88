package pki

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"
	"time"
)

const (
	// renewRetry is how long Renew waits after a failed renewal.
	renewRetry = 10 * time.Second
	// maxRenewWait bounds one wait, so that a machine that slept or a
	// clock that jumped is noticed within it: timers run on the monotonic
	// clock, certificates expire on the wall clock.
	maxRenewWait = time.Hour
)

// Renew keeps cred fresh until ctx ends: once two thirds of its
// certificate's lifetime have passed it calls renew, which returns a new
// certificate and key, and Updates cred with them; after a failure it logs
// at Warn and tries again every 10 s. It returns when ctx ends.
func Renew(ctx context.Context, cred *Credential, renew func(ctx context.Context) (certPEM []byte, key crypto.Signer, err error), log *slog.Logger) {
	renewer{clock: realClock{}, retry: renewRetry}.run(ctx, cred, renew, log)
}

// clock is the time Renew reads and waits on; tests inject a fake.
type clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a
	// function that stops the wait.
	After(d time.Duration) (<-chan time.Time, func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

type renewer struct {
	clock clock
	retry time.Duration
}

// renewAt is when two thirds of cred's current lifetime have passed.
func renewAt(cred *Credential) time.Time {
	nb, na := cred.NotBefore(), cred.NotAfter()
	return nb.Add(na.Sub(nb) / 3 * 2)
}

func (r renewer) run(ctx context.Context, cred *Credential, renew func(context.Context) ([]byte, crypto.Signer, error), log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("identity", cred.Identity().String())
	for {
		now := r.clock.Now()
		if wait := renewAt(cred).Sub(now); wait > 0 {
			if !r.sleep(ctx, min(wait, maxRenewWait)) {
				return
			}
			continue
		}
		err := r.renewOnce(ctx, cred, renew, now)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			log.Info("certificate renewed", "not_after", cred.NotAfter())
			continue
		}
		log.Warn("renew certificate", "err", err, "not_after", cred.NotAfter(), "retry_in", r.retry)
		if !r.sleep(ctx, r.retry) {
			return
		}
	}
}

// renewOnce gets a new certificate and puts it in cred.
func (r renewer) renewOnce(ctx context.Context, cred *Credential, renew func(context.Context) ([]byte, crypto.Signer, error), now time.Time) error {
	certPEM, key, err := renew(ctx)
	if err != nil {
		return fmt.Errorf("renew certificate: %w", err)
	}
	if err := cred.Update(certPEM, key); err != nil {
		return fmt.Errorf("renew certificate: %w", err)
	}
	if !renewAt(cred).After(now) {
		// Kept (it is what renew gave), but retried at the retry pace
		// rather than at once, in a loop.
		return fmt.Errorf("renew certificate: the new certificate (valid %s to %s) is already due for renewal", cred.NotBefore(), cred.NotAfter())
	}
	return nil
}

// sleep waits d, or until ctx ends (false).
func (r renewer) sleep(ctx context.Context, d time.Duration) bool {
	ch, stop := r.clock.After(d)
	defer stop()
	select {
	case <-ctx.Done():
		return false
	case <-ch:
		return true
	}
}
