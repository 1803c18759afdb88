package netns

import (
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestPool: Take hands over a spare namespace, loopback up, under the
// sandbox's name, and the pool makes another; a name taken twice is
// ErrExist; leftovers of an earlier run and the spares at Close are
// deleted, so nothing stays pinned.
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
	spare := p.spares[len(p.spares)-1]
	p.mu.Unlock()

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
	if ok, _ := IsPinned(spare); ok {
		t.Error("the spare handed over is still pinned under its spare name")
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
