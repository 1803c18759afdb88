package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestPool: Take hands over a spare namespace itself, loopback up, under
// the sandbox's name, and the pool makes another; a name taken twice is
// ErrExist; spares are pinned nowhere; leftovers an earlier version pinned
// are deleted, and the spares at Close go, so nothing stays.
func TestPool(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	left, err := Create(filepath.Join(dir, ".spare"), "left-by-a-crash")
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPool(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if ok, _ := IsPinned(left); ok {
		t.Error("a spare of an earlier run is still pinned")
	}
	p.waitFull()
	p.mu.Lock()
	var spare unix.Stat_t
	if err := unix.Fstat(int(p.spares[len(p.spares)-1].Fd()), &spare); err != nil {
		t.Fatal(err)
	}
	p.mu.Unlock()
	if pins, _ := List(dir); len(pins) != 0 {
		t.Errorf("pins under the pool's dir before any Take: %v, want none", pins)
	}

	path, err := p.Take("sandbox-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Delete(path) })
	if path != filepath.Join(dir, "sandbox-a") {
		t.Errorf("Take = %s", path)
	}
	if ok, _ := IsPinned(path); !ok {
		t.Error("the taken namespace is not pinned")
	}
	var taken unix.Stat_t
	if err := unix.Stat(path, &taken); err != nil || taken.Ino != spare.Ino || taken.Dev != spare.Dev {
		t.Errorf("the namespace taken (inode %d, %v) is not the spare (inode %d)", taken.Ino, err, spare.Ino)
	}
	err = Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Error("loopback is down in the taken namespace")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Take("sandbox-a"); !errors.Is(err, ErrExist) {
		t.Errorf("Take of a name in use = %v, want ErrExist", err)
	}
	p.waitFull() // made again

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	spares, _ := List(filepath.Join(dir, ".spare"))
	for _, s := range spares {
		if ok, _ := IsPinned(s); ok {
			t.Errorf("spare %s still pinned after Close", s)
		}
	}
	if pins, _ := List(dir); len(pins) != 1 || pins[0] != path {
		t.Errorf("pins under the pool's dir = %v, want only %s", pins, path)
	}
	assertThreadsAtHome(t)
}

// BenchmarkPoolTake pins a spare and deletes the pin, with the pool
// making spares as they are taken (a burst of sandboxes).
func BenchmarkPoolTake(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates network namespaces")
	}
	dir := b.TempDir()
	p, err := NewPool(dir, 4)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	for i := 0; b.Loop(); i++ {
		path, err := p.Take(fmt.Sprintf("pod%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if err := Delete(path); err != nil {
			b.Fatal(err)
		}
	}
}
