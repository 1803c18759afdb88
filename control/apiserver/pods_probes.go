package apiserver

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// portName is an IANA service name, as Kubernetes requires of port names:
// at most 15 lowercase letters, digits and '-', with a letter, not starting
// or ending with '-' and without "--".
var portName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

var portProtocols = map[string]bool{"": true, "TCP": true, "UDP": true, "SCTP": true}

// validatePortsAndProbes checks a container's ports and its liveness,
// readiness and startup probes. path is the container's, e.g.
// "spec.containers[0]".
func validatePortsAndProbes(fe *fieldErrors, path string, c *skiffv1.Container) {
	names := map[string]bool{}
	for i, p := range c.GetPorts() {
		pp := fmt.Sprintf("%s.ports[%d]", path, i)
		if n := p.GetContainerPort(); n < 1 || n > 65535 {
			fe.add(pp+".containerPort", "invalid value %d: must be between 1 and 65535, inclusive", n)
		}
		if !portProtocols[p.GetProtocol()] {
			fe.add(pp+".protocol", "unsupported value %q: supported values are \"TCP\", \"UDP\", \"SCTP\"", p.GetProtocol())
		}
		if name := p.GetName(); name != "" {
			if !validPortName(name) {
				fe.add(pp+".name", "invalid value %q: must be no more than 15 characters, contain only lowercase letters, digits and '-', contain at least one letter, and not start or end with '-' or contain \"--\"", name)
			} else if names[name] {
				fe.add(pp+".name", "duplicate value %q", name)
			}
			names[name] = true
		}
	}
	for _, pr := range []struct {
		name  string
		probe *skiffv1.Probe
	}{{"livenessProbe", c.GetLivenessProbe()}, {"readinessProbe", c.GetReadinessProbe()}, {"startupProbe", c.GetStartupProbe()}} {
		if pr.probe != nil {
			validateProbe(fe, path+"."+pr.name, pr.probe, pr.name != "readinessProbe", names)
		}
	}
}

func validPortName(name string) bool {
	return len(name) <= 15 && portName.MatchString(name) && !strings.Contains(name, "--") && strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyz")
}

// validateProbe checks one probe. A liveness or startup probe's success
// threshold must be 1, as in Kubernetes. ports are the container's port
// names.
func validateProbe(fe *fieldErrors, path string, p *skiffv1.Probe, mustSucceedOnce bool, ports map[string]bool) {
	actions := 0
	if h := p.GetHttpGet(); h != nil {
		actions++
		validateProbePort(fe, path+".httpGet.port", h.GetPort(), ports)
		if host := h.GetHost(); host != "" {
			if _, err := netip.ParseAddr(host); err != nil {
				fe.add(path+".httpGet.host", "invalid value %q: must be an IP address (the probe connects from inside the pod's network namespace; leave it empty for the pod itself)", host)
			}
		}
		if s := h.GetScheme(); s != "" && s != "HTTP" && s != "HTTPS" {
			fe.add(path+".httpGet.scheme", "unsupported value %q: supported values are \"HTTP\", \"HTTPS\"", s)
		}
		if pa := h.GetPath(); pa != "" && (!strings.HasPrefix(pa, "/") || strings.ContainsAny(pa, " \t\r\n")) {
			fe.add(path+".httpGet.path", "invalid value %q: must start with '/' and contain no whitespace", pa)
		}
	}
	if t := p.GetTcpSocket(); t != nil {
		actions++
		validateProbePort(fe, path+".tcpSocket.port", t.GetPort(), ports)
	}
	if p.GetExec() != nil {
		actions++
		fe.add(path+".exec", "not supported: a Wasm container cannot run a command; use httpGet or tcpSocket")
	}
	switch {
	case actions == 0:
		fe.add(path, "must have exactly one of httpGet, tcpSocket")
	case actions > 1:
		fe.add(path, "may not have more than one of httpGet, tcpSocket, exec")
	}
	for _, f := range []struct {
		name string
		v    int32
	}{
		{"initialDelaySeconds", p.GetInitialDelaySeconds()}, {"timeoutSeconds", p.GetTimeoutSeconds()}, {"periodSeconds", p.GetPeriodSeconds()},
		{"successThreshold", p.GetSuccessThreshold()}, {"failureThreshold", p.GetFailureThreshold()},
	} {
		if f.v < 0 {
			fe.add(path+"."+f.name, "invalid value %d: must not be negative", f.v)
		}
	}
	if s := p.GetSuccessThreshold(); mustSucceedOnce && s > 1 {
		fe.add(path+".successThreshold", "invalid value %d: must be 1", s)
	}
}

// validateProbePort checks a probe's port: a number between 1 and 65535, or
// the name of one of the container's ports.
func validateProbePort(fe *fieldErrors, path, port string, names map[string]bool) {
	if port == "" {
		fe.add(path, "required value")
		return
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 1 || n > 65535 {
			fe.add(path, "invalid value %d: must be between 1 and 65535, inclusive", n)
		}
		return
	}
	if !names[port] {
		fe.add(path, "invalid value %q: must be a port number or the name of one of the container's ports", port)
	}
}

// validateInitContainers checks spec.initContainers: names unique across
// init and regular containers (they share the node's log and CRI names),
// an image, valid environment names and ports, and no probes (an init
// container runs to completion; Kubernetes refuses them too).
func validateInitContainers(fe *fieldErrors, s *skiffv1.PodSpec) {
	names := map[string]bool{}
	for _, c := range s.GetContainers() {
		names[c.GetName()] = true
	}
	for i, c := range s.GetInitContainers() {
		path := fmt.Sprintf("spec.initContainers[%d]", i)
		if names[c.GetName()] {
			fe.add(path+".name", "duplicate value %q: init containers and containers must have distinct names", c.GetName())
		}
		names[c.GetName()] = true
		validateContainer(fe, path, c)
		for _, pr := range []struct {
			name string
			set  bool
		}{{"livenessProbe", c.GetLivenessProbe() != nil}, {"readinessProbe", c.GetReadinessProbe() != nil}, {"startupProbe", c.GetStartupProbe() != nil}} {
			if pr.set {
				fe.add(path+"."+pr.name, "must not be set for init containers")
			}
		}
		if c.GetResources() != nil {
			fe.add(path+".resources", "not supported yet by skiff's nodes")
		}
		if len(c.GetVolumeMounts()) > 0 {
			fe.add(path+".volumeMounts", "not supported yet by skiff's nodes")
		}
		validatePortsAndProbes(fe, path, &skiffv1.Container{Name: c.GetName(), Ports: c.GetPorts()})
	}
}
