package cri

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The settings a runtime cannot honour are refused, never ignored: a
// client that asks for a privileged container, a host namespace or a
// security profile must learn that it did not get it.
//
// A Wasm module has no system calls, devices, capabilities, users or
// processes of its own: it reaches only what WASI hands it. So the
// defaults (no privileges, no capabilities added, the runtime's default or
// an unconfined profile, which a Wasm module cannot escape anyway) are
// honoured; anything that asks for more, or for a profile the runtime
// would have to load, is InvalidArgument naming the field.
//
// An OCI container (runc) honours the security context as containerd
// does: privileged (in a privileged sandbox), the node's PID and IPC
// namespaces, the sandbox's sysctls, masked and read-only paths, Localhost
// seccomp profiles, mount propagation. skiff's own pod API has none of
// these, so only who can reach the CRI socket (the node's root user, with
// crictl) can ask for them; a tenant cannot. A pod-wide PID namespace
// (pid POD) is held by a holder process when the sandbox config asks for
// it explicitly (sandbox_pid.go); a container whose pid mode is POD in a
// sandbox without one gets a namespace of its own, as with CONTAINER.

// validateSandboxConfig checks a RunPodSandbox config; oci: the sandbox
// may hold OCI containers (its handler is runc, or none and the node has
// runc).
func validateSandboxConfig(cfg *runtime.PodSandboxConfig, oci bool) error {
	linux := cfg.GetLinux()
	sc := linux.GetSecurityContext()
	ns := sc.GetNamespaceOptions()
	if !oci {
		if keys := slices.Sorted(maps.Keys(linux.GetSysctls())); len(keys) > 0 {
			return unsupported("config.linux.sysctls["+keys[0]+"]", "sysctls are not supported by the Wasm runtime")
		}
		if sc.GetPrivileged() {
			return unsupported("config.linux.security_context.privileged", "privileged pods are not supported by the Wasm runtime")
		}
	}
	if err := validateNamespaces("config.linux.security_context.namespace_options", ns, oci); err != nil {
		return err
	}
	if err := validateSysctls(linux.GetSysctls(), ns.GetIpc() == runtime.NamespaceMode_NODE, ns.GetNetwork() == runtime.NamespaceMode_NODE); err != nil {
		return err
	}
	return validateProfiles("config.linux.security_context", sc, oci)
}

// sysctlName is a sysctl's dotted name.
var sysctlName = regexp.MustCompile(`^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$`)

// validateSysctls checks a sandbox's sysctls as the kubelet and runc do:
// each must be of a namespace the pod's containers have of their own, the
// IPC namespace (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*; not
// with the node's) or the network namespace (net.*; not with the node's).
// Others would change the node's.
func validateSysctls(sysctls map[string]string, hostIPC, hostNetwork bool) error {
	for _, name := range slices.Sorted(maps.Keys(sysctls)) {
		field := "config.linux.sysctls[" + name + "]"
		if !sysctlName.MatchString(name) {
			return unsupported(field, "not a sysctl name (want dotted, as kernel.shm_rmid_forced)")
		}
		if v := sysctls[name]; strings.ContainsAny(v, "\n\x00") || len(v) > 4096 {
			return unsupported(field, fmt.Sprintf("value %q is not one line", v))
		}
		switch {
		case name == "kernel.sem" || strings.HasPrefix(name, "kernel.shm") || strings.HasPrefix(name, "kernel.msg") || strings.HasPrefix(name, "fs.mqueue."):
			if hostIPC {
				return unsupported(field, "an IPC sysctl needs the pod's own IPC namespace, not the node's (namespace_options.ipc NODE)")
			}
		case strings.HasPrefix(name, "net."):
			if hostNetwork {
				return unsupported(field, "a network sysctl needs the pod's own network namespace, not the node's (namespace_options.network NODE)")
			}
		default:
			return unsupported(field, "not a namespaced sysctl (only kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* and net.*): it would change the node's")
		}
	}
	return nil
}

// securityProfiles are the labels and profiles of a sandbox's or a
// container's security context.
type securityProfiles interface {
	GetSelinuxOptions() *runtime.SELinuxOption
	GetSeccomp() *runtime.SecurityProfile
	GetApparmor() *runtime.SecurityProfile
	GetSeccompProfilePath() string
}

// validateProfiles refuses SELinux labels, AppArmor profiles other than
// the runtime's default or none, and, but for an OCI container (oci),
// Localhost seccomp profiles, under field.
func validateProfiles(field string, sc securityProfiles, oci bool) error {
	if err := validateSELinux(field+".selinux_options", sc.GetSelinuxOptions()); err != nil {
		return err
	}
	if err := validateSeccomp(field+".seccomp", sc.GetSeccomp(), oci); err != nil {
		return err
	}
	if p := sc.GetApparmor(); p.GetProfileType() == runtime.SecurityProfile_Localhost {
		return unsupported(field+".apparmor.profile_type", fmt.Sprintf("Localhost profile %q is not supported by skiff (no AppArmor; only RuntimeDefault and Unconfined)", p.GetLocalhostRef()))
	}
	return validateProfilePath(field+".seccomp_profile_path", sc.GetSeccompProfilePath(), oci)
}

func validateSELinux(field string, o *runtime.SELinuxOption) error {
	if o.GetUser() != "" || o.GetRole() != "" || o.GetType() != "" || o.GetLevel() != "" {
		return unsupported(field, "SELinux labels are not supported by skiff")
	}
	return nil
}

// validateSeccomp accepts the runtime's default profile and Unconfined (a
// Wasm module is confined by WASI either way) and, for an OCI container, a
// Localhost profile: an absolute path on the node (read at create).
func validateSeccomp(field string, p *runtime.SecurityProfile, oci bool) error {
	if p.GetProfileType() != runtime.SecurityProfile_Localhost {
		return nil
	}
	if !oci {
		return unsupported(field+".profile_type", fmt.Sprintf("Localhost profile %q is not supported by the Wasm runtime (only RuntimeDefault and Unconfined)", p.GetLocalhostRef()))
	}
	if ref := p.GetLocalhostRef(); !filepath.IsAbs(ref) {
		return unsupported(field+".localhost_ref", fmt.Sprintf("%q is not an absolute path of a profile on the node", ref))
	}
	return nil
}

// validateProfilePath checks the deprecated string form of a profile:
// runtime/default, docker/default, unconfined, or (OCI) localhost/<path>.
func validateProfilePath(field, p string, oci bool) error {
	switch p {
	case "", "runtime/default", "docker/default", "unconfined":
		return nil
	}
	if ref, ok := strings.CutPrefix(p, "localhost/"); ok && oci {
		if !filepath.IsAbs(ref) {
			return unsupported(field, fmt.Sprintf("%q: want localhost/ followed by an absolute path", p))
		}
		return nil
	}
	if oci {
		return unsupported(field, fmt.Sprintf("profile %q: want runtime/default, unconfined or localhost/<absolute path>", p))
	}
	return unsupported(field, fmt.Sprintf("profile %q is not supported by the Wasm runtime (only runtime/default and unconfined)", p))
}

// validateContainerConfig checks a CreateContainer config (but its mounts:
// see mountsOf) against the sandbox it goes into and the runtime handler
// that will run it. No container may have devices. An OCI container may
// be privileged in a privileged sandbox only (as containerd requires), and
// the pod's IPC sysctls need its own IPC namespace.
func validateContainerConfig(cfg *runtime.ContainerConfig, sb *sandboxRecord, handler string) error {
	if len(cfg.GetDevices()) > 0 {
		return unsupported("config.devices", "devices are not supported by skiff")
	}
	if len(cfg.GetCDIDevices()) > 0 {
		return unsupported("config.CDI_devices", "devices are not supported by skiff")
	}
	oci := handler == HandlerRunc
	sc := cfg.GetLinux().GetSecurityContext()
	switch {
	case sc.GetPrivileged() && !oci:
		return unsupported("config.linux.security_context.privileged", "privileged containers are not supported by the Wasm runtime")
	case sc.GetPrivileged() && !sb.Privileged:
		return unsupported("config.linux.security_context.privileged", fmt.Sprintf("sandbox %s is not privileged: a privileged container needs a privileged sandbox", sb.ID))
	case !oci && len(sb.Sysctls) > 0:
		name := slices.Sorted(maps.Keys(sb.Sysctls))[0]
		return unsupported("config.linux.sysctls["+name+"] of sandbox "+sb.ID, "sysctls are not supported by the Wasm runtime; run this image in a sandbox without them")
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return unsupported("config.linux.security_context.run_as_group", "a group is set without run_as_user or run_as_username")
	}
	ns := sc.GetNamespaceOptions()
	caps := sc.GetCapabilities()
	switch {
	case oci && len(caps.GetAddAmbientCapabilities()) > 0:
		return unsupported("config.linux.security_context.capabilities.add_ambient_capabilities", "ambient capabilities are not supported by skiff's runc runtime")
	case !oci && len(caps.GetAddCapabilities()) > 0:
		return unsupported("config.linux.security_context.capabilities.add_capabilities", fmt.Sprintf("adding capabilities (%v) is not supported by the Wasm runtime", caps.GetAddCapabilities()))
	case !oci && len(caps.GetAddAmbientCapabilities()) > 0:
		return unsupported("config.linux.security_context.capabilities.add_ambient_capabilities", fmt.Sprintf("adding capabilities (%v) is not supported by the Wasm runtime", caps.GetAddAmbientCapabilities()))
	case !oci && (len(sc.GetMaskedPaths()) > 0 || len(sc.GetReadonlyPaths()) > 0):
		return unsupported("config.linux.security_context.masked_paths", "masked and read-only paths are not supported by the Wasm runtime (a module sees only its mounts)")
	}
	if ns.GetNetwork() == runtime.NamespaceMode_NODE && !sb.HostNetwork {
		return unsupported("config.linux.security_context.namespace_options.network", "a container shares its pod's network namespace; the node's is only for a pod on the node's network")
	}
	if err := validateNamespaces("config.linux.security_context.namespace_options", ns, oci); err != nil {
		return err
	}
	if ns.GetIpc() == runtime.NamespaceMode_NODE {
		if err := validateSysctls(sb.Sysctls, true, sb.HostNetwork); err != nil {
			return unsupported("config.linux.security_context.namespace_options.ipc", fmt.Sprintf("the node's IPC namespace cannot have the sysctls of sandbox %s: %v", sb.ID, err))
		}
	}
	if err := validateProfiles("config.linux.security_context", sc, oci); err != nil {
		return err
	}
	if p := sc.GetApparmorProfile(); p != "" && p != "runtime/default" && p != "docker/default" && p != "unconfined" {
		return unsupported("config.linux.security_context.apparmor_profile", fmt.Sprintf("profile %q is not supported by skiff (no AppArmor; only runtime/default and unconfined)", p))
	}
	return nil
}

// validateNamespaces refuses another container's namespaces (TARGET), a
// user namespace and, but for an OCI container (oci), the node's PID and
// IPC namespaces. The node's network namespace is checked by the callers.
func validateNamespaces(field string, ns *runtime.NamespaceOption, oci bool) error {
	if ns.GetNetwork() == runtime.NamespaceMode_TARGET {
		return unsupported(field+".network", "sharing another container's namespace is not supported by skiff")
	}
	for _, m := range []struct {
		name string
		mode runtime.NamespaceMode
	}{{"pid", ns.GetPid()}, {"ipc", ns.GetIpc()}} {
		switch m.mode {
		case runtime.NamespaceMode_NODE:
			if !oci {
				return unsupported(field+"."+m.name, "the node's "+m.name+" namespace is not supported by the Wasm runtime")
			}
		case runtime.NamespaceMode_TARGET:
			return unsupported(field+"."+m.name, "sharing another container's namespace is not supported by skiff")
		}
	}
	if u := ns.GetUsernsOptions(); u != nil && u.GetMode() != runtime.NamespaceMode_NODE {
		return unsupported(field+".userns_options.mode", fmt.Sprintf("user namespaces (mode %v) are not supported by skiff", u.GetMode()))
	}
	return nil
}

func unsupported(field, why string) error {
	return fmt.Errorf("%w: %s: %s", errInvalidArgument, field, why)
}
