//go:build linux

package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/netns/netnstest"
)

// These tests run the stand-ins' programs the way a container would (a
// chroot into the image's files, a PID and mount namespace of its own, a
// loopback-only network namespace) and check what critest checks.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: chroot, namespaces and setuid files")
	}
}

// rootfs writes the image of ref, as the mirror serves it, into a new
// directory and returns its path.
func rootfs(t *testing.T, host, ref string) string {
	t.Helper()
	dir := t.TempDir()
	unpack(t, pull(t, host, ref), dir)
	// The /dev/null a runtime gives every container (ash's background
	// jobs read from it).
	if err := os.MkdirAll(filepath.Join(dir, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(dir, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatalf("make /dev/null: %v", err)
	}
	return dir
}

func unpack(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, filepath.Clean("/"+h.Linkname)), p)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o600)
			}
		default:
			err = fmt.Errorf("unexpected type %c", h.Typeflag)
		}
		if err == nil && h.Typeflag != tar.TypeSymlink && h.Typeflag != tar.TypeLink {
			// After the write: the umask would drop bits, and Chmod keeps setuid.
			err = os.Chmod(p, os.FileMode(h.Mode&0o777)|modeBits(h.Mode))
		}
		if err != nil {
			t.Fatalf("unpack %s: %v", h.Name, err)
		}
	}
}

func modeBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// contained is argv run in root, in PID and mount namespaces of its own,
// as uid:gid.
func contained(ctx context.Context, root string, uid, gid uint32, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Err = nil // argv[0] is looked up in root, not on the host
	cmd.Path = lookPath(root, argv[0])
	cmd.Env = []string{envPath}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:       root,
		Cloneflags:   syscall.CLONE_NEWPID,
		Unshareflags: syscall.CLONE_NEWNS, // Go makes / private in it first
		Credential:   &syscall.Credential{Uid: uid, Gid: gid},
		Pdeathsig:    syscall.SIGKILL,
	}
	return cmd
}

// lookPath is where the image's PATH finds name, as a path in root.
func lookPath(root, name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range strings.Split(strings.TrimPrefix(envPath, "PATH="), ":") {
		if fi, err := os.Stat(filepath.Join(root, dir, name)); err == nil && fi.Mode().IsRegular() {
			return filepath.Join(dir, name)
		}
	}
	return name
}

func output(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v; stderr: %s", cmd.Args, err, stderr.String())
	}
	return string(out)
}

func TestOCIBusyboxRunsCritestCommands(t *testing.T) {
	needRoot(t)
	host := serveOCI(t)
	root := rootfs(t, host, e2e+"busybox:1.29-2")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name     string
		uid, gid uint32
		argv     []string
		want     string
	}{
		{"echo", 0, 0, []string{"echo", "-n", "hello"}, "hello"},
		{"RunAsUser and RunAsGroup", 1001, 1002, []string{"sh", "-c", "echo $(id -u):$(id -g)"}, "1001:1002\n"},
		{"RunAsUserName nobody", 65534, 65534, []string{"id", "-nu"}, "nobody\n"},
		{"ReadOnlyRootfs false", 0, 0, []string{"sh", "-c", "cd / && touch test.go && [ -f test.go ] && echo 'Found'"}, "Found\n"},
		// checkSleepCmd: a sleep started by the shell is a process of its
		// own that pgrep finds (busybox-static would run it in the shell).
		{"pgrep finds a sleep", 0, 0, []string{"sh", "-c", "mount -t proc proc /proc && { sleep 30 & } && " +
			// until the background job has become sleep
			"for i in $(seq 50); do pgrep sleep >/dev/null && { echo found; exit 0; }; sleep 0.1; done; exit 1"}, "found\n"},
		{"pgrep finds none", 0, 0, []string{"sh", "-c", "mount -t proc proc /proc && pgrep sleep || true"}, ""},
		{"ipcs runs", 0, 0, []string{"sh", "-c", "ipcs -m >/dev/null && echo ok"}, "ok\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := output(t, contained(ctx, root, tc.uid, tc.gid, tc.argv...)); got != tc.want {
				t.Errorf("%q printed %q, want %q", tc.argv, got, tc.want)
			}
		})
	}
}

func TestOCIPredefinedGroupImage(t *testing.T) {
	needRoot(t)
	host := serveOCI(t)
	root := rootfs(t, host, staging+"test-image-predefined-group:latest")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if got := output(t, contained(ctx, root, 1000, 1000, "id", "-nu")); got != "default-user\n" {
		t.Errorf("id -nu as 1000 printed %q, want default-user", got)
	}
	if got := output(t, contained(ctx, root, 0, 0, "id", "-G", "default-user")); got != "1000 50000\n" {
		t.Errorf("id -G default-user printed %q, want 1000 50000", got)
	}
}

func TestOCINonewprivsRaisesItsEffectiveUID(t *testing.T) {
	needRoot(t)
	host := serveOCI(t)
	root := rootfs(t, host, e2e+"nonewprivs:1.3")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if got := output(t, contained(ctx, root, 1000, 1000, "/usr/local/bin/nnp")); got != "Effective uid: 0\n" {
		t.Errorf("nnp as uid 1000 printed %q, want %q", got, "Effective uid: 0\n")
	}
}

func TestOCIPauseStopsOnSIGTERM(t *testing.T) {
	needRoot(t)
	host := serveOCI(t)
	root := rootfs(t, host, "registry.k8s.io/pause:3.9")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := contained(ctx, root, 65535, 65535, "/pause")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The signal is sent once pause says it handles it: before, the Go
	// runtime would end it with status 2.
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil || !strings.Contains(line, "waiting for SIGINT or SIGTERM") {
		t.Fatalf("pause printed %q, %v", line, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("pause exited with %v after SIGTERM, want 0", err)
	}
}

func TestOCIWebServers(t *testing.T) {
	needRoot(t)
	host := serveOCI(t)
	for _, tc := range []struct {
		ref        string
		port       int
		name       string // what pidof and /proc/PID/comm see
		master     bool   // "master process" in its command line, as nginx
		logs, page string
	}{
		{e2e + "nginx:1.14-2", 80, "nginx", true, "nginx", "Welcome to nginx!"},
		{staging + "hostnet-nginx-amd64:latest", 12003, "nginx", true, "nginx", "Welcome to nginx!"},
		{e2e + "httpd:2.4.39-4", 80, "httpd-foregroun", false /* comm keeps 15 bytes */, "httpd", "It works!"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			root := rootfs(t, host, tc.ref)
			img := pull(t, host, tc.ref)
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			ns, err := netns.Create(t.TempDir(), "web")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { netns.Delete(ns) })

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			argv := append(append([]string{}, cf.Config.Entrypoint...), cf.Config.Cmd...)
			cmd := contained(ctx, root, 0, 0, argv...)
			if cf.Config.WorkingDir != "" {
				cmd.Dir = cf.Config.WorkingDir
			}
			// Started from netns.Do's thread, which may end: no Pdeathsig.
			cmd.SysProcAttr.Pdeathsig = 0
			var logs lockedBuffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := netns.Do(ns, cmd.Start); err != nil {
				t.Fatalf("start %q: %v", argv, err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-done
			})

			var resp string
			netnstest.Eventually(t, 20*time.Second, func() bool {
				resp, err = get(ns, tc.port)
				return err == nil
			}, func() string { return fmt.Sprintf("GET / on port %d: %v; logs: %s", tc.port, err, logs.String()) })
			if !strings.HasPrefix(resp, "HTTP/1.") || !strings.Contains(resp, " 200 ") || !strings.Contains(resp, tc.page) {
				t.Errorf("GET / answered %q, want 200 with %q", resp, tc.page)
			}
			if !strings.Contains(logs.String(), tc.logs) {
				t.Errorf("logs %q do not name %s", logs.String(), tc.logs)
			}
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
			if got := strings.TrimSpace(string(comm)); got != tc.name {
				t.Errorf("the server's process is called %q, want %q", got, tc.name)
			}
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
			if got := strings.Contains(string(cmdline), "master process"); got != tc.master {
				t.Errorf("command line %q: has master process %v, want %v", cmdline, got, tc.master)
			}
			if tc.master {
				pid, err := os.ReadFile(filepath.Join(root, "var/run/nginx.pid"))
				if err != nil || strings.TrimSpace(string(pid)) != "1" {
					t.Errorf("/var/run/nginx.pid holds %q (%v), want the server's pid, 1", pid, err)
				}
			}

			// A stop: SIGTERM to pid 1 of the container ends it.
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-done:
				done <- err // for the cleanup
				if err != nil {
					t.Errorf("after SIGTERM the server exited with %v, want 0", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("the server still runs 10s after SIGTERM")
			}
		})
	}
}

// get sends GET / to 127.0.0.1:port inside the network namespace ns and
// returns the whole response.
func get(ns string, port int) (string, error) {
	var resp []byte
	err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"); err != nil {
			return err
		}
		resp, err = io.ReadAll(io.LimitReader(c, 1<<20))
		return err
	})
	return string(resp), err
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
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
