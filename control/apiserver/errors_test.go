package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

var errLeadershipLost = errors.New("leadership lost while committing log")

// TestStoreErrorCodes: each store error reaches the client as the code it
// can act on. A write whose outcome is unknown is Unavailable and says so,
// never Internal, NotFound, Aborted (conflict) or a context code, and a
// write refused before it was proposed does not claim an unknown outcome.
func TestStoreErrorCodes(t *testing.T) {
	unknown := func(cause error) error {
		return &store.OutcomeUnknownError{Verb: "txn", Key: "/pods/default/x", Err: cause}
	}
	tests := []struct {
		name     string
		err      error
		code     connect.Code
		contains string
		unknown  bool // the message says the outcome is unknown
	}{
		{"leadership lost", unknown(errLeadershipLost), connect.CodeUnavailable,
			`create pod "default/x": outcome unknown: the write was proposed but its result was lost (leadership lost while committing log); get the object to see whether it happened`, true},
		{"deadline while waiting", unknown(context.DeadlineExceeded), connect.CodeUnavailable,
			`create pod "default/x": outcome unknown: the write was proposed but its result was lost (context deadline exceeded)`, true},
		{"store failed after proposing", unknown(fmt.Errorf("store in /d failed at index 7: state.db write failed: %w", store.ErrNotFound)), connect.CodeUnavailable,
			"outcome unknown", true},
		{"bare sentinel", fmt.Errorf("txn /pods/default/x: %w", store.ErrOutcomeUnknown), connect.CodeUnavailable,
			"get the object to see whether it happened", true},
		{"not the leader", fmt.Errorf("txn /pods/default/x: %w", store.ErrNotLeader), connect.CodeUnavailable, "not the leader", false},
		{"closed", fmt.Errorf("txn /pods/default/x: %w", store.ErrClosed), connect.CodeUnavailable, "store closed", false},
		{"not found", fmt.Errorf("txn /pods/default/x: %w", store.ErrNotFound), connect.CodeNotFound, `pod "default/x" not found`, false},
		{"conflict", fmt.Errorf("txn /pods/default/x: %w", store.ErrConflict), connect.CodeAborted, "modified", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := objectErr("create", "pod", "default/x", tt.err)
			if c := connect.CodeOf(got); c != tt.code {
				t.Errorf("objectErr code %v, want %v (%v)", c, tt.code, got)
			}
			msg := got.(*connect.Error).Message()
			if !strings.Contains(msg, tt.contains) {
				t.Errorf("objectErr message %q, want it to contain %q", msg, tt.contains)
			}
			if says := strings.Contains(msg, "outcome unknown"); says != tt.unknown {
				t.Errorf("objectErr message %q: says outcome unknown %v, want %v", msg, says, tt.unknown)
			}
			if tt.unknown {
				if c := connect.CodeOf(toConnect(tt.err)); c != connect.CodeUnavailable {
					t.Errorf("toConnect code %v, want Unavailable", c)
				}
			}
		})
	}
}

// lossyStore is a real store whose writes all lose their answer.
type lossyStore struct {
	Store
	cause error
}

func (s lossyStore) Txn(context.Context, store.Txn) (store.TxnResult, error) {
	return store.TxnResult{}, &store.OutcomeUnknownError{Verb: "txn", Key: "/pods/default/x", Err: s.cause}
}

// TestCreateOutcomeUnknown: what a client of the API reads when a create's
// answer is lost.
func TestCreateOutcomeUnknown(t *testing.T) {
	rs := realServer(t)
	s := New(Config{Store: lossyStore{Store: rs.b.store, cause: errLeadershipLost}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	pods := skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL)
	_, err := pods.Create(context.Background(), connect.NewRequest(pod("x")))
	if c := connect.CodeOf(err); c != connect.CodeUnavailable {
		t.Fatalf("create: %v, want Unavailable", err)
	}
	want := `create pod "default/x": outcome unknown: the write was proposed but its result was lost (leadership lost while committing log); get the object to see whether it happened`
	if msg := err.(*connect.Error).Message(); msg != want {
		t.Errorf("create: %q\nwant %q", msg, want)
	}
}

// TestHealthz: /healthz is 200 "ok" while Health returns nil, 503 with the
// reason when it does not.
func TestHealthz(t *testing.T) {
	var reason atomic.Pointer[string] // nil: healthy
	s := New(Config{Store: lossyStore{}, Health: func() error {
		if r := reason.Load(); r != nil {
			return errors.New(*r)
		}
		return nil
	}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	get := func() (int, string) {
		t.Helper()
		res, err := srv.Client().Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, body := get(); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthy: %d %q, want 200 ok", code, body)
	}
	why := "store in /d failed at index 7: state.db write failed: disk full"
	reason.Store(&why)
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, why) {
		t.Errorf("unhealthy: %d %q, want 503 with the reason", code, body)
	}
}
