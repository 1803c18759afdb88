package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/server"
)

// benchSkiff runs skiff with args and returns what it printed on stdout.
func benchSkiff(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&progress)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	t.Logf("skiff %s:\n%s%s", strings.Join(args, " "), out.String(), progress.String())
	return out.String(), err
}

// benchTable returns the rows of the table whose header starts with title,
// each split into its fields.
func benchTable(t *testing.T, out, title string) [][]string {
	t.Helper()
	var rows [][]string
	in := false
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == title:
			in = true
		case len(f) == 0:
			in = false
		case in:
			rows = append(rows, f)
		}
	}
	if len(rows) == 0 {
		t.Fatalf("no %s table in:\n%s", title, out)
	}
	return rows
}

// positive parses a figure (a number, or milliseconds as "1.25ms") and
// fails the test unless it is above zero.
func positive(t *testing.T, what, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "ms"), 64)
	if err != nil || v <= 0 {
		t.Errorf("%s is %q, want a positive figure", what, s)
	}
	return v
}

// TestBenchStore runs the whole bench, tiny, against a server of its own:
// a row for each client count, the two lists and the watch, each with its
// figures, and the server's data directory gone afterwards.
func TestBenchStore(t *testing.T) {
	out, err := benchSkiff(t, "bench", "store", "--writes", "50", "--clients", "1,4", "--list-pods", "50", "--watchers", "3", "--watch-pods", "10")
	if err != nil {
		t.Fatal(err)
	}

	writes := benchTable(t, out, "WRITES")
	if len(writes) != 2 {
		t.Fatalf("writes table has %d rows, want one per client count (1,4):\n%s", len(writes), out)
	}
	for i, clients := range []string{"1", "4"} {
		r := writes[i]
		if len(r) != 7 || r[0] != "namespaces" || r[1] != "512" || r[2] != clients || r[3] != "50" {
			t.Errorf("writes row %d is %q, want namespaces, size 512, %s clients, 50 objects", i, r, clients)
			continue
		}
		positive(t, "writes/s with "+clients+" client(s)", r[4])
		p50 := positive(t, "p50 with "+clients+" client(s)", r[5])
		if p99 := positive(t, "p99 with "+clients+" client(s)", r[6]); p99 < p50 {
			t.Errorf("p99 %s is below p50 %s", r[6], r[5])
		}
	}

	lists := benchTable(t, out, "LIST")
	want := [][]string{{"pods", "-", "50", "50", "20"}, {"pods", nowhereSelector, "50", "0", "20"}}
	if len(lists) != len(want) {
		t.Fatalf("list table has %d rows, want %d:\n%s", len(lists), len(want), out)
	}
	for i, r := range lists {
		if len(r) != 7 || strings.Join(r[:5], " ") != strings.Join(want[i], " ") {
			t.Errorf("list row %d is %q, want it to start %q", i, r, want[i])
			continue
		}
		positive(t, "list p50", r[5])
		positive(t, "list p99", r[6])
	}

	watch := benchTable(t, out, "WATCH")
	if len(watch) != 1 || len(watch[0]) != 6 || watch[0][1] != "3" || watch[0][2] != "10" {
		t.Fatalf("watch table is %q, want one row for 3 watchers of 10 pods", watch)
	}
	// Every watcher sees each pod added at least; the scheduler's status
	// updates may add more.
	if events := positive(t, "watch events", watch[0][3]); events < 30 {
		t.Errorf("watch events %s, want at least 3 watchers × 10 pods", watch[0][3])
	}
	positive(t, "watch time", watch[0][4])
	positive(t, "watch events/s", watch[0][5])

	m := regexp.MustCompile(`data in (\S+) `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output does not say where the server's data was:\n%s", out)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("the bench's data dir %s is still there (stat: %v)", m[1], err)
	}
}

// TestBenchStoreAgainstAServer: with --server the bench measures that
// server, and leaves none of its pods behind.
func TestBenchStoreAgainstAServer(t *testing.T) {
	dataDir := t.TempDir()
	srv, err := server.New(server.Config{DataDir: dataDir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("server: %v", err)
	}
	// The admin's client config, as skiff server writes it.
	a := srv.Admin()
	admin := clientConfig{Server: a.Server, Token: a.Token, CA: string(a.CA)}
	config := adminConfigPath(dataDir)
	if err := admin.save(config); err != nil {
		t.Fatal(err)
	}

	out, err := benchSkiff(t, "--config", config, "--server", srv.Addr(), "bench", "store", "--kind", "pods", "--writes", "20", "--clients", "2",
		"--list-pods", "10", "--watchers", "2", "--watch-pods", "5")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "target: server at "+srv.Addr()+"\n") {
		t.Errorf("the output does not name the server %s:\n%s", srv.Addr(), out)
	}
	if r := benchTable(t, out, "WRITES"); len(r) != 1 || r[0][0] != "pods" {
		t.Errorf("writes table %q, want one row of pods", r)
	}
	cl, err := newClients(admin)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cl.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{LabelSelector: benchLabel}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pods.Msg.GetItems()); n != 0 {
		t.Errorf("the bench left %d pods behind", n)
	}
}

// TestBenchStoreFlags: a bad flag is refused before anything runs, with
// an error that names it.
func TestBenchStoreFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no clients", []string{"--clients", "0"}, `--clients: invalid value "0": must be 1 or more`},
		{"a bad count in a list", []string{"--clients", "1,x"}, `--clients: invalid value "x": must be a number or a comma-separated list`},
		{"an empty count in a list", []string{"--clients", "1,"}, `--clients: invalid value ""`},
		{"more clients than the server serves", []string{"--clients", "1,300"}, `--clients: invalid value "300": must be at most 256`},
		{"no writes", []string{"--writes", "0"}, `--writes: invalid value "0": must be 1 or more`},
		{"a negative size", []string{"--size", "-1"}, `--size: invalid value "-1": must be from 0 to`},
		{"a size past the annotation limit", []string{"--size", "300000"}, `--size: invalid value "300000"`},
		{"an unknown kind", []string{"--kind", "nodes"}, `--kind: unsupported value "nodes": use namespaces or pods`},
		{"no pods to list", []string{"--list-pods", "0"}, `--list-pods: invalid value "0": must be 1 or more`},
		{"no watchers", []string{"--watchers", "0"}, `--watchers: invalid value "0": must be 1 or more`},
		{"more watchers than the server serves", []string{"--watchers", "1000"}, `--watchers: invalid value "1000": must be at most 900`},
		{"no watched pods", []string{"--watch-pods", "-3"}, `--watch-pods: invalid value "-3": must be 1 or more`},
		{"an argument", []string{"extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An address nothing listens on: a bad flag must fail before
			// the bench reaches for a server.
			args := append([]string{"--config", filepath.Join(t.TempDir(), "none.config"), "--server", "127.0.0.1:1", "bench", "store"}, tt.args...)
			_, err := benchSkiff(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("skiff %s: %v, want an error with %q", strings.Join(args, " "), err, tt.want)
			}
		})
	}
}

// TestBenchSchedule runs the schedule bench, small, on a cluster of three
// of its own, as it is and with a backlog: every pod is bound (the bench
// fails otherwise, and with a backlog if any is bound before the release),
// and each figure is there.
func TestBenchSchedule(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		from string
	}{
		{"default", nil, "create→bound"},
		{"backlog", []string{"--backlog"}, "release→bound"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := benchSkiff(t, append([]string{"bench", "schedule", "--nodes", "50", "--pods", "500", "--timeout", "1m"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			rows := benchTable(t, out, "SCHEDULE")
			if len(rows) != 3 {
				t.Fatalf("schedule table has %d rows, want created, placed and binding:\n%s", len(rows), out)
			}
			for _, r := range rows {
				if len(r) != 5 || r[1] != "50" || r[2] != "500" {
					t.Errorf("row %q, want 50 nodes and 500 pods", r)
					continue
				}
				positive(t, r[0]+" took", r[3])
			}
			lat := benchTable(t, out, "LATENCY")
			if len(lat) != 1 || len(lat[0]) != 4 || lat[0][0] != tt.from {
				t.Fatalf("latency table %q, want one row %s", lat, tt.from)
			}
			positive(t, "p50", lat[0][1])
			positive(t, "p99", lat[0][2])
			if m := regexp.MustCompile(`data in (\S+)`).FindStringSubmatch(out); m == nil {
				t.Errorf("no data directory named in:\n%s", out)
			} else if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
				t.Errorf("data directory %s left behind: %v", m[1], err)
			}
		})
	}
}

func TestBenchScheduleFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "0"}, `--nodes: invalid value "0": must be 1 or more`},
		{[]string{"--servers", "2"}, `--servers: invalid value "2": must be 1 or 3`},
		{[]string{"--nodes", "1", "--pods", "111"}, `--pods: invalid value "111": more than 1 nodes of 110 pods take`},
		{[]string{"--clients", "1000"}, `--clients: invalid value "1000": must be at most 256`},
	} {
		_, err := benchSkiff(t, append([]string{"bench", "schedule"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}
