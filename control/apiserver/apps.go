package apiserver

import (
	"context"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// Defaults of apps/v1 objects, as Kubernetes sets them.
const (
	DefaultRevisionHistoryLimit    = 10
	DefaultProgressDeadlineSeconds = 600
	DefaultMaxSurge                = "25%"
	DefaultMaxUnavailable          = "25%"
)

// Deployment strategy types.
const (
	StrategyRollingUpdate = "RollingUpdate"
	StrategyRecreate      = "Recreate"
)

// replicaSetStrategy validates and defaults ReplicaSets.
func replicaSetStrategy() *strategy {
	return &strategy{
		generation: true,
		defaults: func(o kinds.Object) {
			rs := o.(*skiffv1.ReplicaSet)
			if rs.Spec == nil {
				return
			}
			if rs.Spec.Replicas == nil {
				rs.Spec.Replicas = proto.Int32(1)
			}
			defaultTemplate(rs.Spec.Template)
		},
		validate: func(o kinds.Object) fieldErrors {
			rs := o.(*skiffv1.ReplicaSet)
			fe := fieldErrors{}
			s := rs.GetSpec()
			if s == nil {
				fe.add("spec", "required value")
				return fe
			}
			validateReplicas(&fe, s.Replicas, s.GetMinReadySeconds())
			validateSelectorAndTemplate(&fe, rs.GetMetadata().GetNamespace(), s.GetSelector(), s.GetTemplate())
			if st := rs.GetStatus(); st != nil {
				validateConditions(&fe, "status.conditions", st.GetConditions())
			}
			return fe
		},
		checkUpdate: func(old, o kinds.Object) fieldErrors {
			return checkSelectorUpdate(old.(*skiffv1.ReplicaSet).GetSpec().GetSelector(), o.(*skiffv1.ReplicaSet).GetSpec().GetSelector())
		},
	}
}

// deploymentStrategy validates and defaults Deployments.
func deploymentStrategy() *strategy {
	return &strategy{
		generation: true,
		defaults:   func(o kinds.Object) { defaultDeployment(o.(*skiffv1.Deployment)) },
		validate:   func(o kinds.Object) fieldErrors { return validateDeployment(o.(*skiffv1.Deployment)) },
		checkUpdate: func(old, o kinds.Object) fieldErrors {
			return checkSelectorUpdate(old.(*skiffv1.Deployment).GetSpec().GetSelector(), o.(*skiffv1.Deployment).GetSpec().GetSelector())
		},
	}
}

func defaultDeployment(d *skiffv1.Deployment) {
	s := d.Spec
	if s == nil {
		return
	}
	if s.Replicas == nil {
		s.Replicas = proto.Int32(1)
	}
	if s.Strategy == nil {
		s.Strategy = &skiffv1.DeploymentStrategy{}
	}
	if s.Strategy.Type == "" {
		s.Strategy.Type = StrategyRollingUpdate
	}
	if s.Strategy.Type == StrategyRollingUpdate {
		if s.Strategy.RollingUpdate == nil {
			s.Strategy.RollingUpdate = &skiffv1.RollingUpdateDeployment{}
		}
		ru := s.Strategy.RollingUpdate
		if ru.MaxSurge == "" {
			ru.MaxSurge = DefaultMaxSurge
		}
		if ru.MaxUnavailable == "" {
			ru.MaxUnavailable = DefaultMaxUnavailable
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = proto.Int32(DefaultRevisionHistoryLimit)
	}
	if s.ProgressDeadlineSeconds == nil {
		s.ProgressDeadlineSeconds = proto.Int32(DefaultProgressDeadlineSeconds)
	}
	defaultTemplate(s.Template)
}

// defaultTemplate gives a pod template's spec a pod's defaults, so that
// what is stored is what the pods get.
func defaultTemplate(t *skiffv1.PodTemplateSpec) {
	if t == nil || t.Spec == nil {
		return
	}
	defaultPod(&skiffv1.Pod{Spec: t.Spec})
}

func validateDeployment(d *skiffv1.Deployment) fieldErrors {
	fe := fieldErrors{}
	s := d.GetSpec()
	if s == nil {
		fe.add("spec", "required value")
		return fe
	}
	validateReplicas(&fe, s.Replicas, s.GetMinReadySeconds())
	validateSelectorAndTemplate(&fe, d.GetMetadata().GetNamespace(), s.GetSelector(), s.GetTemplate())
	st := s.GetStrategy()
	switch st.GetType() {
	case StrategyRollingUpdate:
		ru := st.GetRollingUpdate()
		surge, serr := kinds.IntOrPercent(ru.GetMaxSurge(), 100, true)
		if serr != nil {
			fe.add("spec.strategy.rollingUpdate.maxSurge", "%s", serr.Error())
		}
		unavail, uerr := kinds.IntOrPercent(ru.GetMaxUnavailable(), 100, false)
		switch {
		case uerr != nil:
			fe.add("spec.strategy.rollingUpdate.maxUnavailable", "%s", uerr.Error())
		case strings.HasSuffix(ru.GetMaxUnavailable(), "%") && unavail > 100:
			fe.add("spec.strategy.rollingUpdate.maxUnavailable", "invalid value %q: must not be greater than 100%%", ru.GetMaxUnavailable())
		}
		if serr == nil && uerr == nil && surge == 0 && unavail == 0 {
			fe.add("spec.strategy.rollingUpdate.maxUnavailable", "invalid value %q: may not be 0 when maxSurge is 0", ru.GetMaxUnavailable())
		}
	case StrategyRecreate:
		if st.GetRollingUpdate() != nil {
			fe.add("spec.strategy.rollingUpdate", "forbidden: may not be specified when strategy type is \"Recreate\"")
		}
	default:
		fe.add("spec.strategy.type", "unsupported value %q: supported values are \"RollingUpdate\", \"Recreate\"", st.GetType())
	}
	if l := s.RevisionHistoryLimit; l != nil && *l < 0 {
		fe.add("spec.revisionHistoryLimit", "invalid value %d: must be greater than or equal to 0", *l)
	}
	if p := s.ProgressDeadlineSeconds; p != nil {
		switch {
		case *p <= 0:
			fe.add("spec.progressDeadlineSeconds", "invalid value %d: must be greater than 0", *p)
		case *p <= s.GetMinReadySeconds():
			fe.add("spec.progressDeadlineSeconds", "invalid value %d: must be greater than minReadySeconds (%d)", *p, s.GetMinReadySeconds())
		}
	}
	if st := d.GetStatus(); st != nil {
		validateConditions(&fe, "status.conditions", st.GetConditions())
	}
	return fe
}

func validateReplicas(fe *fieldErrors, replicas *int32, minReady int32) {
	if replicas != nil && *replicas < 0 {
		fe.add("spec.replicas", "invalid value %d: must be greater than or equal to 0", *replicas)
	}
	if minReady < 0 {
		fe.add("spec.minReadySeconds", "invalid value %d: must be greater than or equal to 0", minReady)
	}
}

// validateSelectorAndTemplate checks a workload's selector (required, not
// empty, well formed, and matching the template's labels) and its pod
// template, whose spec is checked as a pod's is, with paths under
// spec.template. Its pods are kept running: restartPolicy Always only.
func validateSelectorAndTemplate(fe *fieldErrors, ns string, sel *skiffv1.LabelSelector, t *skiffv1.PodTemplateSpec) {
	switch {
	case sel == nil:
		fe.add("spec.selector", "required value")
	case len(sel.GetMatchLabels()) == 0 && len(sel.GetMatchExpressions()) == 0:
		fe.add("spec.selector", "invalid value: empty selector is invalid for a workload: it would select every pod")
	}
	validateLabelSelectorField(fe, "spec.selector", sel)
	if t == nil {
		fe.add("spec.template", "required value")
		return
	}
	if sel != nil && !kinds.SelectorMatches(sel, t.GetMetadata().GetLabels()) {
		fe.add("spec.template.metadata.labels", "invalid value %q: `selector` does not match template `labels`", pairsString(t.GetMetadata().GetLabels()))
	}
	// The template is checked as the pod it makes would be.
	m := proto.Clone(t.GetMetadata()).(*skiffv1.ObjectMeta)
	if m == nil {
		m = &skiffv1.ObjectMeta{}
	}
	m.Name, m.Namespace = "template", ns
	p := &skiffv1.Pod{Metadata: m, Spec: t.GetSpec()}
	pfe := fieldErrors{}
	validateMeta(&pfe, m, true, validateSubdomain)
	pfe = append(pfe, validatePod(p)...)
	if t.GetSpec() != nil && t.GetSpec().GetRestartPolicy() != "Always" {
		pfe.add("spec.restartPolicy", "unsupported value %q: only \"Always\" is supported for a workload's pods", t.GetSpec().GetRestartPolicy())
	}
	for _, e := range pfe {
		if strings.HasPrefix(e, "metadata.name:") || strings.HasPrefix(e, "metadata.namespace:") {
			continue // the pods' names are the controller's
		}
		*fe = append(*fe, "spec.template."+e)
	}
}

func pairsString(m map[string]string) string {
	keys := sortedKeys(m)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// checkSelectorUpdate keeps a workload's selector: apps/v1 makes it
// immutable, since pods it picked would be orphaned by a change.
func checkSelectorUpdate(old, sel *skiffv1.LabelSelector) fieldErrors {
	fe := fieldErrors{}
	if !proto.Equal(old, sel) {
		fe.add("spec.selector", "invalid value %q: field is immutable", kinds.LabelSelectorString(sel))
	}
	return fe
}

// deploymentService is the DeploymentService: the six shared verbs and
// the status subresource.
type deploymentService struct {
	*kinds.GenericService[skiffv1.Deployment, skiffv1.DeploymentList, skiffv1.DeploymentWatchEvent, *skiffv1.Deployment, *skiffv1.DeploymentList, *skiffv1.DeploymentWatchEvent]
	b *backend
}

var _ skiffv1connect.DeploymentServiceHandler = (*deploymentService)(nil)

// UpdateStatus replaces the deployment's status alone.
func (s *deploymentService) UpdateStatus(ctx context.Context, req *connect.Request[skiffv1.Deployment]) (*connect.Response[skiffv1.Deployment], error) {
	o, err := s.b.updateStatus(ctx, kinds.Deployment, req.Msg, kinds.DryRun(req.Header()))
	return respondObj[skiffv1.Deployment](o, err)
}

// replicaSetService is the ReplicaSetService: the six shared verbs and
// the status subresource.
type replicaSetService struct {
	*kinds.GenericService[skiffv1.ReplicaSet, skiffv1.ReplicaSetList, skiffv1.ReplicaSetWatchEvent, *skiffv1.ReplicaSet, *skiffv1.ReplicaSetList, *skiffv1.ReplicaSetWatchEvent]
	b *backend
}

var _ skiffv1connect.ReplicaSetServiceHandler = (*replicaSetService)(nil)

// UpdateStatus replaces the ReplicaSet's status alone.
func (s *replicaSetService) UpdateStatus(ctx context.Context, req *connect.Request[skiffv1.ReplicaSet]) (*connect.Response[skiffv1.ReplicaSet], error) {
	o, err := s.b.updateStatus(ctx, kinds.ReplicaSet, req.Msg, kinds.DryRun(req.Header()))
	return respondObj[skiffv1.ReplicaSet](o, err)
}
