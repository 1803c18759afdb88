package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Pool keeps a few network namespaces made ahead of need, so that a pod's
// sandbox costs a pin (a file and a bind mount) instead of making a
// namespace (the kernel's part of which is most of a millisecond). A spare
// is a namespace nothing has used: loopback up, nothing else. It is held by
// an open file, not pinned, so that handing it over is one pin and not two
// with an unpin between, and a process that dies leaves none behind. Take
// hands one over under its final name; a goroutine makes new ones as they
// are taken. Spares an earlier version pinned under dir/.spare are deleted
// by NewPool.
type Pool struct {
	dir   string
	spare string
	size  int

	mu     sync.Mutex
	spares []*os.File // each holds a spare namespace
	made   *sync.Cond // on mu: a spare was added

	kick      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// NewPool deletes the spares an earlier version left pinned under
// dir/.spare and starts keeping size spares.
func NewPool(dir string, size int) (*Pool, error) {
	p := &Pool{dir: dir, spare: filepath.Join(dir, ".spare"), size: size, kick: make(chan struct{}, 1), done: make(chan struct{})}
	p.made = sync.NewCond(&p.mu)
	left, err := List(p.spare)
	if err != nil {
		return nil, err
	}
	for _, path := range left {
		if err := Delete(path); err != nil {
			return nil, fmt.Errorf("delete a spare network namespace of an earlier run: %w", err)
		}
	}
	p.wg.Add(1)
	go p.fill()
	p.kick <- struct{}{}
	return p, nil
}

// fill makes spares until there are size of them, each time it is kicked.
func (p *Pool) fill() {
	defer p.wg.Done()
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
		}
		for {
			p.mu.Lock()
			full := len(p.spares) >= p.size
			p.mu.Unlock()
			if full {
				break
			}
			select {
			case <-p.done:
				return
			default:
			}
			f, err := newNamespace()
			if err != nil {
				break // Take makes its own namespaces; try again at the next kick
			}
			p.mu.Lock()
			p.spares = append(p.spares, f)
			p.made.Broadcast()
			p.mu.Unlock()
		}
	}
}

// Take pins a network namespace at dir/name and returns the path: a spare
// when one is ready, else one made now (Create). On error nothing is left
// behind; a name already pinned is ErrExist.
func (p *Pool) Take(name string) (string, error) {
	p.mu.Lock()
	var spare *os.File
	if n := len(p.spares); n > 0 {
		spare, p.spares = p.spares[n-1], p.spares[:n-1]
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	if spare == nil {
		return Create(p.dir, name)
	}
	defer spare.Close() // the pin holds the namespace now, or nothing does
	return pinFile(spare, p.dir, name)
}

// pinFile pins the namespace f holds at dir/name. On error nothing is
// pinned at dir/name.
func pinFile(f *os.File, dir, name string) (string, error) {
	path, err := newPinFile(dir, name)
	if err != nil {
		return "", err
	}
	src := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("create network namespace %s: bind-mount the namespace: %w", path, err)
	}
	return path, nil
}

// move pins the namespace of spare at dir/name and unpins spare. On
// error nothing is pinned at dir/name.
func move(spare, dir, name string) (string, error) {
	path, err := newPinFile(dir, name)
	if err != nil {
		return "", err
	}
	if err := unix.Mount(spare, path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("create network namespace %s: bind-mount %s: %w", path, spare, err)
	}
	if err := Delete(spare); err != nil {
		Delete(path)
		return "", err
	}
	return path, nil
}

// Close stops making spares and deletes those left. It is idempotent.
func (p *Pool) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.done)
		p.wg.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		var errs []error
		for _, f := range p.spares {
			errs = append(errs, f.Close())
		}
		p.spares = nil
		err = errors.Join(errs...)
	})
	return err
}

// waitFull waits until the pool holds its size of spares (for tests).
func (p *Pool) waitFull() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.spares) < p.size {
		p.made.Wait()
	}
}
