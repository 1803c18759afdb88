package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// dirGC is what the agent knows for collecting the directories of pods
// that are gone: a pod deleted just before the node was killed leaves its
// log directory (and volumes) with no worker left to remove them.
type dirGC struct {
	// listed is set once the pods bound to the node have been listed: only
	// then does a pod without a worker mean a pod that is gone.
	listed atomic.Bool
}

// removeStaleDirs removes the log directories under LogDir
// (<namespace>_<name>_<uid>) and volume directories under VolumeDir
// (<uid>) that belong to no live pod (live says which uids are bound to
// the node) and to no sandbox the CRI still knows. It runs after each list
// of the node's pods and on the PLEG's relists.
//
// The directories are read before live is asked, and a worker exists
// before it makes its pod's directories: a directory made while this runs
// is either not seen or belongs to a live pod.
func (a *Agent) removeStaleDirs(ctx context.Context, live func(uid string) bool) {
	a.gc.listed.Store(true)
	type stale struct{ path, uid string }
	var found []stale
	if dir := a.cfg.LogDir; dir != "" {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			parts := strings.Split(e.Name(), "_")
			if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
				continue // not a pod's log directory
			}
			found = append(found, stale{filepath.Join(dir, e.Name()), parts[2]})
		}
	}
	if dir := a.cfg.VolumeDir; dir != "" {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() {
				found = append(found, stale{filepath.Join(dir, e.Name()), e.Name()})
			}
		}
	}
	var gone []stale
	for _, s := range found {
		if !live(s.uid) {
			gone = append(gone, s)
		}
	}
	if len(gone) == 0 {
		return // the common case: no CRI call
	}
	lctx, cancel := context.WithTimeout(ctx, relistTimeout)
	defer cancel()
	res, err := a.cfg.Runtime.ListPodSandbox(lctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		a.log.Warn("list sandboxes to collect pod directories", "err", err)
		return // without the list, nothing is known to be gone
	}
	known := map[string]bool{}
	for _, sb := range res.Items {
		known[sb.GetMetadata().GetUid()] = true
		if uid, ok := sb.GetLabels()[LabelPodUID]; ok {
			known[uid] = true
		}
	}
	for _, s := range gone {
		if known[s.uid] {
			continue
		}
		if err := os.RemoveAll(s.path); err != nil {
			a.log.Warn("remove the directory of a pod that is gone", "dir", s.path, "err", err)
			continue
		}
		a.log.Info("removed the directory of a pod that is gone", "dir", s.path)
	}
}

// registered reports whether pod uid has a worker.
func (p *pleg) registered(uid string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers[uid] != nil
}

// collectDirs removes stale pod directories once the agent has listed
// its pods, at most once per slow relist interval.
func (p *pleg) collectDirs(ctx context.Context) {
	if !p.a.gc.listed.Load() {
		return
	}
	p.a.removeStaleDirs(ctx, p.registered)
}
