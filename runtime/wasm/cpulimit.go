package wasm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CPU limits: a container's guest runs on one OS thread (container.go), so
// throttling the container is throttling that thread. The kernel's CFS
// bandwidth control does it per cgroup, and a thread can be in a cgroup of
// its own: in cgroup v1 any thread's ID can be written to a cpu cgroup's
// "tasks"; in cgroup v2 only within a threaded subtree ("cgroup.threads").
// Each limited container gets a cgroup <own>/skiff-wasm/<container ID>
// with cpu.cfs_quota_us / cpu.cfs_period_us (v1) or cpu.max (v2); its
// thread moves in when the guest starts and back to the process's cgroup
// when it ends, before the thread serves Go again, and the cgroup is
// removed.

// cpuCgroups places guest threads in CPU-limited cgroups.
type cpuCgroups struct {
	v2   bool
	home string // the process's own cgroup directory (where threads go back)
	root string // home/skiff-wasm, the parent of the containers' cgroups
}

// cgroupParent is the directory, under the process's cgroup, of the
// containers' cgroups.
const cgroupParent = "skiff-wasm"

// findCPUCgroups finds the cpu controller of the process's cgroup and
// prepares the parent of the containers' cgroups, removing what an earlier
// run left there. It fails, saying why, where threads cannot be limited.
func findCPUCgroups() (*cpuCgroups, error) {
	v1Mount, v2Mount, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var v1Path, v2Path string
	hasV2 := false
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path, hasV2 = parts[2], true
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				v1Path = parts[2]
			}
		}
	}
	c := &cpuCgroups{}
	switch {
	case v1Mount != "" && v1Path != "":
		c.home = filepath.Join(v1Mount, v1Path)
	case v2Mount != "" && hasV2:
		c.v2, c.home = true, filepath.Join(v2Mount, v2Path)
	default:
		return nil, errors.New("no cgroup cpu controller is mounted")
	}
	c.root = filepath.Join(c.home, cgroupParent)
	if err := c.prepare(); err != nil {
		return nil, err
	}
	return c, nil
}

// cgroupMounts returns where the v1 cpu hierarchy and the v2 hierarchy are
// mounted ("" when not).
func cgroupMounts() (v1, v2 string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options ... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, after := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(after) < 3 {
			continue
		}
		switch after[0] {
		case "cgroup":
			for _, o := range strings.Split(after[2], ",") {
				if o == "cpu" {
					v1 = fields[4]
				}
			}
		case "cgroup2":
			v2 = fields[4]
		}
	}
	return v1, v2, sc.Err()
}

// prepare makes the parent cgroup and removes empty leftovers in it.
func (c *cpuCgroups) prepare() error {
	if err := os.Mkdir(c.root, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("make cgroup %s: %w", c.root, err)
	}
	if c.v2 {
		if err := c.enableV2(); err != nil {
			os.Remove(c.root)
			return err
		}
	}
	entries, _ := os.ReadDir(c.root)
	for _, e := range entries {
		if e.IsDir() {
			os.Remove(filepath.Join(c.root, e.Name())) // fails, and stays, while a thread is in it
		}
	}
	return nil
}

// enableV2 makes the parent a threaded cgroup with the cpu controller for
// its children.
func (c *cpuCgroups) enableV2() error {
	if b, err := os.ReadFile(filepath.Join(c.home, "cgroup.controllers")); err != nil || !strings.Contains(" "+string(b)+" ", " cpu") {
		return fmt.Errorf("the cgroup %s offers no cpu controller", c.home)
	}
	if err := os.WriteFile(filepath.Join(c.root, "cgroup.type"), []byte("threaded"), 0); err != nil {
		return fmt.Errorf("make %s threaded: %w", c.root, err)
	}
	if err := os.WriteFile(filepath.Join(c.home, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
		return fmt.Errorf("enable the cpu controller under %s: %w", c.home, err)
	}
	if err := os.WriteFile(filepath.Join(c.root, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
		return fmt.Errorf("enable the cpu controller under %s: %w", c.root, err)
	}
	return nil
}

// attach moves the thread tid into a new cgroup for container id, limited
// to quota of every period (microseconds). The returned function moves it
// back and removes the cgroup; it fails only if the thread could not go
// back (the caller must then not give the thread back to Go). A cgroup it
// cannot remove is removed by the next run's prepare.
func (c *cpuCgroups) attach(id string, tid int, quota, period int64) (func() error, error) {
	dir := filepath.Join(c.root, id)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("make cgroup %s: %w", dir, err)
	}
	fail := func(err error) (func() error, error) {
		os.Remove(dir)
		return nil, err
	}
	threads := "tasks"
	if c.v2 {
		threads = "cgroup.threads"
		if err := os.WriteFile(filepath.Join(dir, "cgroup.type"), []byte("threaded"), 0); err != nil {
			return fail(fmt.Errorf("make %s threaded: %w", dir, err))
		}
		if err := os.WriteFile(filepath.Join(dir, "cpu.max"), fmt.Appendf(nil, "%d %d", quota, period), 0); err != nil {
			return fail(fmt.Errorf("set cpu.max of %s: %w", dir, err))
		}
	} else {
		if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte(strconv.FormatInt(period, 10)), 0); err != nil {
			return fail(fmt.Errorf("set the CFS period of %s: %w", dir, err))
		}
		if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(strconv.FormatInt(quota, 10)), 0); err != nil {
			return fail(fmt.Errorf("set the CFS quota of %s: %w", dir, err))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, threads), []byte(strconv.Itoa(tid)), 0); err != nil {
		return fail(fmt.Errorf("move thread %d into %s: %w", tid, dir, err))
	}
	return func() error {
		if err := os.WriteFile(filepath.Join(c.home, threads), []byte(strconv.Itoa(tid)), 0); err != nil {
			return fmt.Errorf("move thread %d back to %s: %w", tid, c.home, err)
		}
		os.Remove(dir)
		return nil
	}, nil
}
