package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// CNIPool keeps a few network namespaces already attached to skiff's own
// CNI network (the bridge from the pod CIDR), so that a pod's sandbox
// takes one, two mounts, instead of waiting for CNI ADD (three plugin
// execs, tens of milliseconds).
//
// A spare is attached under a CNI container ID of its own, "spare-<hex>",
// and pinned at dir/.prenet/<that ID>. Take pins it at dir/<name> and
// returns the ID, which the caller must give CNI.Teardown for the pod:
// its address reservation, its iptables rules and libcni's cache entry are
// under it. From Take, a claim file (dir/.prenet/claims/<name>) holds it,
// so that the network of a pod whose process died before storing the ID
// can still be torn down (Claimed); the caller removes it with Release,
// at the latest when it deletes the pin (NewCNIPool removes the claims
// whose pin is gone).
//
// Only skiff's own network is pooled: a user's conflist (CNIConfig.ConfDir)
// may have plugins that need the pod's identity, so pods on it are set up
// inline (Take says none). Spares are made once the network has a pod
// CIDR; when the CIDR changes, spares of the old one are torn down (DEL,
// then the namespace deleted) and new ones made.
//
// NewCNIPool tears down the spares a dead process left (their IDs are
// their pins' names; libcni's cache gives DEL their config), and Close
// those left, so that no address reservation, veth or iptables rule of a
// spare outlives the pool. Safe for concurrent use.
type CNIPool struct {
	cni    *CNI
	log    *slog.Logger
	dir    string
	spare  string // dir/.prenet: the spares' pins
	claims string // dir/.prenet/claims
	size   int

	mu     sync.Mutex
	spares []cniSpare

	kick      chan struct{} // a spare was taken
	changed   chan struct{} // the pod CIDR changed (CNI.watch)
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// cniSpare is a namespace attached under id, for the pod CIDRs key.
type cniSpare struct {
	id, path, key string
	res           Result
}

// Attached is a namespace taken from a CNIPool: pinned at Path, attached
// to the network under the CNI container ID ID, with Result's addresses.
type Attached struct {
	Path   string
	ID     string
	Result Result
}

// spareTeardownTimeout bounds the teardown of one spare at start.
const spareTeardownTimeout = time.Minute

// NewCNIPool tears down the spares an earlier process left under
// dir/.prenet and keeps size spares of c's own network there from the
// moment it has a pod CIDR. A spare that cannot be torn down stays pinned
// (and is tried again at the next start); log says so. log may be nil.
func NewCNIPool(dir string, c *CNI, size int, log *slog.Logger) (*CNIPool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spare := filepath.Join(dir, ".prenet")
	p := &CNIPool{cni: c, log: log, dir: dir, spare: spare, claims: filepath.Join(spare, "claims"), size: size, kick: make(chan struct{}, 1)}
	if err := os.MkdirAll(p.claims, 0o700); err != nil {
		return nil, fmt.Errorf("new CNI namespace pool: %w", err)
	}
	left, err := List(spare)
	if err != nil {
		return nil, err
	}
	for _, path := range left {
		ctx, cancel := context.WithTimeout(context.Background(), spareTeardownTimeout)
		err := p.drop(ctx, cniSpare{id: filepath.Base(path), path: path})
		cancel()
		if err != nil {
			log.Warn("tear down a spare network namespace of an earlier run", "path", path, "err", err)
		}
	}
	// A claim whose pin is gone is of no more use: the spare it names was
	// torn down above, or its pod's was, by its record's ID.
	claims, err := List(p.claims)
	if err != nil {
		return nil, err
	}
	for _, cl := range claims {
		if ok, _ := IsPinned(filepath.Join(dir, filepath.Base(cl))); !ok {
			os.Remove(cl)
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.changed = c.watch()
	p.wg.Add(1)
	go p.fill()
	p.kickFill()
	return p, nil
}

func (p *CNIPool) kickFill() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// fill keeps the pool full each time it is kicked or the pod CIDR changes.
func (p *CNIPool) fill() {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.kick:
		case <-p.changed:
		}
		for p.ctx.Err() == nil && p.fillOne() {
		}
	}
}

// fillOne drops the spares of an old pod CIDR and makes one spare when
// the pool is short of one; it reports whether it made one.
func (p *CNIPool) fillOne() bool {
	list, key := p.cni.own()
	p.mu.Lock()
	var stale []cniSpare
	p.spares = slices.DeleteFunc(p.spares, func(s cniSpare) bool {
		if s.key != key {
			stale = append(stale, s)
			return true
		}
		return false
	})
	n := len(p.spares)
	p.mu.Unlock()
	for _, s := range stale {
		if err := p.drop(context.WithoutCancel(p.ctx), s); err != nil {
			p.log.Warn("tear down a spare network namespace of an old pod CIDR", "path", s.path, "err", err)
		}
	}
	if key == "" || n >= p.size {
		return false
	}
	var b [8]byte
	rand.Read(b[:])
	id := "spare-" + hex.EncodeToString(b[:])
	path, err := Create(p.spare, id)
	if err != nil {
		p.log.Warn("make a spare network namespace", "err", err)
		return false // Take falls back to the inline path; try again at the next kick
	}
	res, err := p.cni.setup(p.ctx, list, id, path)
	if err != nil {
		Delete(path) // setup undid its ADD
		if p.ctx.Err() == nil {
			p.log.Warn("attach a spare network namespace", "err", err)
		}
		return false
	}
	p.mu.Lock()
	p.spares = append(p.spares, cniSpare{id: id, path: path, key: key, res: res})
	p.mu.Unlock()
	return true
}

// drop tears down a spare's network and deletes its namespace; when the
// teardown fails, the namespace stays pinned, for the next start.
func (p *CNIPool) drop(ctx context.Context, s cniSpare) error {
	if err := p.cni.Teardown(ctx, s.id, s.path); err != nil {
		return err
	}
	return Delete(s.path)
}

// Take pins a spare attached to the network as it is now at dir/name and
// returns it, with a claim on its ID (Release). It reports false, and
// takes nothing, when there is none: pods go on a user's network, the
// pod CIDR is not known or changed, or the spares are all taken. On error
// nothing is left behind; a name already pinned is ErrExist.
func (p *CNIPool) Take(name string) (Attached, bool, error) {
	if err := validName(name); err != nil {
		return Attached{}, false, err
	}
	key := p.cni.ownKey()
	var s cniSpare
	found := false
	p.mu.Lock()
	if key != "" {
		for i := len(p.spares) - 1; i >= 0; i-- {
			if p.spares[i].key == key {
				s, found = p.spares[i], true
				p.spares = slices.Delete(p.spares, i, i+1)
				break
			}
		}
	}
	p.mu.Unlock()
	p.kickFill()
	if !found {
		return Attached{}, false, nil
	}
	claim := filepath.Join(p.claims, name)
	if err := os.WriteFile(claim, []byte(s.id), 0o600); err != nil {
		p.putBack(s)
		return Attached{}, false, fmt.Errorf("claim a spare network namespace: %w", err)
	}
	path, err := move(s.path, p.dir, name)
	if err != nil {
		os.Remove(claim)
		if ok, _ := IsPinned(s.path); ok {
			p.putBack(s)
		} else {
			p.log.Warn("a spare network namespace lost in a failed move", "path", s.path)
		}
		return Attached{}, false, err
	}
	return Attached{Path: path, ID: s.id, Result: Result{IPs: slices.Clone(s.res.IPs)}}, true, nil
}

func (p *CNIPool) putBack(s cniSpare) {
	p.mu.Lock()
	p.spares = append(p.spares, s)
	p.mu.Unlock()
}

// Claimed is the CNI container ID that a namespace taken as name was
// attached under, while its claim lasts; "" when there is none.
func (p *CNIPool) Claimed(name string) string {
	if validName(name) != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(p.claims, name))
	if err != nil {
		return ""
	}
	return string(b)
}

// Release removes the claim of name; idempotent.
func (p *CNIPool) Release(name string) error {
	if validName(name) != nil {
		return nil
	}
	if err := os.Remove(filepath.Join(p.claims, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release the claim of %s: %w", name, err)
	}
	return nil
}

// Spares is how many spares are ready now (for tests and metrics).
func (p *CNIPool) Spares() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.spares)
}

// Close stops making spares and tears down those left (CNI DEL, then the
// namespace deleted). It is idempotent.
func (p *CNIPool) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.cancel()
		p.cni.unwatch(p.changed)
		p.wg.Wait()
		p.mu.Lock()
		spares := p.spares
		p.spares = nil
		p.mu.Unlock()
		var errs []error
		for _, s := range spares {
			errs = append(errs, p.drop(context.Background(), s))
		}
		err = errors.Join(errs...)
	})
	return err
}
