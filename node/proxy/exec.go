package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// enter runs fn on a thread in the network namespace the proxy programs.
// Child processes started by fn (iptables, iptables-restore) inherit the
// thread's namespace: the fork happens on the calling, locked thread.
func (p *Proxier) enter(fn func() error) error {
	if p.cfg.InNetNS == nil {
		return fn()
	}
	return p.cfg.InNetNS(fn)
}

// run runs a command inside the namespace with stdin as its input and
// returns its output; it is killed at the exec deadline.
func (p *Proxier) run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ExecTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := p.enter(func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return cmd.Run()
	})
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, fmt.Errorf("run %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// restoreRun feeds one restore input to iptables-restore, without flushing
// anything the input does not name.
func (p *Proxier) restoreRun(ctx context.Context, in *restore) error {
	if !in.wholeCache && in.wantsWholeCache() {
		nft, err := p.nftBackend(ctx)
		if err != nil {
			return err
		}
		in.wholeCache = nft
	}
	_, err := p.run(ctx, in.bytes(), "iptables-restore", "--noflush", "--wait", "5")
	return err
}

// kernelState is what a full sync finds in the kernel before it writes.
type kernelState struct {
	names map[string][]string // table -> the SKIFF-* chains in it
	// rules holds each chain's rules as the kernel lists them, keyed
	// table/name, when listed (nil: only the names are known, and every
	// wanted chain is written).
	rules map[string][]string
	// jumps is set when every jump (see jumps) was found in its chain.
	jumps bool
}

// count returns the number of SKIFF-* chains listed.
func (k *kernelState) count() int {
	n := 0
	for _, names := range k.names {
		n += len(names)
	}
	return n
}

// same reports whether the kernel is known to hold c exactly.
func (k *kernelState) same(c chain) bool {
	if k == nil || k.rules == nil {
		return false
	}
	have, ok := k.rules[c.table+"/"+c.name]
	return ok && slices.Equal(have, c.rules)
}

// listChains lists the nat and filter tables ("iptables -S", one process
// per table: on iptables-nft 1.8.9 as fast as one iptables-save of every
// table, and blind to the tables the proxy does not use) and returns the
// SKIFF-* chains with their rules, and whether the jumps are in place.
func (p *Proxier) listChains(ctx context.Context) (*kernelState, error) {
	k := &kernelState{names: map[string][]string{}, rules: map[string][]string{}, jumps: true}
	for _, table := range []string{tableNAT, tableFilter} {
		out, err := p.run(ctx, nil, "iptables", "--wait", "5", "-t", table, "-S")
		if err != nil {
			return nil, fmt.Errorf("list table %s: %w", table, err)
		}
		k.parse(table, string(out))
	}
	return k, nil
}

// parse adds one table's "-S" listing to k.
func (k *kernelState) parse(table, listing string) {
	builtin := map[string]bool{} // the rules of the built-in chains, as listed
	for line := range strings.Lines(listing) {
		line = strings.TrimSuffix(line, "\n")
		if name, ok := strings.CutPrefix(line, "-N "); ok {
			if strings.HasPrefix(name, chainPrefix) {
				k.names[table] = append(k.names[table], name)
				k.rules[table+"/"+name] = []string{}
			}
			continue
		}
		rest, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		if id := table + "/" + name; strings.HasPrefix(name, chainPrefix) {
			k.rules[id] = append(k.rules[id], line)
		} else {
			builtin[line] = true
		}
	}
	for _, j := range jumps() {
		if j.table == table && !builtin[j.line()] {
			k.jumps = false
		}
	}
}

// nftBackend reports whether iptables is iptables-nft, asking once.
func (p *Proxier) nftBackend(ctx context.Context) (bool, error) {
	if p.backend == "" {
		out, err := p.run(ctx, nil, "iptables-restore", "--version")
		if err != nil {
			return false, err
		}
		p.backend = "legacy"
		if strings.Contains(string(out), "nf_tables") {
			p.backend = "nf_tables"
		}
	}
	return p.backend == "nf_tables", nil
}

// ownChains lists the proxy's chains present in the kernel, per table, as
// iptables-save shows them.
func (p *Proxier) ownChains(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	for _, table := range []string{tableNAT, tableFilter} {
		text, err := p.run(ctx, nil, "iptables-save", "-t", table)
		if err != nil {
			return nil, fmt.Errorf("list chains of table %s: %w", table, err)
		}
		for line := range strings.Lines(string(text)) {
			if name, ok := strings.CutPrefix(line, ":"+chainPrefix); ok {
				name, _, _ = strings.Cut(name, " ")
				out[table] = append(out[table], chainPrefix+name)
			}
		}
	}
	return out, nil
}

// goIPTables runs fn with the go-iptables handle inside the namespace.
// go-iptables takes no context, so the call runs on a goroutine of its own
// and the caller stops waiting at the exec deadline; each iptables process
// it starts is bounded by iptables' own --wait 5.
func (p *Proxier) goIPTables(ctx context.Context, fn func(*iptables.IPTables) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ExecTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		p.iptMu.Lock() // a call abandoned at its deadline may still hold it
		defer p.iptMu.Unlock()
		done <- p.enter(func() error {
			if p.ipt == nil {
				ipt, err := iptables.New(iptables.Timeout(5))
				if err != nil {
					return fmt.Errorf("find iptables: %w", err)
				}
				p.ipt = ipt
			}
			return fn(p.ipt)
		})
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("iptables: %w", ctx.Err())
	}
}

// ensureJumps puts the jumps from the built-in chains to the proxy's, first
// in each chain, unless they are there already.
func (p *Proxier) ensureJumps(ctx context.Context) error {
	return p.goIPTables(ctx, func(ipt *iptables.IPTables) error {
		for _, j := range jumps() {
			ok, err := ipt.Exists(j.table, j.chain, j.spec...)
			if err != nil {
				return fmt.Errorf("check jump from %s %s: %w", j.table, j.chain, err)
			}
			if ok {
				continue
			}
			if err := ipt.Insert(j.table, j.chain, 1, j.spec...); err != nil {
				return fmt.Errorf("add jump from %s %s: %w", j.table, j.chain, err)
			}
		}
		return nil
	})
}

// removeJumps deletes the jumps ensureJumps adds; missing ones are fine.
func (p *Proxier) removeJumps(ctx context.Context) error {
	return p.goIPTables(ctx, func(ipt *iptables.IPTables) error {
		var errs []error
		for _, j := range jumps() {
			// A jump to a chain that does not exist cannot be there;
			// iptables says so with an error of its own.
			var ierr *iptables.Error
			err := ipt.DeleteIfExists(j.table, j.chain, j.spec...)
			if err != nil && !(errors.As(err, &ierr) && ierr.IsNotExist()) {
				errs = append(errs, fmt.Errorf("remove jump from %s %s: %w", j.table, j.chain, err))
			}
		}
		return errors.Join(errs...)
	})
}

// bridgeNFPath is the sysctl that sends bridged IPv4 traffic through
// iptables; it is per network namespace, and exists when br_netfilter is
// loaded.
const bridgeNFPath = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// ensureBridgeNetfilter sets bridge-nf-call-iptables to 1 in the namespace
// and returns whether it changed it. A missing sysctl (br_netfilter not
// loaded) is reported, not fatal: only pods reaching a service whose chosen
// endpoint is on their own bridge need it.
func (p *Proxier) ensureBridgeNetfilter() (changed bool, err error) {
	err = p.enter(func() error {
		cur, err := os.ReadFile(bridgeNFPath)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(cur)) == "1" {
			return nil
		}
		if err := os.WriteFile(bridgeNFPath, []byte("1\n"), 0o644); err != nil {
			return err
		}
		changed = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("set net.bridge.bridge-nf-call-iptables: %w", err)
	}
	return changed, nil
}

// resetBridgeNetfilter puts bridge-nf-call-iptables back to 0.
func (p *Proxier) resetBridgeNetfilter() error {
	err := p.enter(func() error { return os.WriteFile(bridgeNFPath, []byte("0\n"), 0o644) })
	if err != nil {
		return fmt.Errorf("reset net.bridge.bridge-nf-call-iptables: %w", err)
	}
	return nil
}
