package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

var errInjected = errors.New("injected: no space left on device")

// TestFailStop runs a server whose state.db write fails on the next apply,
// as on a full disk, and checks what its users see: the write that met the
// failure is answered Unavailable "outcome unknown"; /healthz says 503 and
// why while the server is still stopping; every later call is Unavailable;
// and Run ends with an error naming the data directory and the cause, even
// when its ctx is cancelled meanwhile (a service manager stopping it).
func TestFailStop(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		// stop ends the grace: cancel Run's ctx, or let it run out.
		cancel bool
	}{
		{"stopped during the grace", time.Minute, true},
		{"grace runs out", time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var armed atomic.Bool
			dir := t.TempDir()
			s, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			s.cfg.failStopGrace = tt.grace
			s.cfg.applyHook = func(uint64) error {
				if armed.Load() {
					return errInjected
				}
				return nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ran := make(chan error, 1)
			go func() { ran <- s.Run(ctx) }()
			select {
			case <-s.Ready():
			case err := <-ran:
				t.Fatalf("Run: %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("server not ready")
			}
			base := s.Admin().Server
			hc := apiClient(t, s)
			pods := skiffv1connect.NewPodServiceClient(hc, base)
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
			defer ccancel()

			armed.Store(true)
			_, err = pods.Create(cctx, connect.NewRequest(testPod("x")))
			if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), `create pod "default/x": outcome unknown`) {
				t.Fatalf("create on a failing disk: %v, want Unavailable outcome unknown", err)
			}

			wantErr := "store in " + filepath.Join(dir, "server") + " failed at index "
			wantTail := "state.db write failed: " + errInjected.Error() + "; this server stopped (fail-stop); fix the disk and restart it"
			if tt.cancel {
				// The create's answer comes after the store recorded the
				// failure, so /healthz says so at once.
				code, body := healthz(t, hc, base)
				if code != http.StatusServiceUnavailable || !strings.Contains(body, wantErr) || !strings.Contains(body, wantTail) {
					t.Errorf("/healthz after the failure: %d %q, want 503 with the reason", code, body)
				}
				_, err = pods.Get(cctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: "x"}))
				if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "store closed") {
					t.Errorf("get after the failure: %v, want Unavailable store closed", err)
				}
				select {
				case err := <-ran:
					t.Fatalf("Run returned during the grace: %v", err)
				default:
				}
				cancel()
			}

			select {
			case err = <-ran:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after the store failed")
			}
			if err == nil || !strings.HasPrefix(err.Error(), wantErr) || !strings.HasSuffix(err.Error(), wantTail) || !errors.Is(err, errInjected) {
				t.Errorf("Run = %v\nwant %q...%q", err, wantErr, wantTail)
			}
		})
	}
}

// healthz gets base's /healthz through hc.
func healthz(t *testing.T, hc *http.Client, base string) (int, string) {
	t.Helper()
	res, err := hc.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	return res.StatusCode, string(body)
}

func testPod(name string) *skiffv1.Pod {
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name},
		Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
	}
}
