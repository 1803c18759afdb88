package oci

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"skiff.dev/skiff/netns/netnstest"
	skiffrt "skiff.dev/skiff/runtime"

	"go.uber.org/goleak"
)

// The adoption tests run their own binary again as a "node" process
// (nodeEnv names what it does) that creates a container and is then
// killed; the test process adopts the container.
const nodeEnv = "SKIFF_OCI_TEST_NODE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(nodeEnv); mode != "" {
		if err := node(mode, os.Getenv("ROOT"), os.Getenv("LAYER"), os.Getenv("ID")); err != nil {
			fmt.Fprintln(os.Stderr, "node:", err)
			os.Exit(1)
		}
		select {} // until killed
	}
	goleak.VerifyTestMain(m)
}

// node is the node process: it creates (and, but for mode "created",
// starts) a container, says "ready" once the mode's state is reached.
func node(mode, root, layer, id string) error {
	r, err := New(Config{Root: root, CgroupParent: testCgroupParent})
	if err != nil {
		return err
	}
	args := map[string][]string{
		"ticking": {"sh", "-c", "while :; do echo tick; sleep 0.1; done"},
		"exit7":   {"sh", "-c", "exit 7"},
		"created": {"sh", "-c", "echo started"},
		"stdin":   {"sh"},
		"tty":     {"sh", "-c", "trap '' HUP; while :; do sleep 0.1; done"},
	}[mode]
	ctx := context.Background()
	spec := skiffrt.ContainerSpec{ID: id, Layers: []string{layer}, Args: args, Stdin: mode == "stdin", TTY: mode == "tty"}
	if mode == "imagevol" { // TestAdoptImageVolume
		spec.Args = []string{"sleep", "1000"}
		spec.ImageMounts = []skiffrt.ImageMount{{Layers: []string{layer}, SubPath: "etc", ContainerPath: "/mnt/vol"}}
	}
	c, err := r.create(ctx, spec)
	if err != nil {
		return err
	}
	if mode != "created" {
		if err := c.Start(ctx); err != nil {
			return err
		}
	}
	if mode == "exit7" {
		<-c.Done()
	}
	fmt.Println("ready")
	return nil
}

// runNode runs the node process until it is ready, then kills it.
func runNode(t *testing.T, mode, root, layer, id string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+mode, "ROOT="+root, "LAYER="+layer, "ID="+id)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if line != "ready\n" {
		t.Fatalf("node process: %q", line)
	}
}

func TestAdopt(t *testing.T) {
	needRoot(t)
	root, layer := t.TempDir(), busyboxLayer(t)
	r := newRuntime(t, root) // this process, a subreaper from now on
	ctx := context.Background()
	adopt := func(t *testing.T, id string, stdout *syncBuffer) *Container {
		t.Helper()
		c, err := r.adopt(ctx, skiffrt.ContainerSpec{ID: id, Layers: []string{layer}, Stdout: stdout})
		if err != nil {
			t.Fatalf("Adopt: %v", err)
		}
		t.Cleanup(func() { removeContainer(t, c) })
		return c
	}
	cleanup := func(id string) {
		t.Cleanup(func() { r.removeBundle(ctx, id, cgroup{fs: r.cgroups, path: cgroupsPath(testCgroupParent, id)}) })
	}

	t.Run("running", func(t *testing.T) {
		id := newID(t)
		cleanup(id)
		runNode(t, "ticking", root, layer, id)
		var out syncBuffer
		c := adopt(t, id, &out)
		if st := c.Status(); st.State != skiffrt.StateRunning || st.StartedAt.IsZero() {
			t.Fatalf("adopted: %+v, want running since its start", st)
		}
		netnstest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "tick\n") }, func() string { return "output after adoption" })
		if c.Stats().CPUTime <= 0 {
			t.Errorf("Stats: %+v", c.Stats())
		}
		if err := c.Stop(ctx, 0); err != nil {
			t.Fatal(err)
		}
		waitDone(t, c, 10*time.Second)
		if st := c.Status(); st.State != skiffrt.StateExited {
			t.Errorf("after Stop: %+v", st)
		}
		if err := c.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		if left := leftovers(r, id); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	t.Run("exited unwitnessed", func(t *testing.T) {
		id := newID(t)
		cleanup(id)
		runNode(t, "ticking", root, layer, id)
		st, err := r.state(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Kill(st.Pid, syscall.SIGKILL)
		netnstest.Eventually(t, 10*time.Second, func() bool {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", st.Pid))
			return err != nil
		}, func() string { return "the orphaned init reaped" })
		c := adopt(t, id, nil)
		if st := c.Status(); st.State != skiffrt.StateExited || st.ExitCode != skiffrt.ExitCodeUnknown || st.Reason != skiffrt.ReasonUnknown {
			t.Errorf("adopted: %+v, want exited, unknown", st)
		}
		select {
		case <-c.Done():
		default:
			t.Error("Done is open")
		}
	})
	t.Run("exited with a recorded exit", func(t *testing.T) {
		id := newID(t)
		cleanup(id)
		runNode(t, "exit7", root, layer, id)
		c := adopt(t, id, nil)
		if st := c.Status(); st.State != skiffrt.StateExited || st.ExitCode != 7 || st.Reason != skiffrt.ReasonError || st.StartedAt.IsZero() {
			t.Errorf("adopted: %+v, want exited 7, Error", st)
		}
	})
	t.Run("created", func(t *testing.T) {
		id := newID(t)
		cleanup(id)
		runNode(t, "created", root, layer, id)
		var out syncBuffer
		c := adopt(t, id, &out)
		if st := c.Status(); st.State != skiffrt.StateCreated {
			t.Fatalf("adopted: %+v, want created", st)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitDone(t, c, 10*time.Second)
		if out.String() != "started\n" {
			t.Errorf("output %q", out.String())
		}
	})
	t.Run("no trace", func(t *testing.T) {
		if _, err := r.Adopt(ctx, skiffrt.ContainerSpec{ID: newID(t)}); !errors.Is(err, skiffrt.ErrNotFound) {
			t.Errorf("Adopt: %v, want ErrNotFound", err)
		}
	})
}

func BenchmarkCreateStart(b *testing.B) {
	needRoot(b)
	r := newRuntime(b, b.TempDir())
	layer := busyboxLayer(b)
	ctx := context.Background()
	b.ResetTimer()
	begin := time.Now()
	for i := 0; i < b.N; i++ {
		c, err := r.create(ctx, skiffrt.ContainerSpec{ID: fmt.Sprintf("bench-%d-%d", os.Getpid(), i), Layers: []string{layer}, Args: []string{"sleep", "1000"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if err := c.Stop(ctx, 0); err != nil {
			b.Fatal(err)
		}
		if err := c.Remove(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(begin).Milliseconds())/float64(b.N), "ms/op")
}
