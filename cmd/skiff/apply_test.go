package main

import (
	"errors"
	"testing"

	"connectrpc.com/connect"
)

// TestRetryOnConflict: apply reads and writes again after a conflict (an
// agent wrote the pod's status between apply's read and write), a bounded
// number of times, and not after any other error.
func TestRetryOnConflict(t *testing.T) {
	conflict := connect.NewError(connect.CodeAborted, errors.New("the object has been modified"))
	for _, tt := range []struct {
		name      string
		conflicts int // before success
		other     error
		calls     int
		wantErr   bool
	}{
		{"conflicts then success", 2, nil, 3, false},
		{"conflicts every time", 100, nil, 5, true},
		{"another error", 0, connect.NewError(connect.CodeInvalidArgument, errors.New("bad")), 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			did, err := retryOnConflict(5, func() (string, error) {
				calls++
				switch {
				case tt.other != nil:
					return "", tt.other
				case calls <= tt.conflicts:
					return "", conflict
				}
				return "configured", nil
			})
			if calls != tt.calls || (err != nil) != tt.wantErr || (err == nil && did != "configured") {
				t.Errorf("%d calls, %q, %v; want %d calls, error %v", calls, did, err, tt.calls, tt.wantErr)
			}
		})
	}
}
