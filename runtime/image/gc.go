package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// DiskStats is the size of the filesystem that holds the store.
type DiskStats struct {
	Capacity  uint64 // bytes
	Available uint64 // bytes free to unprivileged users
}

func statfs(path string) (DiskStats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return DiskStats{}, err
	}
	return DiskStats{Capacity: st.Blocks * uint64(st.Bsize), Available: st.Bavail * uint64(st.Bsize)}, nil
}

// GCResult is what GC did.
type GCResult struct {
	UsagePercent int      // of the filesystem, before
	Removed      []string // image IDs
	Freed        uint64   // bytes
}

// GC removes images as the kubelet's image GC does: once the store's
// filesystem is Config.GC.HighThresholdPercent full, it removes images
// that no container uses (inUse holds the IDs of those that do) and that
// were pulled, imported or used (Touch) more than MinAge ago, least
// recently first, until it would be LowThresholdPercent full. An image in
// inUse is never removed, nor a snapshot that a mounted overlay stacks.
// Whatever the usage, it first deletes the snapshots that no image uses
// any more (those Remove left because they were mounted, and after an hour
// those of pulls that failed part way), counted in Freed.
// It returns what it removed; an error stops it part way, with every
// image either whole or gone.
func (s *Store) GC(ctx context.Context, inUse map[string]bool) (GCResult, error) {
	high, low, minAge := s.cfg.GC.HighThresholdPercent, s.cfg.GC.LowThresholdPercent, s.cfg.GC.MinAge.Duration
	if high == 0 {
		high = DefaultGCHigh
	}
	if low == 0 {
		low = min(DefaultGCLow, high)
	}
	if minAge == 0 {
		minAge = DefaultGCMinAge
	}
	orphans := uint64(s.collect(true))
	st, err := s.statfs(s.root)
	if err != nil {
		return GCResult{Freed: orphans}, fmt.Errorf("image gc: %w", err)
	}
	if st.Capacity == 0 {
		return GCResult{Freed: orphans}, nil
	}
	used := st.Capacity - min(st.Available, st.Capacity)
	res := GCResult{UsagePercent: int(used * 100 / st.Capacity), Freed: orphans}
	if high >= 100 || res.UsagePercent < high {
		return res, nil
	}
	target := st.Capacity * uint64(100-low) / 100 // bytes that should be available
	if target <= st.Available {
		return res, nil
	}
	toFree := target - st.Available + orphans // the statfs was taken after the orphans went

	imgs, err := s.List()
	if err != nil {
		return res, fmt.Errorf("image gc: %w", err)
	}
	type cand struct {
		img  Image
		used time.Time
	}
	var cands []cand
	now := time.Now()
	for _, img := range imgs {
		if inUse[img.ID] {
			continue
		}
		info, err := os.Stat(s.blobPath(img.ID))
		if err != nil {
			continue
		}
		if now.Sub(info.ModTime()) < minAge {
			continue
		}
		cands = append(cands, cand{img, info.ModTime()})
	}
	slices.SortFunc(cands, func(a, b cand) int { return a.used.Compare(b.used) })
	for _, c := range cands {
		if res.Freed >= toFree {
			break
		}
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("image gc: %w", err)
		}
		freed, err := s.removeID(c.img.ID)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return res, fmt.Errorf("image gc: %w", err)
		}
		res.Removed = append(res.Removed, c.img.ID)
		res.Freed += uint64(freed)
	}
	return res, nil
}

// Touch marks the image id as used now, for the GC's order: the CRI server
// touches an image when it creates a container from it. The time is the
// blob's modification time, so it is kept across restarts.
func (s *Store) Touch(id string) error {
	now := time.Now()
	if err := os.Chtimes(s.blobPath(id), now, now); err != nil {
		return fmt.Errorf("touch image %s: %w", id, err)
	}
	return nil
}

// removeID removes an image and all its names, and the snapshots no other
// image uses and no overlay stacks. It returns the bytes freed.
func (s *Store) removeID(id string) (int64, error) {
	var freed int64
	err := s.update(func(idx *index) error {
		names := namesOf(idx, id)
		if len(names) == 0 {
			return ErrNotFound
		}
		for _, n := range names {
			delete(idx.Refs, n)
		}
		if info, err := os.Stat(s.blobPath(id)); err == nil {
			freed = info.Size()
		}
		return s.drop(idx, id)
	})
	if err != nil {
		return 0, err
	}
	return freed + s.collect(false), nil
}
