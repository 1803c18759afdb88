package apiserver

import (
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// DefaultTolerationSeconds is how long, by default, a pod stays bound to a
// node that is not ready or unreachable before it is evicted (Kubernetes:
// 300). skiff notices a dead agent through gossip within seconds, so its
// pods can be replaced elsewhere soon after.
const DefaultTolerationSeconds = 5

// The NoExecute taints every pod tolerates for a while unless it says
// otherwise (the node lifecycle controller sets them).
const (
	taintNotReady    = "node.kubernetes.io/not-ready"
	taintUnreachable = "node.kubernetes.io/unreachable"
)

// Tolerations are the server's default toleration settings.
type Tolerations struct {
	// NotReadySeconds and UnreachableSeconds are the tolerationSeconds of
	// the tolerations of node.kubernetes.io/not-ready and
	// node.kubernetes.io/unreachable that a pod gets unless it has its own;
	// DefaultTolerationSeconds when nil.
	NotReadySeconds, UnreachableSeconds *int64
}

// addDefaultTolerations is Kubernetes' DefaultTolerationSeconds admission:
// a new pod that tolerates neither the not-ready nor the unreachable
// NoExecute taint gets a toleration of each (operator Exists) for the
// server's number of seconds, so that its eviction from a dead node waits
// that long and no longer.
func addDefaultTolerations(p *skiffv1.Pod, t Tolerations) {
	if p.Spec == nil {
		return
	}
	for _, d := range []struct {
		key  string
		secs *int64
	}{{taintNotReady, t.NotReadySeconds}, {taintUnreachable, t.UnreachableSeconds}} {
		if toleratesNoExecute(p, d.key) {
			continue
		}
		secs := d.secs
		if secs == nil {
			secs = proto.Int64(DefaultTolerationSeconds)
		}
		p.Spec.Tolerations = append(p.Spec.Tolerations, &skiffv1.Toleration{Key: d.key, Operator: "Exists", Effect: "NoExecute", TolerationSeconds: proto.Int64(*secs)})
	}
}

// toleratesNoExecute reports whether p has a toleration that could match
// the NoExecute taint key, as Kubernetes' admission judges it: one of the
// key, or of every key, for the NoExecute effect or every effect.
func toleratesNoExecute(p *skiffv1.Pod, key string) bool {
	for _, tol := range p.GetSpec().GetTolerations() {
		if (tol.GetKey() == key || tol.GetKey() == "") && (tol.GetEffect() == "" || tol.GetEffect() == "NoExecute") {
			return true
		}
	}
	return false
}

// keepDefaultTolerations puts back on p the default tolerations that old,
// the stored pod, has and p leaves out: an update that sends the manifest
// again (skiff apply) does not change the spec.
func keepDefaultTolerations(old, p *skiffv1.Pod) {
	if p.Spec == nil {
		return
	}
	for _, key := range []string{taintNotReady, taintUnreachable} {
		if toleratesNoExecute(p, key) {
			continue
		}
		for _, tol := range old.GetSpec().GetTolerations() {
			if tol.GetKey() == key && tol.GetOperator() == "Exists" && tol.GetEffect() == "NoExecute" {
				p.Spec.Tolerations = append(p.Spec.Tolerations, proto.Clone(tol).(*skiffv1.Toleration))
				break
			}
		}
	}
}
