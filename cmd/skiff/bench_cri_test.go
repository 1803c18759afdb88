package main

import (
	"strings"
	"testing"
)

func TestBenchCRIFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--image", "x"}, "--endpoint"},
		{[]string{"--endpoint", "/run/cri.sock", "--image", "x"}, "unix:///PATH"},
		{[]string{"--endpoint", "unix:///run/cri.sock"}, "--image is required"},
		{[]string{"--endpoint", "unix:///run/cri.sock", "--image", "x", "--runs", "0"}, "--runs 0"},
	} {
		root := newRoot()
		root.SetArgs(append([]string{"bench", "cri"}, tc.args...))
		var out strings.Builder
		root.SetOut(&out)
		root.SetErr(&out)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench cri %v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}
