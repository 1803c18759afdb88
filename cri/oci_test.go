package cri

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

func TestContainerHandler(t *testing.T) {
	wasmImg := image.Image{ID: "sha256:aa", MediaType: image.MediaTypeWasm}
	ociImg := image.Image{ID: "sha256:bb", MediaType: image.MediaTypeOCI, Config: &image.RunConfig{Cmd: []string{"sh"}}}
	both := &service{runtimes: map[string]skiffrt.Runtime{HandlerWasm: nil, HandlerRunc: nil}}
	wasmOnly := &service{runtimes: map[string]skiffrt.Runtime{HandlerWasm: nil}}
	for _, tc := range []struct {
		name    string
		s       *service
		sb      string
		img     image.Image
		want    string
		wantErr error
		parts   []string
	}{
		{"no handler, Wasm image", both, "", wasmImg, HandlerWasm, nil, nil},
		{"no handler, OCI image", both, "", ociImg, HandlerRunc, nil, nil},
		{"runc handler, OCI image", both, HandlerRunc, ociImg, HandlerRunc, nil, nil},
		{"wasm handler, Wasm image", both, HandlerWasm, wasmImg, HandlerWasm, nil, nil},
		{"wasm handler, OCI image", both, HandlerWasm, ociImg, "", errInvalidArgument, []string{`image "app" is an OCI container image`, `handler "wasm" cannot run`, `runtimeClassName: runc`}},
		{"runc handler, Wasm image", both, HandlerRunc, wasmImg, "", errInvalidArgument, []string{`image "app" is a WebAssembly module`, `handler "runc" cannot run`}},
		{"OCI image, no runc", wasmOnly, "", ociImg, "", errFailedPrecondition, []string{`no "runc" runtime`, "Debian package runc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.containerHandler(&sandboxRecord{ID: "sb", RuntimeHandler: tc.sb}, "app", tc.img)
			if tc.wantErr == nil {
				if err != nil || got != tc.want {
					t.Fatalf("containerHandler = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("containerHandler = %q, %v; want %v", got, err, tc.wantErr)
			}
			for _, p := range tc.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not say %q", err, p)
				}
			}
		})
	}
}

func TestOCIImageDefaults(t *testing.T) {
	ic := &image.RunConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"cmd-arg"}, Env: []string{"PATH=/bin", "A=image"}, WorkingDir: "/srv", User: "app"}
	for _, tc := range []struct {
		name          string
		command, args []string
		ic            *image.RunConfig
		want          []string
	}{
		{"image entrypoint and cmd", nil, nil, ic, []string{"/entry", "cmd-arg"}},
		{"args replace cmd", nil, []string{"x"}, ic, []string{"/entry", "x"}},
		{"command replaces both", []string{"/bin/sh"}, nil, ic, []string{"/bin/sh"}},
		{"command and args", []string{"/bin/sh"}, []string{"-c", "true"}, ic, []string{"/bin/sh", "-c", "true"}},
		{"cmd alone", nil, nil, &image.RunConfig{Cmd: []string{"/bin/app"}}, []string{"/bin/app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtime.ContainerConfig{Command: tc.command, Args: tc.args}
			rec := containerRecord{Image: "app", OCI: &ociRecord{}}
			got, err := ociImageDefaults(&rec, cfg, image.Image{Config: tc.ic})
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("argv = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	// The config's environment overrides the image's; its working dir and
	// user win over the image's.
	rec := containerRecord{Image: "app", OCI: &ociRecord{WorkingDir: "/mine"}}
	if _, err := ociImageDefaults(&rec, &runtime.ContainerConfig{}, image.Image{Config: ic}); err != nil {
		t.Fatal(err)
	}
	rec.Env = setEnv(rec.Env, "A=config")
	if !slices.Equal(rec.Env, []string{"PATH=/bin", "A=config"}) || rec.OCI.WorkingDir != "/mine" || rec.OCI.User != "app" {
		t.Errorf("env %q, working dir %q, user %q", rec.Env, rec.OCI.WorkingDir, rec.OCI.User)
	}
	rec = containerRecord{Image: "app", OCI: &ociRecord{}}
	if _, err := ociImageDefaults(&rec, &runtime.ContainerConfig{}, image.Image{Config: &image.RunConfig{}}); !errors.Is(err, errInvalidArgument) || !strings.Contains(err.Error(), "no entrypoint or cmd") {
		t.Errorf("an image with nothing to run: %v", err)
	}
}

func TestOCISettings(t *testing.T) {
	sc := func(f func(*runtime.LinuxContainerSecurityContext)) *runtime.ContainerConfig {
		c := &runtime.LinuxContainerSecurityContext{}
		f(c)
		return &runtime.ContainerConfig{Linux: &runtime.LinuxContainerConfig{SecurityContext: c}}
	}
	o, err := ociSettings(sc(func(c *runtime.LinuxContainerSecurityContext) {
		c.RunAsUser = &runtime.Int64Value{Value: 1000}
		c.RunAsGroup = &runtime.Int64Value{Value: 2000}
		c.SupplementalGroups = []int64{3000}
		c.ReadonlyRootfs = true
		c.NoNewPrivs = true
		c.Capabilities = &runtime.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"ALL"}}
		c.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if o.User != "1000:2000" || !slices.Equal(o.AdditionalGIDs, []uint32{3000}) || !o.ReadOnlyRootfs || !o.NoNewPrivileges ||
		!slices.Equal(o.CapAdd, []string{"NET_ADMIN"}) || !slices.Equal(o.CapDrop, []string{"ALL"}) || o.Seccomp != skiffrt.SeccompUnconfined {
		t.Errorf("settings = %+v", o)
	}
	for _, tc := range []struct {
		name string
		cfg  *runtime.ContainerConfig
		part string
	}{
		{"relative working dir", &runtime.ContainerConfig{WorkingDir: "srv"}, "config.working_dir"},
		{"negative user", sc(func(c *runtime.LinuxContainerSecurityContext) { c.RunAsUser = &runtime.Int64Value{Value: -1} }), "run_as_user"},
		{"user name with a colon", sc(func(c *runtime.LinuxContainerSecurityContext) { c.RunAsUsername = "a:b" }), "run_as_username"},
		{"bad capability", sc(func(c *runtime.LinuxContainerSecurityContext) {
			c.Capabilities = &runtime.Capability{AddCapabilities: []string{"net admin"}}
		}), "capabilities"},
		{"oom score", &runtime.ContainerConfig{Linux: &runtime.LinuxContainerConfig{Resources: &runtime.LinuxContainerResources{OomScoreAdj: 2000}}}, "oom_score_adj"},
	} {
		if _, err := ociSettings(tc.cfg); !errors.Is(err, errInvalidArgument) || !strings.Contains(err.Error(), tc.part) {
			t.Errorf("%s: %v, want an invalid argument naming %s", tc.name, err, tc.part)
		}
	}
}

func TestCRIImageUser(t *testing.T) {
	for _, tc := range []struct {
		user     string
		uid      *runtime.Int64Value
		username string
	}{
		{"", nil, ""},
		{"1002", &runtime.Int64Value{Value: 1002}, ""},
		{"1003:1004", &runtime.Int64Value{Value: 1003}, ""},
		{"www-data", nil, "www-data"},
		{"www-data:1004", nil, "www-data"},
	} {
		got := criImage(image.Image{ID: "sha256:aa", MediaType: image.MediaTypeOCI, Config: &image.RunConfig{User: tc.user}})
		if got.GetUid().GetValue() != tc.uid.GetValue() || (got.GetUid() == nil) != (tc.uid == nil) || got.GetUsername() != tc.username {
			t.Errorf("user %q: uid %v, username %q", tc.user, got.GetUid(), got.GetUsername())
		}
	}
}

// TestSandboxFiles: a sandbox's /etc files are fixed at RunPodSandbox
// but written only when an OCI container asks for them (a Wasm pod costs
// none), once, and become that container's mounts.
func TestSandboxFiles(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	cfg := podConfig("web", e.logDir)
	cfg.Hostname = "web-0"
	cfg.DnsConfig = &runtime.DNSConfig{
		Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"},
	}
	run, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	dir := e.svc.sandboxDir(run.PodSandboxId)
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after RunPodSandbox, stat %s: %v; want nothing written before an OCI container asks", dir, err)
	}
	e.svc.mu.Lock()
	sb := e.svc.sandboxes[run.PodSandboxId].rec
	e.svc.mu.Unlock()
	for range 2 { // the second time, the files are there already
		mounts, err := e.svc.sandboxMounts(&sb, []skiffrt.Mount{{ContainerPath: "/etc/hostname", HostPath: "/own"}}, true)
		if err != nil {
			t.Fatal(err)
		}
		var targets []string
		for _, m := range mounts {
			targets = append(targets, m.ContainerPath)
			if !m.ReadOnly || filepath.Dir(m.HostPath) != dir {
				t.Errorf("mount %+v: want read-only, from %s", m, dir)
			}
		}
		if !slices.Equal(targets, []string{"/etc/hosts", "/etc/resolv.conf"}) {
			t.Errorf("mounts at %q, want /etc/hosts and /etc/resolv.conf (the container mounts its own /etc/hostname)", targets)
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := read("resolv.conf"), "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"; got != want {
		t.Errorf("resolv.conf = %q, want %q", got, want)
	}
	if got := read("hostname"); got != "web-0\n" {
		t.Errorf("hostname = %q", got)
	}
	if got := read("hosts"); !strings.HasPrefix(got, "127.0.0.1\tlocalhost\n") {
		t.Errorf("hosts = %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("%s holds %d files, want the 3 (no temporary left)", dir, len(entries))
	}
	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after RemovePodSandbox, stat %s: %v; want it gone", dir, err)
	}
	for _, tc := range []struct {
		dns  *runtime.DNSConfig
		part string
	}{
		{&runtime.DNSConfig{Servers: []string{"dns.example"}}, "servers"},
		{&runtime.DNSConfig{Servers: []string{"1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"}}, "at most 3"},
		{&runtime.DNSConfig{Searches: []string{"a b"}}, "searches"},
		{&runtime.DNSConfig{Options: []string{"ndots:1\nnameserver 1.2.3.4"}}, "options"},
	} {
		cfg := podConfig("bad-dns", e.logDir)
		cfg.DnsConfig = tc.dns
		_, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
		wantCode(t, err, codes.InvalidArgument, tc.part)
	}
}

func TestRuntimeConfig(t *testing.T) {
	res, err := (&service{}).RuntimeConfig(context.Background(), &runtime.RuntimeConfigRequest{})
	if err != nil || res.GetLinux().GetCgroupDriver() != runtime.CgroupDriver_CGROUPFS {
		t.Errorf("RuntimeConfig = %v, %v; want the cgroupfs driver", res, err)
	}
}
