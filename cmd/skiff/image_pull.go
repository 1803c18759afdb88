package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"skiff.dev/skiff/runtime/image"
)

func newImagePullCmd(dataDir *string) *cobra.Command {
	var registryCfg string
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from its OCI registry into the node's image store, showing progress",
		Long: `Pull fetches REF (a Wasm artifact or a Linux container image) into the
node's image store under --data-dir, as the node does for a pod, and shows
the layers' progress: a bar on a terminal, a line per layer otherwise.
Registry mirrors, plain-HTTP registries and credentials come from
--registry-config (the file skiff dev and skiff agent take).`,
		Example: `  skiff image pull 127.0.0.1:5000/busybox:1.36
  skiff image pull --registry-config /etc/skiff/registries.yaml registry.internal/app:v1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cfg image.Config
			if registryCfg != "" {
				var err error
				if cfg, err = image.LoadConfig(registryCfg); err != nil {
					return err
				}
			}
			st, err := image.OpenConfig(imageDir(*dataDir), cfg)
			if err != nil {
				return err
			}
			out := cmd.ErrOrStderr()
			tty := false
			if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				tty = true
			}
			bar := newPullProgress(out, args[0], tty, time.Now)
			img, err := st.PullWithProgress(cmd.Context(), args[0], image.Credentials{}, bar.update)
			bar.finish(err == nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %s (%s, %s, %d bytes)\n", args[0], img.ID, imageType(img), img.Size)
			return nil
		},
	}
	cmd.Flags().StringVar(&registryCfg, "registry-config", "", "YAML file of registry mirrors, plain-HTTP registries and auth (see README, Images)")
	return cmd
}

// pullProgress draws a pull's progress: on a terminal one line, redrawn at
// most ten times a second, with a bar of the bytes of all layers seen so
// far; elsewhere a line per layer once it is fetched.
type pullProgress struct {
	out io.Writer
	ref string
	tty bool
	now func() time.Time

	mu     sync.Mutex // PullWithProgress may report from several goroutines
	layers map[string]image.Progress
	order  []string
	drawn  time.Time
	width  int // of the last line drawn, to blank it
}

func newPullProgress(out io.Writer, ref string, tty bool, now func() time.Time) *pullProgress {
	return &pullProgress{out: out, ref: ref, tty: tty, now: now, layers: map[string]image.Progress{}}
}

func (p *pullProgress) update(pr image.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, seen := p.layers[pr.Layer]
	if !seen {
		p.order = append(p.order, pr.Layer)
	}
	p.layers[pr.Layer] = pr
	if !p.tty {
		if pr.Total > 0 && pr.Done == pr.Total && (!seen || old.Done != old.Total) {
			fmt.Fprintf(p.out, "%s: %s\n", short(pr.Layer), humanBytes(pr.Total))
		}
		return
	}
	if now := p.now(); now.Sub(p.drawn) >= 100*time.Millisecond {
		p.drawn = now
		p.draw()
	}
}

// finish draws the last state and ends the line.
func (p *pullProgress) finish(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && len(p.order) > 0 {
		p.draw()
		fmt.Fprintln(p.out)
	}
}

// line is the progress line: layers fetched, bytes and a bar.
func (p *pullProgress) line() string {
	var done, total int64
	complete := 0
	for _, l := range p.order {
		pr := p.layers[l]
		done, total = done+pr.Done, total+pr.Total
		if pr.Total > 0 && pr.Done == pr.Total {
			complete++
		}
	}
	const width = 30
	filled, pct := 0, 0
	if total > 0 {
		filled, pct = int(done*width/total), int(done*100/total)
	}
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	if filled > 0 && filled < width {
		bar = strings.Repeat("=", filled-1) + ">" + strings.Repeat(" ", width-filled)
	}
	return fmt.Sprintf("%s [%s] %3d%% %s/%s, %d/%d layers", p.ref, bar, pct, humanBytes(done), humanBytes(total), complete, len(p.order))
}

func (p *pullProgress) draw() {
	l := p.line()
	pad := max(0, p.width-len(l))
	fmt.Fprintf(p.out, "\r%s%s", l, strings.Repeat(" ", pad))
	p.width = len(l)
}

// short is a digest cut to 12 hex digits, as docker prints layers.
func short(digest string) string {
	_, hex, _ := strings.Cut(digest, ":")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// humanBytes prints n in B, kB, MB or GB (powers of 1000, as docker).
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fGB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fMB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fkB", float64(n)/1e3)
	}
	return fmt.Sprintf("%dB", n)
}
