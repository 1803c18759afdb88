package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// create makes a namespace and registers its deletion, so it goes even if
// the test fails.
func create(t *testing.T, dir, name string) string {
	t.Helper()
	path, err := Create(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Delete(path); err != nil {
			t.Error(err)
		}
	})
	return path
}

// threadNamespaces returns the network namespace of every thread of the process.
func threadNamespaces(t *testing.T) map[string]int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, task := range tasks {
		ns, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread exited
		}
		seen[ns]++
	}
	return seen
}

// home is the namespace the test process started in.
var home, _ = os.Readlink("/proc/self/ns/net")

func hostNamespace(t *testing.T) string {
	t.Helper()
	if home == "" {
		t.Fatal("cannot read /proc/self/ns/net")
	}
	return home
}

// assertThreadsAtHome checks that no thread of the process was left in a
// pod namespace.
// Threads that Go ends (locked at goroutine exit) may take a moment to go.
func assertThreadsAtHome(t *testing.T) {
	t.Helper()
	home := hostNamespace(t)
	var away map[string]int
	for range 100 {
		away = map[string]int{}
		for ns, n := range threadNamespaces(t) {
			if ns != home {
				away[ns] = n
			}
		}
		if len(away) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	for ns, n := range away {
		t.Errorf("%d thread(s) left in namespace %s (home is %s)", n, ns, home)
	}
}

func TestCreateDoDelete(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	path := create(t, dir, "pod1")
	if path != filepath.Join(dir, "pod1") {
		t.Errorf("path = %s", path)
	}
	if ok, err := IsPinned(path); !ok || err != nil {
		t.Fatalf("IsPinned = %v, %v", ok, err)
	}

	var inside string
	err := Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("loopback is down")
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		if len(links) != 1 {
			return fmt.Errorf("namespace has %d links, want only lo", len(links))
		}
		inside, err = os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", gettid()))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside == hostNamespace(t) {
		t.Fatal("Do ran its function in the host namespace")
	}

	// An address added inside stays inside.
	addr, _ := netlink.ParseAddr("127.31.41.59/32")
	err = Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, addr)
	})
	if err != nil {
		t.Fatal(err)
	}
	hostLo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	hostAddrs, err := netlink.AddrList(hostLo, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range hostAddrs {
		if a.IP.Equal(addr.IP) {
			t.Fatal("an address added inside the pod namespace is on the host's loopback")
		}
	}

	if _, err := Create(dir, "pod1"); !errors.Is(err, ErrExist) {
		t.Errorf("second Create = %v, want ErrExist", err)
	}
	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pin still there after Delete: %v", err)
	}
	if err := Delete(path); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
	assertThreadsAtHome(t)
}

func TestDoErrors(t *testing.T) {
	needRoot(t)
	path := create(t, t.TempDir(), "pod")
	if err := Do(path, func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Errorf("Do = %v, want fn's error", err)
	}
	if err := Do(path, func() error { panic("oops") }); err == nil || !strings.Contains(err.Error(), "oops") {
		t.Errorf("Do with panicking fn = %v", err)
	}
	if err := Do(filepath.Join(t.TempDir(), "missing"), func() error { return nil }); err == nil {
		t.Error("Do on a missing path succeeded")
	}
	assertThreadsAtHome(t)
}

func TestListAndConcurrency(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	const n = 6
	var wg sync.WaitGroup
	paths := make([]string, n)
	for i := range n {
		wg.Go(func() {
			p, err := Create(dir, fmt.Sprint("pod", i))
			paths[i] = p
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, p := range paths {
			if p != "" {
				Delete(p)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	// Hammer Do from many goroutines.
	for range 4 * n {
		for _, p := range paths {
			wg.Go(func() {
				if err := Do(p, loopbackUp); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	assertThreadsAtHome(t)

	list, err := List(dir)
	if err != nil || len(list) != n {
		t.Fatalf("List = %v, %v", list, err)
	}
	seen := map[string]bool{}
	for _, p := range list {
		var ino string
		if err := Do(p, func() (err error) {
			ino, err = os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", gettid()))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if seen[ino] {
			t.Errorf("two pins share namespace %s", ino)
		}
		seen[ino] = true
	}
	for _, p := range list {
		if err := Delete(p); err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := List(dir); len(list) != 0 {
		t.Errorf("List after Delete = %v", list)
	}
	if list, err := List(filepath.Join(dir, "missing")); err != nil || len(list) != 0 {
		t.Errorf("List(missing dir) = %v, %v", list, err)
	}
}

func TestCreateRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := Create(t.TempDir(), name); err == nil || !strings.Contains(err.Error(), "invalid name") {
			t.Errorf("Create(%q) = %v", name, err)
		}
	}
}

func gettid() int { return unix.Gettid() }

// BenchmarkCreate makes and deletes a pinned namespace with loopback up,
// as a pod's sandbox does without a spare.
func BenchmarkCreate(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates network namespaces")
	}
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		path, err := Create(dir, fmt.Sprintf("pod%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if err := Delete(path); err != nil {
			b.Fatal(err)
		}
	}
}
