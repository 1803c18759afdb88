package cri

import (
	"fmt"
	"maps"
	"slices"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The settings a Wasm sandbox cannot honour are refused, never ignored: a
// client that asks for a privileged container, a host namespace or a
// security profile must learn that it did not get it. A Wasm module has no
// system calls, devices, capabilities, users or processes of its own: it
// reaches only what WASI hands it. So the defaults (no privileges, no
// capabilities added, the runtime's default or an unconfined profile,
// which a Wasm module cannot escape anyway) are honoured; anything that
// asks for more, or for a profile the runtime would have to load, is
// InvalidArgument naming the field.

// validateSandboxConfig checks a RunPodSandbox config.
func validateSandboxConfig(cfg *runtime.PodSandboxConfig) error {
	linux := cfg.GetLinux()
	if keys := slices.Sorted(maps.Keys(linux.GetSysctls())); len(keys) > 0 {
		return unsupported("config.linux.sysctls["+keys[0]+"]", "sysctls are not supported by skiff")
	}
	sc := linux.GetSecurityContext()
	if sc.GetPrivileged() {
		return unsupported("config.linux.security_context.privileged", "privileged pods are not supported by skiff")
	}
	if err := validateNamespaces("config.linux.security_context.namespace_options", sc.GetNamespaceOptions()); err != nil {
		return err
	}
	return validateProfiles("config.linux.security_context", sc)
}

// securityProfiles are the labels and profiles of a sandbox's or a
// container's security context.
type securityProfiles interface {
	GetSelinuxOptions() *runtime.SELinuxOption
	GetSeccomp() *runtime.SecurityProfile
	GetApparmor() *runtime.SecurityProfile
	GetSeccompProfilePath() string
}

// validateProfiles refuses SELinux labels and profiles other than the
// runtime's default or none, under field.
func validateProfiles(field string, sc securityProfiles) error {
	if err := validateSELinux(field+".selinux_options", sc.GetSelinuxOptions()); err != nil {
		return err
	}
	if err := validateProfile(field+".seccomp", sc.GetSeccomp()); err != nil {
		return err
	}
	if err := validateProfile(field+".apparmor", sc.GetApparmor()); err != nil {
		return err
	}
	return validateProfilePath(field+".seccomp_profile_path", sc.GetSeccompProfilePath())
}

// validateContainerConfig checks a CreateContainer config (but its mounts:
// see mountsOf) against the sandbox it goes into and the runtime handler
// that will run it. An OCI container (runc) may have capabilities added
// and a user of its own; no container may be privileged or have devices:
// on a node shared by tenants, either would hand over the node.
func validateContainerConfig(cfg *runtime.ContainerConfig, sb *sandboxRecord, handler string) error {
	if len(cfg.GetDevices()) > 0 {
		return unsupported("config.devices", "devices are not supported by skiff")
	}
	if len(cfg.GetCDIDevices()) > 0 {
		return unsupported("config.CDI_devices", "devices are not supported by skiff")
	}
	sc := cfg.GetLinux().GetSecurityContext()
	if sc.GetPrivileged() {
		return unsupported("config.linux.security_context.privileged", "privileged containers are not supported by skiff")
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return unsupported("config.linux.security_context.run_as_group", "a group is set without run_as_user or run_as_username")
	}
	ns := sc.GetNamespaceOptions()
	caps := sc.GetCapabilities()
	switch {
	case handler == HandlerRunc && ns.GetPid() == runtime.NamespaceMode_POD:
		return unsupported("config.linux.security_context.namespace_options.pid", "sharing the pod's process namespace (shareProcessNamespace) is not supported by skiff's runc runtime")
	case handler == HandlerRunc && len(caps.GetAddAmbientCapabilities()) > 0:
		return unsupported("config.linux.security_context.capabilities.add_ambient_capabilities", "ambient capabilities are not supported by skiff's runc runtime")
	case handler != HandlerRunc && len(caps.GetAddCapabilities()) > 0:
		return unsupported("config.linux.security_context.capabilities.add_capabilities", fmt.Sprintf("adding capabilities (%v) is not supported by the Wasm runtime", caps.GetAddCapabilities()))
	case handler != HandlerRunc && len(caps.GetAddAmbientCapabilities()) > 0:
		return unsupported("config.linux.security_context.capabilities.add_ambient_capabilities", fmt.Sprintf("adding capabilities (%v) is not supported by the Wasm runtime", caps.GetAddAmbientCapabilities()))
	}
	if ns.GetNetwork() == runtime.NamespaceMode_NODE && !sb.HostNetwork {
		return unsupported("config.linux.security_context.namespace_options.network", "a container shares its pod's network namespace; the node's is only for a pod on the node's network")
	}
	if err := validateNamespaces("config.linux.security_context.namespace_options", ns); err != nil {
		return err
	}
	if err := validateProfiles("config.linux.security_context", sc); err != nil {
		return err
	}
	return validateProfilePath("config.linux.security_context.apparmor_profile", sc.GetApparmorProfile())
}

// validateNamespaces refuses the node's PID and IPC namespaces, another
// container's (TARGET) and a user namespace. The node's network namespace
// is the one host namespace a pod may have (checked by the callers).
func validateNamespaces(field string, ns *runtime.NamespaceOption) error {
	if ns.GetNetwork() == runtime.NamespaceMode_TARGET {
		return unsupported(field+".network", "sharing another container's namespace is not supported by skiff")
	}
	for _, m := range []struct {
		name string
		mode runtime.NamespaceMode
	}{{"pid", ns.GetPid()}, {"ipc", ns.GetIpc()}} {
		switch m.mode {
		case runtime.NamespaceMode_NODE:
			return unsupported(field+"."+m.name, "the node's "+m.name+" namespace is not supported by skiff")
		case runtime.NamespaceMode_TARGET:
			return unsupported(field+"."+m.name, "sharing another container's namespace is not supported by skiff")
		}
	}
	if u := ns.GetUsernsOptions(); u != nil && u.GetMode() != runtime.NamespaceMode_NODE {
		return unsupported(field+".userns_options.mode", fmt.Sprintf("user namespaces (mode %v) are not supported by skiff", u.GetMode()))
	}
	return nil
}

func validateSELinux(field string, o *runtime.SELinuxOption) error {
	if o.GetUser() != "" || o.GetRole() != "" || o.GetType() != "" || o.GetLevel() != "" {
		return unsupported(field, "SELinux labels are not supported by skiff")
	}
	return nil
}

// validateProfile accepts the runtime's default profile and Unconfined (a
// Wasm module is confined by WASI either way); a Localhost profile is one
// the runtime would have to load, and it cannot.
func validateProfile(field string, p *runtime.SecurityProfile) error {
	if p.GetProfileType() == runtime.SecurityProfile_Localhost {
		return unsupported(field+".profile_type", fmt.Sprintf("Localhost profile %q is not supported by skiff (only RuntimeDefault and Unconfined)", p.GetLocalhostRef()))
	}
	return nil
}

// validateProfilePath checks the deprecated string form of a profile.
func validateProfilePath(field, p string) error {
	switch p {
	case "", "runtime/default", "docker/default", "unconfined":
		return nil
	}
	return unsupported(field, fmt.Sprintf("profile %q is not supported by skiff (only runtime/default and unconfined)", p))
}

func unsupported(field, why string) error {
	return fmt.Errorf("%w: %s: %s", errInvalidArgument, field, why)
}
