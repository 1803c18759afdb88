package cri

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// ociSettings reads the settings of a CreateContainer config that only an
// OCI container has (validateContainerConfig has refused what no runtime
// here honours). The image's own user and working directory are filled in
// later, when the config names none (ociImageDefaults).
func ociSettings(cfg *runtime.ContainerConfig) (*ociRecord, error) {
	sc := cfg.GetLinux().GetSecurityContext()
	res := cfg.GetLinux().GetResources()
	o := &ociRecord{
		WorkingDir:      cfg.GetWorkingDir(),
		ReadOnlyRootfs:  sc.GetReadonlyRootfs(),
		CapAdd:          sc.GetCapabilities().GetAddCapabilities(),
		CapDrop:         sc.GetCapabilities().GetDropCapabilities(),
		NoNewPrivileges: sc.GetNoNewPrivs(),
	}
	if o.WorkingDir != "" && !path.IsAbs(o.WorkingDir) {
		return nil, fmt.Errorf("%w: config.working_dir %q is not an absolute path", errInvalidArgument, o.WorkingDir)
	}
	for _, c := range append(append([]string{}, o.CapAdd...), o.CapDrop...) {
		if !validCapability(c) {
			return nil, fmt.Errorf("%w: config.linux.security_context.capabilities: %q is not a capability name (e.g. NET_ADMIN, CAP_NET_ADMIN or ALL)", errInvalidArgument, c)
		}
	}
	switch {
	case sc.GetRunAsUser() != nil:
		uid := sc.GetRunAsUser().GetValue()
		if uid < 0 || uid > 1<<32-2 {
			return nil, fmt.Errorf("%w: config.linux.security_context.run_as_user %d is not a user ID", errInvalidArgument, uid)
		}
		o.User = strconv.FormatInt(uid, 10)
	case sc.GetRunAsUsername() != "":
		name := sc.GetRunAsUsername()
		if strings.ContainsAny(name, ":/\n") {
			return nil, fmt.Errorf("%w: config.linux.security_context.run_as_username %q is not a user name", errInvalidArgument, name)
		}
		o.User = name
	}
	if g := sc.GetRunAsGroup(); g != nil {
		if g.GetValue() < 0 || g.GetValue() > 1<<32-2 {
			return nil, fmt.Errorf("%w: config.linux.security_context.run_as_group %d is not a group ID", errInvalidArgument, g.GetValue())
		}
		o.User += ":" + strconv.FormatInt(g.GetValue(), 10)
	}
	for _, g := range sc.GetSupplementalGroups() {
		if g < 0 || g > 1<<32-2 {
			return nil, fmt.Errorf("%w: config.linux.security_context.supplemental_groups: %d is not a group ID", errInvalidArgument, g)
		}
		o.AdditionalGIDs = append(o.AdditionalGIDs, uint32(g))
	}
	o.Privileged = sc.GetPrivileged()
	o.HostPID = sc.GetNamespaceOptions().GetPid() == runtime.NamespaceMode_NODE
	o.HostIPC = sc.GetNamespaceOptions().GetIpc() == runtime.NamespaceMode_NODE
	o.PodPID = sc.GetNamespaceOptions().GetPid() == runtime.NamespaceMode_POD
	for _, f := range []struct {
		name  string
		paths []string
		to    *[]string
	}{{"masked_paths", sc.GetMaskedPaths(), &o.MaskedPaths}, {"readonly_paths", sc.GetReadonlyPaths(), &o.ReadonlyPaths}} {
		for i, p := range f.paths {
			if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
				return nil, fmt.Errorf("%w: config.linux.security_context.%s[%d]: %q is not an absolute, clean path other than /", errInvalidArgument, f.name, i, p)
			}
		}
		*f.to = f.paths
	}
	if o.Privileged {
		// Nothing filtered: the profile is ignored (not even read), as
		// containerd ignores it.
		o.Seccomp = skiffrt.SeccompUnconfined
	} else if err := seccompSettings(o, sc); err != nil {
		return nil, err
	}
	if adj := res.GetOomScoreAdj(); adj < -1000 || adj > 1000 {
		return nil, fmt.Errorf("%w: linux.resources.oom_score_adj %d is not between -1000 and 1000", errInvalidArgument, adj)
	} else {
		o.OOMScoreAdj = int(adj)
	}
	if sh := res.GetCpuShares(); sh < 0 || sh > 262144 {
		return nil, fmt.Errorf("%w: linux.resources.cpu_shares %d is not between 0 and 262144", errInvalidArgument, sh)
	} else {
		o.CPUShares = uint64(sh)
	}
	return o, nil
}

// maxSeccompProfile bounds a Localhost profile's file (Docker's default
// profile is 20 KB).
const maxSeccompProfile = 1 << 20

// seccompSettings reads the seccomp profile of a security context: the
// profile when set, else the deprecated seccomp_profile_path; neither is
// unconfined, as with containerd (skiff's node agent asks for
// RuntimeDefault, as the kubelet's SeccompDefault does). A Localhost
// profile is read now, so the container keeps it if the file changes.
func seccompSettings(o *ociRecord, sc *runtime.LinuxContainerSecurityContext) error {
	field, ref := "config.linux.security_context.seccomp.localhost_ref", ""
	switch p := sc.GetSeccomp(); {
	case p != nil && p.GetProfileType() == runtime.SecurityProfile_RuntimeDefault:
		o.Seccomp = skiffrt.SeccompRuntimeDefault
	case p != nil && p.GetProfileType() == runtime.SecurityProfile_Unconfined:
		o.Seccomp = skiffrt.SeccompUnconfined
	case p != nil && p.GetProfileType() == runtime.SecurityProfile_Localhost:
		ref = p.GetLocalhostRef()
	case p != nil:
		return fmt.Errorf("%w: config.linux.security_context.seccomp.profile_type %v is not a profile type", errInvalidArgument, p.GetProfileType())
	case sc.GetSeccompProfilePath() == "", sc.GetSeccompProfilePath() == "unconfined":
		o.Seccomp = skiffrt.SeccompUnconfined
	case strings.HasPrefix(sc.GetSeccompProfilePath(), "localhost/"):
		field, ref = "config.linux.security_context.seccomp_profile_path", strings.TrimPrefix(sc.GetSeccompProfilePath(), "localhost/")
	default: // runtime/default, docker/default (validated)
		o.Seccomp = skiffrt.SeccompRuntimeDefault
	}
	if ref == "" && o.Seccomp != "" {
		return nil
	}
	if !path.IsAbs(ref) {
		return fmt.Errorf("%w: %s: %q is not an absolute path of a profile on the node", errInvalidArgument, field, ref)
	}
	f, err := os.Open(ref)
	if err != nil {
		return fmt.Errorf("%w: %s: read the seccomp profile: %w", errInvalidArgument, field, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSeccompProfile+1))
	if err != nil {
		return fmt.Errorf("%w: %s: read the seccomp profile: %w", errInvalidArgument, field, err)
	}
	if len(b) > maxSeccompProfile {
		return fmt.Errorf("%w: %s: the seccomp profile %s is larger than %d bytes", errInvalidArgument, field, ref, maxSeccompProfile)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil || !bytes.HasPrefix(compact.Bytes(), []byte("{")) {
		return fmt.Errorf("%w: %s: the seccomp profile %s is not a JSON object (want Docker's or the OCI runtime spec's format)", errInvalidArgument, field, ref)
	}
	o.Seccomp, o.SeccompProfile = skiffrt.SeccompLocalhost, compact.Bytes()
	return nil
}

// ociImageDefaults fills in what an OCI image's config gives a container
// that its CRI config leaves out, as the kubelet and containerd do: argv
// is the config's command and args when it has a command, else the
// image's entrypoint followed by the config's args or, when it has none,
// the image's cmd; the image's environment comes first (the config's
// entries override it, see setEnv); the image's working directory and
// user apply unless the config names its own.
func ociImageDefaults(rec *containerRecord, cfg *runtime.ContainerConfig, img image.Image) ([]string, error) {
	ic := img.Config
	if ic == nil {
		ic = &image.RunConfig{}
	}
	args := cfg.GetArgs()
	if len(args) == 0 && len(cfg.GetCommand()) == 0 {
		args = ic.Cmd
	}
	argv := append(append([]string{}, ic.Entrypoint...), args...)
	if len(cfg.GetCommand()) > 0 {
		argv = append(append([]string{}, cfg.GetCommand()...), cfg.GetArgs()...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: config.command is empty and image %q has no entrypoint or cmd", errInvalidArgument, rec.Image)
	}
	for i, a := range argv {
		if i == 0 && a == "" {
			return nil, fmt.Errorf("%w: the command's first word is empty", errInvalidArgument)
		}
	}
	rec.Env = append(rec.Env, ic.Env...)
	if rec.OCI.WorkingDir == "" {
		rec.OCI.WorkingDir = ic.WorkingDir
	}
	if rec.OCI.User == "" {
		rec.OCI.User = ic.User
	}
	return argv, nil
}

// setEnv sets the variable of kv ("K=V") in env: it replaces an entry of
// the same name, or is appended.
func setEnv(env []string, kv string) []string {
	k, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if ek, _, _ := strings.Cut(e, "="); ek == k {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

// validCapability reports whether c reads as a capability name: "ALL", or
// upper-case letters and underscores, with or without "CAP_" (the runtime
// checks that the kernel knows it).
func validCapability(c string) bool {
	if c == "" {
		return false
	}
	for _, r := range c {
		if (r < 'A' || r > 'Z') && r != '_' && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}
