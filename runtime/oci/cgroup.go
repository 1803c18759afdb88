package oci

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupFS is where the node's cgroup hierarchies are mounted.
type cgroupFS struct {
	v2      bool
	unified string            // v2: the cgroup2 mount
	v1      map[string]string // v1: controller (and "name=x") -> mount point
}

// detectCgroups reads the cgroup mounts: cgroup v2 when /sys/fs/cgroup is
// cgroup2 (unified), else the v1 hierarchies from /proc/self/mountinfo.
func detectCgroups() (cgroupFS, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return cgroupFS{v2: true, unified: "/sys/fs/cgroup"}, nil
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return cgroupFS{}, fmt.Errorf("read cgroup mounts: %w", err)
	}
	fs := cgroupFS{v1: map[string]string{}}
	for _, line := range strings.Split(string(data), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || qf[0] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(qf[2], ",") {
			switch opt {
			case "rw", "ro", "relatime", "noexec", "nosuid", "nodev", "clone_children":
				continue
			}
			if _, seen := fs.v1[opt]; !seen {
				fs.v1[opt] = pf[4]
			}
		}
	}
	if fs.v1["memory"] == "" || fs.v1["cpuacct"] == "" {
		return cgroupFS{}, fmt.Errorf("cgroup v1 without a memory or cpuacct hierarchy")
	}
	return fs, nil
}

// cgroup is one container's cgroup (path as in config.json's cgroupsPath).
type cgroup struct {
	fs   cgroupFS
	path string
}

func (c cgroup) dir(controller string) string {
	if c.fs.v2 {
		return filepath.Join(c.fs.unified, c.path)
	}
	return filepath.Join(c.fs.v1[controller], c.path)
}

// usage returns the cgroup's CPU time and memory in use (less the
// inactive file cache, as the kubelet's working set).
func (c cgroup) usage() (cpu time.Duration, mem uint64) {
	if c.fs.v2 {
		if v, ok := statField(filepath.Join(c.dir(""), "cpu.stat"), "usage_usec"); ok {
			cpu = time.Duration(v) * time.Microsecond
		}
		mem, _ = readUint(filepath.Join(c.dir(""), "memory.current"))
		if inactive, ok := statField(filepath.Join(c.dir(""), "memory.stat"), "inactive_file"); ok && inactive < mem {
			mem -= inactive
		}
		return cpu, mem
	}
	if v, ok := readUint(filepath.Join(c.dir("cpuacct"), "cpuacct.usage")); ok {
		cpu = time.Duration(v)
	}
	mem, _ = readUint(filepath.Join(c.dir("memory"), "memory.usage_in_bytes"))
	if inactive, ok := statField(filepath.Join(c.dir("memory"), "memory.stat"), "total_inactive_file"); ok && inactive < mem {
		mem -= inactive
	}
	return cpu, mem
}

// oomKills returns how many processes the kernel's OOM killer has killed
// in the cgroup.
func (c cgroup) oomKills() uint64 {
	if c.fs.v2 {
		v, _ := statField(filepath.Join(c.dir(""), "memory.events"), "oom_kill")
		return v
	}
	v, _ := statField(filepath.Join(c.dir("memory"), "memory.oom_control"), "oom_kill")
	return v
}

// remove removes the cgroup's directories that are left (runc delete
// removes them; a runc killed half-way may not have).
func (c cgroup) remove() error {
	dirs := []string{filepath.Join(c.fs.unified, c.path)}
	if !c.fs.v2 {
		dirs = dirs[:0]
		seen := map[string]bool{}
		for _, mnt := range c.fs.v1 {
			if !seen[mnt] {
				seen[mnt] = true
				dirs = append(dirs, filepath.Join(mnt, c.path))
			}
		}
	}
	var first error
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && err != unix.ENOENT && first == nil {
			first = fmt.Errorf("remove cgroup %s: %w", d, err)
		}
	}
	return first
}

// exists says whether any of the cgroup's directories is left.
func (c cgroup) exists() bool {
	if c.fs.v2 {
		_, err := os.Stat(filepath.Join(c.fs.unified, c.path))
		return err == nil
	}
	for _, mnt := range c.fs.v1 {
		if _, err := os.Stat(filepath.Join(mnt, c.path)); err == nil {
			return true
		}
	}
	return false
}

func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	return v, err == nil
}

// statField reads "key value" lines of a cgroup file for key.
func statField(path, key string) (uint64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// ownOOMScoreAdj is the node process's oom_score_adj: without
// CAP_SYS_RESOURCE a process cannot set a child's lower.
func ownOOMScoreAdj() (int, error) {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, fmt.Errorf("read own oom_score_adj: %w", err)
	}
	v, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0, fmt.Errorf("read own oom_score_adj: %w", err)
	}
	return v, nil
}
