package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a command's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDevLogs: through `skiff dev`, `skiff logs -f` prints what a ticking
// module writes after it started and ends when the container does;
// --tail, --timestamps and --limit-bytes shape the output, and bad flags
// are refused by name.
func TestDevLogs(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "ticker", buildWasm(t, "testdata/ticker"))
	c.mustSkiff("apply", "-f", writeFile(t, "ticker.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  restartPolicy: Never\n  containers:\n  - name: ticker\n    image: ticker\n"))
	c.waitPhase("ticker", "Running")
	tickRE := regexp.MustCompile(`tick (\d+)\n`)
	lastTick := func(s string) int {
		m := tickRE.FindAllStringSubmatch(s, -1)
		if len(m) == 0 {
			return -1
		}
		n, _ := strconv.Atoi(m[len(m)-1][1])
		return n
	}
	eventually(t, 30*time.Second, func() bool { return lastTick(c.mustSkiff("logs", "ticker")) >= 2 },
		func() string { return "ticker printed nothing" })

	// Follow from the end: only what comes next.
	root := newRoot()
	out := &lockedBuffer{}
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs([]string{"--server", c.server, "--config", c.config, "logs", "ticker", "-f", "--tail", "0"})
	start := lastTick(c.mustSkiff("logs", "ticker"))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(context.Background()) }()
	eventually(t, 30*time.Second, func() bool { return lastTick(out.String()) >= start+5 },
		func() string {
			return fmt.Sprintf("skiff logs -f printed %q, want the ticks after %d", out.String(), start)
		})
	first := tickRE.FindStringSubmatch(out.String())
	if n, _ := strconv.Atoi(first[1]); n < start {
		t.Errorf("with --tail 0 the follower printed tick %d, written before it started (tick %d)", n, start)
	}

	tail := c.mustSkiff("logs", "ticker", "--tail", "2", "--timestamps")
	if lines := strings.Split(strings.TrimSuffix(tail, "\n"), "\n"); len(lines) != 2 ||
		!regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z tick \d+$`).MatchString(lines[0]) {
		t.Errorf("--tail 2 --timestamps printed %q", tail)
	}
	if got := c.mustSkiff("logs", "ticker", "--limit-bytes", "6"); got != "tick 0" {
		t.Errorf("--limit-bytes 6 printed %q, want %q", got, "tick 0")
	}
	if got := c.mustSkiff("logs", "ticker", "--since", "1h", "--tail", "1"); !tickRE.MatchString(got) {
		t.Errorf("--since 1h printed %q", got)
	}
	for flag, want := range map[string][]string{
		"--tail":        {"--tail", "-5"},
		"--since":       {"--since", "-1s"},
		"--limit-bytes": {"--limit-bytes", "-1"},
	} {
		_, err := c.skiff(append([]string{"logs", "ticker"}, want...)...)
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("skiff logs %v: %v, want an error naming %s", want, err, flag)
		}
	}

	// The container ends: so does the follower.
	c.mustSkiff("delete", "pod", "ticker", "--grace-period", "0", "--force")
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("skiff logs -f: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("skiff logs -f still runs after the container ended; printed %q", out.String())
	}
}
