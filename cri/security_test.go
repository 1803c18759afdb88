package cri

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// wantInvalid checks that err is an invalid argument saying each of parts.
func wantInvalid(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if !errors.Is(err, errInvalidArgument) {
		t.Errorf("%s: %v, want an invalid argument", what, err)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %q does not say %q", what, err, p)
		}
	}
}

func TestSandboxSecurityValidation(t *testing.T) {
	sandbox := func(f func(*runtime.LinuxPodSandboxConfig)) *runtime.PodSandboxConfig {
		l := &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{NamespaceOptions: &runtime.NamespaceOption{}}}
		f(l)
		return &runtime.PodSandboxConfig{Linux: l}
	}
	ns := func(l *runtime.LinuxPodSandboxConfig) *runtime.NamespaceOption {
		return l.SecurityContext.NamespaceOptions
	}
	// What a sandbox that may hold OCI containers accepts.
	for _, tc := range []struct {
		name string
		edit func(*runtime.LinuxPodSandboxConfig)
	}{
		{"privileged", func(l *runtime.LinuxPodSandboxConfig) { l.SecurityContext.Privileged = true }},
		{"host pid and ipc", func(l *runtime.LinuxPodSandboxConfig) {
			ns(l).Pid, ns(l).Ipc = runtime.NamespaceMode_NODE, runtime.NamespaceMode_NODE
		}},
		{"safe and unsafe sysctls", func(l *runtime.LinuxPodSandboxConfig) {
			l.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1", "kernel.msgmax": "8192", "fs.mqueue.msg_max": "100", "net.ipv4.ip_local_port_range": "1024 65000"}
		}},
		{"net sysctl with host ipc", func(l *runtime.LinuxPodSandboxConfig) {
			ns(l).Ipc, l.Sysctls = runtime.NamespaceMode_NODE, map[string]string{"net.core.somaxconn": "1024"}
		}},
		{"localhost seccomp", func(l *runtime.LinuxPodSandboxConfig) {
			l.SecurityContext.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/p.json"}
		}},
		{"localhost seccomp path", func(l *runtime.LinuxPodSandboxConfig) { l.SecurityContext.SeccompProfilePath = "localhost//p.json" }},
	} {
		if err := validateSandboxConfig(sandbox(tc.edit), true); err != nil {
			t.Errorf("OCI sandbox, %s: %v", tc.name, err)
		}
	}
	for _, tc := range []struct {
		name  string
		oci   bool
		edit  func(*runtime.LinuxPodSandboxConfig)
		parts []string
	}{
		{"privileged, Wasm", false, func(l *runtime.LinuxPodSandboxConfig) { l.SecurityContext.Privileged = true },
			[]string{"config.linux.security_context.privileged", "Wasm"}},
		{"host pid, Wasm", false, func(l *runtime.LinuxPodSandboxConfig) { ns(l).Pid = runtime.NamespaceMode_NODE },
			[]string{"config.linux.security_context.namespace_options.pid", "Wasm"}},
		{"sysctls, Wasm", false, func(l *runtime.LinuxPodSandboxConfig) { l.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1"} },
			[]string{"config.linux.sysctls[kernel.shm_rmid_forced]", "Wasm"}},
		{"localhost seccomp, Wasm", false, func(l *runtime.LinuxPodSandboxConfig) {
			l.SecurityContext.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/p.json"}
		}, []string{"config.linux.security_context.seccomp.profile_type"}},
		{"ipc sysctl with host ipc", true, func(l *runtime.LinuxPodSandboxConfig) {
			ns(l).Ipc, l.Sysctls = runtime.NamespaceMode_NODE, map[string]string{"kernel.shm_rmid_forced": "1"}
		}, []string{"config.linux.sysctls[kernel.shm_rmid_forced]", "IPC namespace"}},
		{"net sysctl with host network", true, func(l *runtime.LinuxPodSandboxConfig) {
			ns(l).Network, l.Sysctls = runtime.NamespaceMode_NODE, map[string]string{"net.ipv4.ip_forward": "1"}
		}, []string{"config.linux.sysctls[net.ipv4.ip_forward]", "network namespace"}},
		{"node-wide sysctl", true, func(l *runtime.LinuxPodSandboxConfig) { l.Sysctls = map[string]string{"vm.swappiness": "10"} },
			[]string{"config.linux.sysctls[vm.swappiness]", "not a namespaced sysctl"}},
		{"kernel.hostname", true, func(l *runtime.LinuxPodSandboxConfig) { l.Sysctls = map[string]string{"kernel.hostname": "x"} },
			[]string{"config.linux.sysctls[kernel.hostname]"}},
		{"bad sysctl name", true, func(l *runtime.LinuxPodSandboxConfig) { l.Sysctls = map[string]string{"kernel/../x": "1"} },
			[]string{"config.linux.sysctls[kernel/../x]", "not a sysctl name"}},
		{"multi-line value", true, func(l *runtime.LinuxPodSandboxConfig) { l.Sysctls = map[string]string{"kernel.msgmax": "1\n2"} },
			[]string{"config.linux.sysctls[kernel.msgmax]"}},
		{"relative localhost profile", true, func(l *runtime.LinuxPodSandboxConfig) {
			l.SecurityContext.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "p.json"}
		}, []string{"config.linux.security_context.seccomp.localhost_ref"}},
		{"unknown profile path", true, func(l *runtime.LinuxPodSandboxConfig) { l.SecurityContext.SeccompProfilePath = "docker/strict" },
			[]string{"config.linux.security_context.seccomp_profile_path"}},
		{"user namespace", true, func(l *runtime.LinuxPodSandboxConfig) {
			ns(l).UsernsOptions = &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD}
		}, []string{"config.linux.security_context.namespace_options.userns_options.mode"}},
		{"target pid", true, func(l *runtime.LinuxPodSandboxConfig) { ns(l).Pid = runtime.NamespaceMode_TARGET },
			[]string{"config.linux.security_context.namespace_options.pid"}},
	} {
		wantInvalid(t, tc.name, validateSandboxConfig(sandbox(tc.edit), tc.oci), tc.parts...)
	}
}

func TestContainerSecurityValidation(t *testing.T) {
	plain := &sandboxRecord{ID: "plain"}
	privileged := &sandboxRecord{ID: "priv", Privileged: true}
	withSysctls := &sandboxRecord{ID: "sysctls", Sysctls: map[string]string{"kernel.shm_rmid_forced": "1"}}
	cfg := func(f func(*runtime.LinuxContainerSecurityContext)) *runtime.ContainerConfig {
		sc := &runtime.LinuxContainerSecurityContext{}
		f(sc)
		return &runtime.ContainerConfig{Linux: &runtime.LinuxContainerConfig{SecurityContext: sc}}
	}
	for _, tc := range []struct {
		name string
		sb   *sandboxRecord
		edit func(*runtime.LinuxContainerSecurityContext)
	}{
		{"privileged in a privileged sandbox", privileged, func(sc *runtime.LinuxContainerSecurityContext) { sc.Privileged = true }},
		// critest's HostNetwork tests: pid left at POD, its zero value.
		{"pid POD", plain, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.NamespaceOptions = &runtime.NamespaceOption{Pid: runtime.NamespaceMode_POD, Ipc: runtime.NamespaceMode_POD}
		}},
		{"host pid and ipc", plain, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.NamespaceOptions = &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE, Ipc: runtime.NamespaceMode_NODE}
		}},
		{"own ipc with IPC sysctls", withSysctls, func(sc *runtime.LinuxContainerSecurityContext) {}},
		{"masked and readonly paths", plain, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.MaskedPaths, sc.ReadonlyPaths = []string{"/bin/ls"}, []string{"/tmp"}
		}},
		{"localhost seccomp", plain, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/p.json"}
		}},
	} {
		if err := validateContainerConfig(cfg(tc.edit), tc.sb, HandlerRunc); err != nil {
			t.Errorf("runc, %s: %v", tc.name, err)
		}
	}
	for _, tc := range []struct {
		name    string
		sb      *sandboxRecord
		handler string
		edit    func(*runtime.LinuxContainerSecurityContext)
		parts   []string
	}{
		{"privileged in a plain sandbox", plain, HandlerRunc, func(sc *runtime.LinuxContainerSecurityContext) { sc.Privileged = true },
			[]string{"config.linux.security_context.privileged", "sandbox plain is not privileged"}},
		{"privileged Wasm", privileged, HandlerWasm, func(sc *runtime.LinuxContainerSecurityContext) { sc.Privileged = true },
			[]string{"config.linux.security_context.privileged", "Wasm"}},
		{"host ipc with IPC sysctls", withSysctls, HandlerRunc, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.NamespaceOptions = &runtime.NamespaceOption{Ipc: runtime.NamespaceMode_NODE}
		}, []string{"config.linux.security_context.namespace_options.ipc", "kernel.shm_rmid_forced"}},
		{"Wasm in a sandbox with sysctls", withSysctls, HandlerWasm, func(sc *runtime.LinuxContainerSecurityContext) {},
			[]string{"config.linux.sysctls[kernel.shm_rmid_forced] of sandbox sysctls", "Wasm"}},
		{"Wasm host pid", plain, HandlerWasm, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.NamespaceOptions = &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}
		}, []string{"config.linux.security_context.namespace_options.pid"}},
		{"Wasm localhost seccomp", plain, HandlerWasm, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.SeccompProfilePath = "localhost//p.json"
		}, []string{"config.linux.security_context.seccomp_profile_path"}},
		{"Wasm masked paths", plain, HandlerWasm, func(sc *runtime.LinuxContainerSecurityContext) { sc.MaskedPaths = []string{"/x"} },
			[]string{"config.linux.security_context.masked_paths"}},
		{"apparmor localhost", plain, HandlerRunc, func(sc *runtime.LinuxContainerSecurityContext) {
			sc.Apparmor = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "p"}
		}, []string{"config.linux.security_context.apparmor.profile_type"}},
	} {
		wantInvalid(t, tc.name, validateContainerConfig(cfg(tc.edit), tc.sb, tc.handler), tc.parts...)
	}
}

func TestOCISecuritySettings(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "block-hostname.json")
	os.WriteFile(profile, []byte("{\n  \"defaultAction\": \"SCMP_ACT_ALLOW\",\n  \"syscalls\": [{\"names\": [\"sethostname\"], \"action\": \"SCMP_ACT_ERRNO\"}]\n}\n"), 0o600)
	notJSON := filepath.Join(dir, "not.json")
	os.WriteFile(notJSON, []byte("defaultAction: allow"), 0o600)
	sc := func(f func(*runtime.LinuxContainerSecurityContext)) *runtime.ContainerConfig {
		c := &runtime.LinuxContainerSecurityContext{}
		f(c)
		return &runtime.ContainerConfig{Linux: &runtime.LinuxContainerConfig{SecurityContext: c}}
	}
	const compact = `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}`
	for _, tc := range []struct {
		name    string
		edit    func(*runtime.LinuxContainerSecurityContext)
		seccomp string
		profile string
	}{
		{"no profile is unconfined", func(*runtime.LinuxContainerSecurityContext) {}, skiffrt.SeccompUnconfined, ""},
		{"an empty profile is RuntimeDefault", func(c *runtime.LinuxContainerSecurityContext) { c.Seccomp = &runtime.SecurityProfile{} }, skiffrt.SeccompRuntimeDefault, ""},
		{"unconfined", func(c *runtime.LinuxContainerSecurityContext) {
			c.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}
		}, skiffrt.SeccompUnconfined, ""},
		{"localhost", func(c *runtime.LinuxContainerSecurityContext) {
			c.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: profile}
		}, skiffrt.SeccompLocalhost, compact},
		{"deprecated localhost path", func(c *runtime.LinuxContainerSecurityContext) { c.SeccompProfilePath = "localhost/" + profile }, skiffrt.SeccompLocalhost, compact},
		{"deprecated default path", func(c *runtime.LinuxContainerSecurityContext) { c.SeccompProfilePath = "runtime/default" }, skiffrt.SeccompRuntimeDefault, ""},
		{"the profile wins over the path", func(c *runtime.LinuxContainerSecurityContext) {
			c.Seccomp, c.SeccompProfilePath = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}, "unconfined"
		}, skiffrt.SeccompRuntimeDefault, ""},
		{"privileged ignores the profile, unread", func(c *runtime.LinuxContainerSecurityContext) {
			c.Privileged = true
			c.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: filepath.Join(dir, "missing.json")}
		}, skiffrt.SeccompUnconfined, ""},
	} {
		o, err := ociSettings(sc(tc.edit))
		if err != nil || o.Seccomp != tc.seccomp || string(o.SeccompProfile) != tc.profile {
			t.Errorf("%s: seccomp %q, profile %s, %v; want %q, %s", tc.name, o.GetSeccomp(), o.GetProfile(), err, tc.seccomp, tc.profile)
		}
	}
	o, err := ociSettings(sc(func(c *runtime.LinuxContainerSecurityContext) {
		c.Privileged = true
		c.NamespaceOptions = &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE, Ipc: runtime.NamespaceMode_NODE}
		c.MaskedPaths, c.ReadonlyPaths = []string{"/bin/ls"}, []string{"/tmp"}
	}))
	if err != nil || !o.Privileged || !o.HostPID || !o.HostIPC || !slices.Equal(o.MaskedPaths, []string{"/bin/ls"}) || !slices.Equal(o.ReadonlyPaths, []string{"/tmp"}) {
		t.Errorf("settings %+v, %v", o, err)
	}
	// They reach the runtime's spec, with the sandbox's sysctls.
	var spec skiffrt.ContainerSpec
	applyOCI(&spec, o, &sandboxRecord{Sysctls: map[string]string{"net.core.somaxconn": "1024"}})
	if !spec.Privileged || !spec.HostPID || !spec.HostIPC || spec.Seccomp != skiffrt.SeccompUnconfined || spec.Sysctls["net.core.somaxconn"] != "1024" ||
		!slices.Equal(spec.MaskedPaths, []string{"/bin/ls"}) || !slices.Equal(spec.ReadonlyPaths, []string{"/tmp"}) {
		t.Errorf("runtime spec %+v", spec)
	}
	for _, tc := range []struct {
		name string
		edit func(*runtime.LinuxContainerSecurityContext)
		part string
	}{
		{"missing profile", func(c *runtime.LinuxContainerSecurityContext) {
			c.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: filepath.Join(dir, "missing.json")}
		}, "config.linux.security_context.seccomp.localhost_ref"},
		{"profile not JSON", func(c *runtime.LinuxContainerSecurityContext) {
			c.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: notJSON}
		}, "not a JSON object"},
		{"missing profile by path", func(c *runtime.LinuxContainerSecurityContext) { c.SeccompProfilePath = "localhost/" + dir + "/nope" },
			"config.linux.security_context.seccomp_profile_path"},
		{"relative masked path", func(c *runtime.LinuxContainerSecurityContext) { c.MaskedPaths = []string{"proc/kcore"} },
			"config.linux.security_context.masked_paths[0]"},
		{"readonly root", func(c *runtime.LinuxContainerSecurityContext) { c.ReadonlyPaths = []string{"/"} },
			"config.linux.security_context.readonly_paths[0]"},
	} {
		_, err := ociSettings(sc(tc.edit))
		wantInvalid(t, tc.name, err, tc.part)
	}
}

func TestMountPropagationSettings(t *testing.T) {
	dir := t.TempDir()
	mount := func(p runtime.MountPropagation) []*runtime.Mount {
		return []*runtime.Mount{{ContainerPath: "/d", HostPath: dir, Propagation: p}}
	}
	for _, tc := range []struct {
		p          runtime.MountPropagation
		privileged bool
		want       skiffrt.Propagation
	}{
		{runtime.MountPropagation_PROPAGATION_PRIVATE, false, skiffrt.PropagationPrivate},
		{runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, false, skiffrt.PropagationHostToContainer},
		{runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL, true, skiffrt.PropagationBidirectional},
	} {
		ms, err := mountsOf(mount(tc.p), true, tc.privileged)
		if err != nil || len(ms) != 1 || ms[0].Propagation != tc.want {
			t.Errorf("%v: %+v, %v; want propagation %q", tc.p, ms, err, tc.want)
			continue
		}
		if got := criMounts(ms)[0].GetPropagation(); got != tc.p {
			t.Errorf("%v: ContainerStatus reports %v", tc.p, got)
		}
		if got := runtimeMounts(ms)[0].Propagation; got != tc.want {
			t.Errorf("%v: the runtime gets %q", tc.p, got)
		}
	}
	_, err := mountsOf(mount(runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL), true, false)
	wantInvalid(t, "bidirectional, unprivileged", err, "config.mounts[0].propagation", "privileged")
	_, err = mountsOf(mount(runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER), false, false)
	wantInvalid(t, "Wasm", err, "config.mounts[0].propagation", "Wasm")
	_, err = mountsOf([]*runtime.Mount{{ContainerPath: "/d", HostPath: dir, Readonly: true, RecursiveReadOnly: true,
		Propagation: runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}}, true, false)
	wantInvalid(t, "recursive read-only with propagation", err, "config.mounts[0].recursive_read_only")

	// SELinux relabelling of an OCI mount is nothing to do on a node
	// without SELinux, as containerd skips it; a Wasm mount refuses it.
	relabel := []*runtime.Mount{{ContainerPath: "/d", HostPath: dir, SelinuxRelabel: true}}
	if ms, err := mountsOf(relabel, true, false); !selinuxEnabled() && (err != nil || len(ms) != 1) {
		t.Errorf("relabelled OCI mount on a node without SELinux: %+v, %v", ms, err)
	}
	_, err = mountsOf(relabel, false, false)
	wantInvalid(t, "Wasm relabel", err, "config.mounts[0].selinux_relabel")
}

// GetSeccomp and GetProfile read a record that may be nil, for messages.
func (o *ociRecord) GetSeccomp() string {
	if o == nil {
		return ""
	}
	return o.Seccomp
}

func (o *ociRecord) GetProfile() string {
	if o == nil {
		return ""
	}
	return string(o.SeccompProfile)
}
