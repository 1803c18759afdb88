package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// podManifest is a pod of one container.
func podManifest(name, image string, extra ...string) string {
	m := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\nspec:\n  restartPolicy: Never\n"
	for _, e := range extra {
		m += "  " + e + "\n"
	}
	return m + "  containers:\n  - name: c\n    image: " + image + "\n"
}

// skiffBackground runs the CLI until ctx ends and returns what it prints
// so far, for commands that stream (get -w).
func (c *cluster) skiffBackground(ctx context.Context, args ...string) (*syncWriter, <-chan error) {
	root := newRoot()
	out := &syncWriter{w: &bytes.Buffer{}}
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs(append([]string{"--server", c.server, "--config", c.config}, args...))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	return out, done
}

// netnsPins lists the network namespaces pinned on the node.
func (c *cluster) netnsPins(dir string) []string {
	entries, err := os.ReadDir(filepath.Join(dir, "state", "netns"))
	if err != nil && !os.IsNotExist(err) {
		c.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() { // .spare holds the pool's namespaces made ahead, no pod's
			out = append(out, e.Name())
		}
	}
	return out
}

// TestDevListOutput shows kubectl's list conventions: -o json and -o yaml
// print one List object however many items there are, -o name and -o wide.
func TestDevListOutput(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	jsonTool, _ := exec.LookPath("python3")
	for n := 0; n <= 2; n++ {
		if n > 0 {
			c.mustSkiff("apply", "-f", writeFile(t, "p.yaml", podManifest(fmt.Sprintf("p%d", n), "hello", "")))
		}
		out := c.mustSkiff("get", "pods", "-o", "json")
		var list struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Items      []json.RawMessage `json:"items"`
		}
		if !json.Valid([]byte(out)) || json.Unmarshal([]byte(out), &list) != nil || list.Kind != "List" || len(list.Items) != n {
			t.Fatalf("get pods -o json with %d pods is not one List of %d items:\n%s", n, n, out)
		}
		if jsonTool != "" {
			cmd := exec.Command(jsonTool, "-m", "json.tool")
			cmd.Stdin = strings.NewReader(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("python3 -m json.tool rejects get pods -o json with %d pods: %v\n%s", n, err, b)
			}
		}
		if y := c.mustSkiff("get", "pods", "-o", "yaml"); !strings.Contains(y, "kind: List") || strings.Count(y, "kind: Pod") != n {
			t.Errorf("get pods -o yaml with %d pods:\n%s", n, y)
		}
	}
	if out := c.mustSkiff("get", "pods", "-o", "name"); out != "pod/p1\npod/p2\n" {
		t.Errorf("get pods -o name = %q", out)
	}
	c.waitPhase("p1", "Succeeded")
	wide := c.mustSkiff("get", "pods", "-o", "wide")
	if !strings.Contains(wide, "NODE") || !strings.Contains(wide, "node-1") {
		t.Errorf("get pods -o wide has no NODE column with node-1:\n%s", wide)
	}
	if table := c.mustSkiff("get", "pods"); strings.Contains(table, "NODE") {
		t.Errorf("get pods shows NODE, which kubectl keeps for -o wide:\n%s", table)
	}
	if one := c.mustSkiff("get", "pod", "p1", "-o", "json"); !strings.Contains(one, `"kind": "Pod"`) || strings.Contains(one, `"List"`) {
		t.Errorf("get pod p1 -o json is not the pod alone:\n%s", one)
	}
}

// TestDevSelectorsAndWatch shows label selectors and `get -w`: a pod
// applied in another terminal appears as a line for each change.
func TestDevSelectorsAndWatch(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	ctx, cancel := context.WithCancel(context.Background())
	// get -w lists, then watches from the list's version: nothing applied
	// after it started is missed.
	out, done := c.skiffBackground(ctx, "get", "pods", "-w", "-l", "app=web")

	c.mustSkiff("apply", "-f", writeFile(t, "web.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: hello\n"))
	c.mustSkiff("apply", "-f", writeFile(t, "db.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  labels:\n    app: db\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: hello\n"))
	c.waitPhase("web", "Succeeded")
	c.waitPhase("db", "Succeeded")
	eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "Succeeded") },
		func() string { return "get -w -l app=web printed:\n" + out.String() })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("get -w ended with %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var web int
	for _, l := range lines {
		if strings.HasPrefix(l, "db ") {
			t.Errorf("get -w -l app=web printed the db pod: %q", l)
		}
		if strings.HasPrefix(l, "web ") {
			web++
		}
	}
	if web < 3 { // created, bound, running or finished: each change a line
		t.Errorf("get -w printed %d lines for web, want one per change:\n%s", web, out.String())
	}
	if got := c.mustSkiff("get", "pods", "-l", "app in (web,api)", "-o", "name"); got != "pod/web\n" {
		t.Errorf("get pods -l 'app in (web,api)' = %q", got)
	}
	if got := c.mustSkiff("get", "pods", "-l", "app!=web", "-o", "name"); got != "pod/db\n" {
		t.Errorf("get pods -l app!=web = %q", got)
	}
}

// TestDevEventsAndDescribe shows the events a pod's life writes and what
// describe makes of them, for a pod that ran and one that cannot be placed.
func TestDevEventsAndDescribe(t *testing.T) {
	// A node that offers no runc (--no-runc), so that a pod asking for it
	// waits with a reason.
	c := startDev(t, func(o *devOptions) { o.runtime.noRunc = true })
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	c.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml")
	c.waitPhase("hello", "Succeeded")
	var events string
	eventually(t, 10*time.Second, func() bool {
		events = c.mustSkiff("get", "events")
		return strings.Contains(events, "Scheduled") && strings.Contains(events, "Pulled") && strings.Contains(events, "Created") && strings.Contains(events, "Started")
	}, func() string { return "get events:\n" + events })
	d := c.mustSkiff("describe", "pod", "hello")
	for _, want := range []string{"Name:", "hello", "Node:", "node-1", "Status:", "Succeeded", "Exit Code:", "Completed", "Conditions:", "Events:", "Successfully assigned default/hello to node-1", "Started container hello"} {
		if !strings.Contains(d, want) {
			t.Errorf("describe pod hello lacks %q:\n%s", want, d)
		}
	}

	// No node offers runc (--no-runc): describe says why the pod waits.
	c.mustSkiff("apply", "-f", writeFile(t, "runc.yaml", podManifest("needs-runc", "hello", "runtimeClassName: runc")))
	// The scheduler records the event and the PodScheduled condition in
	// two writes: wait for both.
	eventually(t, 15*time.Second, func() bool {
		d = c.mustSkiff("describe", "pod", "needs-runc")
		return strings.Contains(d, "FailedScheduling") && strings.Contains(d, "Unschedulable")
	}, func() string { return "describe pod needs-runc:\n" + d })
	for _, want := range []string{"Pending", "PodScheduled", "Unschedulable", `0/1 nodes are available: 1 node(s) did not offer runtime "runc".`, "Warning", "FailedScheduling"} {
		if !strings.Contains(d, want) {
			t.Errorf("describe of an unschedulable pod lacks %q:\n%s", want, d)
		}
	}
	if ev := c.mustSkiff("get", "events", "--field-selector", "reason=FailedScheduling", "-o", "json"); !strings.Contains(ev, `"count"`) || !strings.Contains(ev, "needs-runc") {
		t.Errorf("get events --field-selector reason=FailedScheduling:\n%s", ev)
	}
}

// TestDevGracefulDelete deletes running Wasm pods: one that returns when
// asked to stop, one that ignores it and is killed when its grace period
// ends, and one removed at once with --force.
func TestDevGracefulDelete(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "graceful", buildWasm(t, "testdata/graceful"))
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "ticker", buildWasm(t, "testdata/ticker"))

	tests := []struct {
		name, image, grace string
		args               []string
		wantExit           int32 // of the container's last reported state
		wantReason         string
	}{
		{"polite", "graceful", "terminationGracePeriodSeconds: 20", nil, 0, "Completed"},
		{"rude", "ticker", "terminationGracePeriodSeconds: 2", nil, 137, "Error"},
		{"forced", "ticker", "terminationGracePeriodSeconds: 30", []string{"--grace-period", "0", "--force"}, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.mustSkiff("apply", "-f", writeFile(t, "p.yaml", podManifest(tt.name, tt.image, tt.grace)))
			c.waitPhase(tt.name, "Running")
			if tt.image == "graceful" {
				eventually(t, 10*time.Second, func() bool { out, _ := c.skiff("logs", tt.name); return strings.Contains(out, "tick") },
					func() string { return "the module never ticked" })
			}
			// Watch the pod through the API, to see its last state.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cl := c.clients()
			cur, err := cl.of(kinds.Pod).Get(ctx, "default", tt.name)
			if err != nil {
				t.Fatal(err)
			}
			st, err := cl.watching(kinds.Pod).Watch(ctx, &skiffv1.WatchRequest{Namespace: "default", FieldSelector: "metadata.name=" + tt.name, ResourceVersion: cur.GetMetadata().GetResourceVersion()})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()

			start := time.Now()
			out := c.mustSkiff(append([]string{"delete", "pod", tt.name}, tt.args...)...)
			took := time.Since(start)
			if !strings.Contains(out, `pod "`+tt.name+`" deleted`) {
				t.Errorf("delete printed %q", out)
			}
			if _, err := c.skiff("get", "pod", tt.name); err == nil || !strings.Contains(err.Error(), "not found") {
				t.Errorf("get after delete returned: %v, want not found", err)
			}
			t.Logf("%s: delete to gone took %s", tt.name, took.Round(time.Millisecond))
			var last *skiffv1.Pod
			for st.Receive() {
				typ, o := st.Event()
				if typ == skiffv1.EventType_EVENT_TYPE_DELETED {
					break
				}
				last = o.(*skiffv1.Pod)
			}
			if tt.wantExit < 0 {
				c.waitSandboxes(0) // the node follows the forced deletion
				return
			}
			if last == nil || last.Metadata.DeletionTimestamp == nil {
				t.Fatalf("the pod was never marked for deletion before it went: %v", last)
			}
			term := last.GetStatus().GetContainerStatuses()[0].GetState().GetTerminated()
			if term == nil || term.GetExitCode() != tt.wantExit || term.GetReason() != tt.wantReason {
				t.Errorf("container's last state %v, want exit %d %s", last.GetStatus().GetContainerStatuses()[0].GetState(), tt.wantExit, tt.wantReason)
			}
			c.waitSandboxes(0)
		})
	}

	// Bad input: a negative grace period is refused before anything is sent.
	if _, err := c.skiff("delete", "pod", "x", "--grace-period", "-5"); err == nil || !strings.Contains(err.Error(), "--grace-period: invalid value -5") {
		t.Errorf("delete --grace-period -5: %v", err)
	}
}

// TestDevFinishedPodsReleaseTheNode shows that a finished pod gives its
// network namespace back while its logs stay readable, and that 200 short
// pods leave no pinned namespace behind.
func TestDevFinishedPodsReleaseTheNode(t *testing.T) {
	dir := t.TempDir()
	c := startDevIn(t, dir)
	t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	c.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml")
	c.waitPhase("hello", "Succeeded")
	eventually(t, 10*time.Second, func() bool { return len(c.netnsPins(dir)) == 0 },
		func() string { return fmt.Sprintf("pinned namespaces after hello finished: %v", c.netnsPins(dir)) })
	if logs := c.mustSkiff("logs", "hello"); !strings.Contains(logs, "Hello, skiff!") {
		t.Errorf("logs of a finished pod = %q", logs)
	}

	var m strings.Builder
	for i := 0; i < 200; i++ {
		m.WriteString("---\n" + podManifest(fmt.Sprintf("short-%03d", i), "hello", ""))
	}
	file := writeFile(t, "short.yaml", m.String())
	start := time.Now()
	c.mustSkiff("apply", "-f", file)
	var phases map[string]int
	eventually(t, 3*time.Minute, func() bool {
		phases = map[string]int{}
		var list struct {
			Items []podView `json:"items"`
		}
		if err := json.Unmarshal([]byte(c.mustSkiff("get", "pods", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			phases[p.Status.Phase]++
		}
		return phases["Succeeded"] == 201
	}, func() string { return fmt.Sprintf("phases %v", phases) })
	t.Logf("200 short pods: apply to all Succeeded in %s", time.Since(start).Round(time.Millisecond))
	eventually(t, 30*time.Second, func() bool { return len(c.netnsPins(dir)) == 0 },
		func() string {
			return fmt.Sprintf("%d pinned namespaces after 200 pods finished", len(c.netnsPins(dir)))
		})

	start = time.Now()
	c.mustSkiff("delete", "-f", file)
	t.Logf("delete -f of 200 finished pods took %s", time.Since(start).Round(time.Millisecond))
	if out := c.mustSkiff("get", "pods", "-o", "name"); out != "pod/hello\n" {
		t.Errorf("after delete -f: %q", out)
	}
}

// TestDevCLIBadInput: each mistake gets an error naming it, and exit code 1.
func TestDevCLIBadInput(t *testing.T) {
	c := startDev(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"get", "widgets"}, `unknown kind "widgets": use one of deployments, endpoints, events, namespaces, nodes, pods, replicasets, services`},
		{[]string{"get", "pods", "-l", "a in (b"}, `invalid label selector "a in (b": missing ')'`},
		{[]string{"get", "pods", "--field-selector", "spec.host=x"}, `field "spec.host" is not supported`},
		{[]string{"get", "pods", "-o", "xml"}, `-o: unsupported value "xml"`},
		{[]string{"get", "pod", ""}, "name required"},
		{[]string{"delete", "pod"}, "name required"},
		{[]string{"delete", "pod", "x", "--grace-period", "-2"}, "--grace-period: invalid value -2: must be 0 or more"},
		{[]string{"apply", "-f", writeFile(t, "f.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: f\n  finalizers: [\"not a name\"]\nspec:\n  containers:\n  - name: c\n    image: hello\n")},
			`metadata.finalizers[0]: invalid value "not a name": a finalizer must be a qualified name`},
		{[]string{"apply", "-f", writeFile(t, "l.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: l\n  labels:\n    "+strings.Repeat("k", 64)+": v\nspec:\n  containers:\n  - name: c\n    image: hello\n")},
			"name part must be no more than 63 characters"},
		{[]string{"apply", "-f", writeFile(t, "g.yaml", podManifest("g", "hello", "terminationGracePeriodSeconds: -1"))},
			"spec.terminationGracePeriodSeconds: invalid value -1: must not be negative"},
		{[]string{"describe", "pod", "missing"}, `pod "default/missing" not found`},
		{[]string{"rollout", "status", "deployment/missing"}, `deployment "default/missing" not found`},
		{[]string{"rollout", "undo", "pod/x"}, "pod: unsupported kind: use deployments"},
		{[]string{"rollout", "history", "deployment"}, "give the object as KIND/NAME"},
		{[]string{"scale", "deploy/x"}, "--replicas: required flag"},
		{[]string{"scale", "rs/x", "--replicas", "-1"}, "--replicas: invalid value -1"},
		{[]string{"apply", "-f", writeFile(t, "d.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {app: x}\n  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 0}\n  template:\n    metadata:\n      labels: {app: other}\n    spec:\n      containers:\n      - {name: c, image: hello}\n")},
			"spec.template.metadata.labels: invalid value \"app=other\": `selector` does not match template `labels`; spec.strategy.rollingUpdate.maxUnavailable: invalid value \"0\": may not be 0 when maxSurge is 0"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[:2], " "), func(t *testing.T) {
			out, err := c.skiff(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("skiff %s: %v (printed %q), want an error with %q", strings.Join(tt.args, " "), err, out, tt.want)
			}
		})
	}
	if out := c.mustSkiff("get", "pods"); !strings.Contains(out, "No pods found") {
		t.Errorf("bad input left pods behind:\n%s", out)
	}
}

// TestCompletion shows shell completion of kinds, and of object names from
// the server.
func TestCompletion(t *testing.T) {
	c := startDev(t)
	out := c.mustSkiff("__complete", "get", "")
	for _, k := range []string{"pods", "nodes", "namespaces", "events"} {
		if !strings.Contains(out, k+"\n") {
			t.Errorf("completing get offers no %s:\n%s", k, out)
		}
	}
	if out := c.mustSkiff("__complete", "describe", "nodes", ""); !strings.Contains(out, "node-1\n") {
		t.Errorf("completing describe nodes offers no node-1:\n%s", out)
	}
	if out := c.mustSkiff("completion", "bash"); !strings.Contains(out, "__start_skiff") {
		t.Errorf("skiff completion bash printed no completion script")
	}
}
