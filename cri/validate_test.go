package cri

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// TestUnsupportedSettingsRefused: what the Wasm runtime cannot honour is
// InvalidArgument naming the field, and nothing is created.
func TestUnsupportedSettingsRefused(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importImage("ok", wasmtest.Build())
	pod := e.runPod("p")
	dir := t.TempDir()

	sandboxTests := []struct {
		name  string
		edit  func(*runtime.LinuxPodSandboxConfig)
		field string
	}{
		{"privileged", func(l *runtime.LinuxPodSandboxConfig) { l.SecurityContext.Privileged = true }, "config.linux.security_context.privileged"},
		{"host pid", func(l *runtime.LinuxPodSandboxConfig) {
			l.SecurityContext.NamespaceOptions = &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}
		}, "config.linux.security_context.namespace_options.pid"},
		{"host ipc", func(l *runtime.LinuxPodSandboxConfig) {
			l.SecurityContext.NamespaceOptions = &runtime.NamespaceOption{Ipc: runtime.NamespaceMode_NODE}
		}, "config.linux.security_context.namespace_options.ipc"},
		{"selinux", func(l *runtime.LinuxPodSandboxConfig) {
			l.SecurityContext.SelinuxOptions = &runtime.SELinuxOption{Type: "spc_t"}
		}, "config.linux.security_context.selinux_options"},
		{"seccomp localhost", func(l *runtime.LinuxPodSandboxConfig) {
			l.SecurityContext.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/p.json"}
		}, "config.linux.security_context.seccomp.profile_type"},
		{"sysctls", func(l *runtime.LinuxPodSandboxConfig) { l.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"} }, "config.linux.sysctls[net.ipv4.ip_forward]"},
	}
	for _, tt := range sandboxTests {
		t.Run("sandbox "+tt.name, func(t *testing.T) {
			cfg := podConfig("refused", "")
			cfg.Linux = &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{}}
			tt.edit(cfg.Linux)
			_, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
			wantCode(t, err, codes.InvalidArgument, tt.field)
		})
	}

	containerTests := []struct {
		name  string
		edit  func(*runtime.ContainerConfig)
		field string
	}{
		{"devices", func(c *runtime.ContainerConfig) {
			c.Devices = []*runtime.Device{{HostPath: "/dev/null", ContainerPath: "/dev/x"}}
		}, "config.devices"},
		{"privileged", func(c *runtime.ContainerConfig) { c.Linux.SecurityContext.Privileged = true }, "config.linux.security_context.privileged"},
		{"add capabilities", func(c *runtime.ContainerConfig) {
			c.Linux.SecurityContext.Capabilities = &runtime.Capability{AddCapabilities: []string{"NET_ADMIN"}}
		}, "config.linux.security_context.capabilities.add_capabilities"},
		{"group without user", func(c *runtime.ContainerConfig) {
			c.Linux.SecurityContext.RunAsGroup = &runtime.Int64Value{Value: 1000}
		}, "config.linux.security_context.run_as_group"},
		{"host network in a pod of its own", func(c *runtime.ContainerConfig) {
			c.Linux.SecurityContext.NamespaceOptions = &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE}
		}, "config.linux.security_context.namespace_options.network"},
		{"apparmor localhost", func(c *runtime.ContainerConfig) {
			c.Linux.SecurityContext.Apparmor = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "p"}
		}, "config.linux.security_context.apparmor.profile_type"},
		{"seccomp path", func(c *runtime.ContainerConfig) { c.Linux.SecurityContext.SeccompProfilePath = "localhost/p.json" }, "config.linux.security_context.seccomp_profile_path"},
		{"mount propagation", func(c *runtime.ContainerConfig) {
			c.Mounts = []*runtime.Mount{{ContainerPath: "/d", HostPath: dir, Propagation: runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL}}
		}, "config.mounts[0].propagation"},
		{"image mount", func(c *runtime.ContainerConfig) {
			c.Mounts = []*runtime.Mount{{ContainerPath: "/d", Image: &runtime.ImageSpec{Image: "ok"}}}
		}, "config.mounts[0].image"},
		{"selinux relabel", func(c *runtime.ContainerConfig) {
			c.Mounts = []*runtime.Mount{{ContainerPath: "/d", HostPath: dir, SelinuxRelabel: true}}
		}, "config.mounts[0].selinux_relabel"},
		{"file mount", func(c *runtime.ContainerConfig) {
			c.Mounts = []*runtime.Mount{{ContainerPath: "/d", HostPath: "/etc/hostname"}}
		}, "config.mounts[0].host_path"},
		{"missing host path", func(c *runtime.ContainerConfig) {
			c.Mounts = []*runtime.Mount{{ContainerPath: "/d", HostPath: dir + "/nope"}}
		}, "config.mounts[0].host_path"},
		{"relative container path", func(c *runtime.ContainerConfig) {
			c.Mounts = []*runtime.Mount{{ContainerPath: "d", HostPath: dir}}
		}, "config.mounts[0].container_path"},
		{"mounted twice", func(c *runtime.ContainerConfig) {
			c.Mounts = []*runtime.Mount{{ContainerPath: "/d", HostPath: dir}, {ContainerPath: "/d", HostPath: dir}}
		}, "config.mounts[1].container_path"},
	}
	for _, tt := range containerTests {
		t.Run("container "+tt.name, func(t *testing.T) {
			cfg := containerConfig("refused", "ok")
			cfg.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{}}
			tt.edit(cfg)
			_, err := e.create(pod, cfg)
			wantCode(t, err, codes.InvalidArgument, tt.field)
		})
	}
	pods, _ := e.rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	ctrs, _ := e.rs.ListContainers(ctx, &runtime.ListContainersRequest{})
	if len(pods.Items) != 1 || len(ctrs.Containers) != 0 {
		t.Errorf("left behind: %d sandboxes (want 1), %d containers (want 0)", len(pods.Items), len(ctrs.Containers))
	}

	// The defaults are honoured, and mounts are reported.
	cfg := containerConfig("fine", "ok")
	cfg.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
		Capabilities: &runtime.Capability{DropCapabilities: []string{"ALL"}},
		Seccomp:      &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault},
	}}
	cfg.Mounts = []*runtime.Mount{{ContainerPath: "/data", HostPath: dir, Readonly: true}}
	id := e.mustCreate(pod, cfg)
	ms := e.status(id).GetMounts()
	if len(ms) != 1 || ms[0].ContainerPath != "/data" || ms[0].HostPath != dir || !ms[0].Readonly {
		t.Errorf("ContainerStatus mounts = %v", ms)
	}
}

// TestUnknownIDStopRemove: the CRI spec makes Stop and Remove of an ID the
// runtime does not know succeed.
func TestUnknownIDStopRemove(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if _, err := e.rs.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("StopContainer: %v", err)
	}
	if _, err := e.rs.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("RemoveContainer: %v", err)
	}
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("StopPodSandbox: %v", err)
	}
	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("RemovePodSandbox: %v", err)
	}
}

// TestExecRefused: exec and attach in a Wasm container are refused as
// Unimplemented, naming the container and the reason; port-forward needs
// a streaming server (streaming_test.go has one); an unknown ID is NotFound.
func TestExecRefused(t *testing.T) {
	e := newEnv(t, false)
	e.importFile("hello", needHello(t))
	pod := e.runPod("exec")
	id := e.mustCreate(pod, containerConfig("c", "hello", "sleep", "1h"))
	ctx := context.Background()
	_, err := e.rs.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh"}})
	wantCode(t, err, codes.Unimplemented, id, "cannot run another command")
	_, err = e.rs.Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"sh"}})
	wantCode(t, err, codes.Unimplemented, id, "cannot run another command")
	_, err = e.rs.Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdout: true})
	wantCode(t, err, codes.Unimplemented, id, "no terminal")
	_, err = e.rs.PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: pod, Port: []int32{80}})
	wantCode(t, err, codes.Unavailable, pod, "streaming server")
	_, err = e.rs.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: "f00d", Cmd: []string{"sh"}})
	wantCode(t, err, codes.NotFound)
}
