package apiserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

func podStrategy(b *backend) *strategy {
	return &strategy{
		validate:    func(o kinds.Object) fieldErrors { return validatePod(o.(*skiffv1.Pod)) },
		defaults:    func(o kinds.Object) { defaultPod(o.(*skiffv1.Pod)) },
		onCreate:    func(o kinds.Object) { addDefaultTolerations(o.(*skiffv1.Pod), b.tolerations) },
		onUpdate:    func(old, o kinds.Object) { keepDefaultTolerations(old.(*skiffv1.Pod), o.(*skiffv1.Pod)) },
		initial:     func(o kinds.Object) { o.(*skiffv1.Pod).Status = &skiffv1.PodStatus{Phase: "Pending"} },
		checkUpdate: func(old, o kinds.Object) fieldErrors { return checkPodUpdate(old.(*skiffv1.Pod), o.(*skiffv1.Pod)) },
		gracePeriod: func(o kinds.Object) int64 { return o.(*skiffv1.Pod).GetSpec().GetTerminationGracePeriodSeconds() },
		awaitsNode: func(ctx context.Context, o kinds.Object) (bool, error) {
			node := o.(*skiffv1.Pod).GetSpec().GetNodeName()
			if node == "" {
				return false, nil // never bound: nothing runs it
			}
			_, err := b.get(ctx, kinds.Node, "", node)
			if connect.CodeOf(err) == connect.CodeNotFound {
				return false, nil // its node is gone: nothing will confirm
			}
			return err == nil, err
		},
	}
}

// DefaultTerminationGracePeriodSeconds is a pod's grace period when its
// spec names none, as in Kubernetes.
const DefaultTerminationGracePeriodSeconds = 30

var restartPolicies = map[string]bool{"Always": true, "OnFailure": true, "Never": true}

// runtimeClasses are the runtime class names a pod may ask for.
var runtimeClasses = map[string]bool{"": true, "wasm": true, "runc": true}

func defaultPod(p *skiffv1.Pod) {
	if p.Spec == nil {
		return
	}
	if p.Spec.RestartPolicy == "" {
		p.Spec.RestartPolicy = "Always"
	}
	if p.Spec.TerminationGracePeriodSeconds == nil {
		p.Spec.TerminationGracePeriodSeconds = proto.Int64(DefaultTerminationGracePeriodSeconds)
	}
}

// validateContainer checks what every container, init or not, needs: a
// name that is a DNS label, an image, and valid environment names.
func validateContainer(fe *fieldErrors, path string, c *skiffv1.Container) {
	validateLabel(fe, path+".name", c.GetName())
	if c.GetImage() == "" {
		fe.add(path+".image", "required value")
	}
	for j, e := range c.GetEnv() {
		if !envVarName.MatchString(e.GetName()) {
			fe.add(fmt.Sprintf("%s.env[%d].name", path, j), "invalid value %q: must consist of alphabetic characters, digits, '_', '-' or '.', and must not start with a digit", e.GetName())
		}
	}
}

func validatePod(p *skiffv1.Pod) fieldErrors {
	fe := fieldErrors{}
	s := p.GetSpec()
	if s == nil {
		fe.add("spec", "required value")
		return fe
	}
	if len(s.Containers) == 0 {
		fe.add("spec.containers", "required value: a pod needs at least one container")
	}
	names := map[string]bool{}
	for i, c := range s.Containers {
		path := fmt.Sprintf("spec.containers[%d]", i)
		if names[c.GetName()] {
			fe.add(path+".name", "duplicate value %q", c.GetName())
		}
		names[c.GetName()] = true
		validateContainer(&fe, path, c)
	}
	refuseUnsupported(&fe, s)
	validatePlacement(&fe, s)
	validateResources(&fe, p)
	if !restartPolicies[s.RestartPolicy] {
		fe.add("spec.restartPolicy", "unsupported value %q: supported values are \"Always\", \"OnFailure\", \"Never\"", s.RestartPolicy)
	}
	if !runtimeClasses[s.RuntimeClassName] {
		fe.add("spec.runtimeClassName", "unsupported value %q: supported values are \"wasm\", \"runc\"", s.RuntimeClassName)
	}
	if s.NodeName != "" {
		validateSubdomain(&fe, "spec.nodeName", s.NodeName)
	}
	if g := s.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		fe.add("spec.terminationGracePeriodSeconds", "invalid value %d: must not be negative", *g)
	}
	// The node keeps a pod's logs in a directory named
	// <namespace>_<name>_<uid>, which must fit a file name.
	m := p.GetMetadata()
	if n := len(m.GetNamespace()) + len(m.GetName()) + 2 + uidLength; len(m.GetName()) <= 253 && n > maxFileName {
		fe.add("metadata.name", "must be no more than %d characters in namespace %q: the node names the pod's log directory <namespace>_<name>_<uid>, which may be at most %d bytes",
			maxFileName-uidLength-2-len(m.GetNamespace()), m.GetNamespace(), maxFileName)
	}
	validatePodStatus(&fe, p.GetStatus())
	return fe
}

const (
	uidLength   = 36  // a UUID's text form
	maxFileName = 255 // NAME_MAX on Linux
)

var podPhases = map[string]bool{"Pending": true, "Running": true, "Succeeded": true, "Failed": true, "Unknown": true}

func validatePodStatus(fe *fieldErrors, st *skiffv1.PodStatus) {
	if st == nil {
		return
	}
	if st.Phase != "" && !podPhases[st.Phase] {
		fe.add("status.phase", "unsupported value %q: supported values are \"Pending\", \"Running\", \"Succeeded\", \"Failed\", \"Unknown\"", st.Phase)
	}
	validateConditions(fe, "status.conditions", st.Conditions)
	validateIP(fe, "status.podIP", st.PodIp)
	validateIP(fe, "status.hostIP", st.HostIp)
	for i, ip := range st.PodIps {
		path := fmt.Sprintf("status.podIPs[%d].ip", i)
		if ip.GetIp() == "" {
			fe.add(path, "required value")
		}
		validateIP(fe, path, ip.GetIp())
	}
	if len(st.PodIps) > 0 && st.PodIps[0].GetIp() != st.PodIp {
		fe.add("status.podIPs[0].ip", "invalid value %q: must be status.podIP (%q)", st.PodIps[0].GetIp(), st.PodIp)
	}
	for i, cs := range st.ContainerStatuses {
		path := fmt.Sprintf("status.containerStatuses[%d]", i)
		validateLabel(fe, path+".name", cs.GetName())
		for _, s := range []struct {
			path  string
			state *skiffv1.ContainerState
		}{{path + ".state", cs.GetState()}, {path + ".lastState", cs.GetLastState()}} {
			n := 0
			if s.state.GetWaiting() != nil {
				n++
			}
			if s.state.GetRunning() != nil {
				n++
			}
			if s.state.GetTerminated() != nil {
				n++
			}
			if n > 1 {
				fe.add(s.path, "may have only one of waiting, running and terminated")
			}
		}
	}
}

// checkPodUpdate keeps a pod's spec fixed once created, as Kubernetes does;
// the binding (spec.nodeName) is set through Bind alone.
func checkPodUpdate(old, p *skiffv1.Pod) fieldErrors {
	fe := fieldErrors{}
	was, is := old.GetSpec().GetNodeName(), p.GetSpec().GetNodeName()
	if is != was {
		if was == "" {
			fe.add("spec.nodeName", "may not be set by an update: bind the pod through PodService.Bind")
		} else {
			fe.add("spec.nodeName", "field is immutable once set (is %q)", was)
		}
	}
	if !proto.Equal(withoutNode(old.GetSpec()), withoutNode(p.GetSpec())) {
		fe.add("spec", "pod updates may not change the spec (delete the pod and create it again)")
	}
	return fe
}

func withoutNode(s *skiffv1.PodSpec) *skiffv1.PodSpec {
	c := proto.Clone(s).(*skiffv1.PodSpec)
	c.NodeName = ""
	return c
}

// podService is the PodService: the six shared verbs, plus the status and
// binding subresources and logs.
type podService struct {
	generic
	b      *backend
	agents agentDialer
}

// generic is the shared verbs of one kind, embedded by services with more.
type generic = *kinds.GenericService[skiffv1.Pod, skiffv1.PodList, skiffv1.PodWatchEvent, *skiffv1.Pod, *skiffv1.PodList, *skiffv1.PodWatchEvent]

var _ skiffv1connect.PodServiceHandler = (*podService)(nil)

// UpdateStatus replaces the pod's status alone.
func (s *podService) UpdateStatus(ctx context.Context, req *connect.Request[skiffv1.Pod]) (*connect.Response[skiffv1.Pod], error) {
	o, err := s.b.updateStatus(ctx, kinds.Pod, req.Msg, kinds.DryRun(req.Header()))
	return respondObj[skiffv1.Pod](o, err)
}

// setPodCondition puts c on the pod's status, keeping the transition time
// when its status did not change.
func setPodCondition(p *skiffv1.Pod, c *skiffv1.Condition, now time.Time) {
	if p.Status == nil {
		p.Status = &skiffv1.PodStatus{Phase: "Pending"}
	}
	c.LastTransitionTime = timestamppb.New(now)
	for i, old := range p.Status.Conditions {
		if old.GetType() == c.Type {
			if old.GetStatus() == c.Status {
				c.LastTransitionTime = old.GetLastTransitionTime()
			}
			p.Status.Conditions[i] = c
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, c)
}

func respondObj[T any](o kinds.Object, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(any(o).(*T)), nil
}

func hasContainer(p *skiffv1.Pod, name string) bool {
	for _, c := range p.GetSpec().GetContainers() {
		if c.GetName() == name {
			return true
		}
	}
	return false
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
