package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// probeTimeout is how long the neighbour has to answer a probe or a
// request: twice the kubelet's default second, so that a loaded test
// machine does not fail a probe the node itself would pass.
const probeTimeout = 2 * time.Second

const webPod = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: server
    ports:
    - name: http
      containerPort: 8080
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
      timeoutSeconds: 2
      failureThreshold: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
      timeoutSeconds: 2
      failureThreshold: 1
`

// TestNeighbourKeepsAnswering: a memory.grow bomb under limits.memory 64Mi
// ends OOMKilled and a loop past its CPU budget ends CPUBudgetExceeded,
// while skiff's resident memory stays under the limit plus 100 MiB and a
// neighbour Wasm pod, serving HTTP on its declared port in its own network
// namespace, keeps answering: its readiness and liveness probes never fail
// (one failure would flip it), and requests made in its namespace every
// 10ms all succeed.
func TestNeighbourKeepsAnswering(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "server", buildWasm(t, "../../runtime/wasm/testdata/server"))
	for name, steps := range map[string]wasmtest.Step{"bomb": wasmtest.GrowBomb(), "spin": wasmtest.Spin()} {
		path := filepath.Join(t.TempDir(), name+".wasm")
		if err := os.WriteFile(path, wasmtest.Build(steps), 0o644); err != nil {
			t.Fatal(err)
		}
		c.mustSkiff("image", "import", "--data-dir", c.dataDir, name, path)
	}
	c.mustSkiff("apply", "-f", writeFile(t, "web.yaml", webPod))
	eventually(t, 60*time.Second, func() bool { return c.ready("web") == "True" },
		func() string { return "web never became Ready: " + c.ready("web") })
	nsPath := c.netnsOf("web")

	for _, tc := range []struct {
		name, manifest, reason string
	}{
		{"bomb", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bomb\nspec:\n  restartPolicy: Never\n  containers:\n  - name: bomb\n    image: bomb\n    resources:\n      limits:\n        memory: 64Mi\n", "OOMKilled"},
		{"spin", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: spin\n  annotations:\n    skiff.dev/cpu-time-budget: 2s\nspec:\n  restartPolicy: Never\n  containers:\n  - name: spin\n    image: spin\n", "CPUBudgetExceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := wasmtest.RSS()
			if err != nil {
				t.Skipf("cannot read the resident set size: %v", err)
			}
			watch := watchNeighbour(nsPath)
			c.mustSkiff("apply", "-f", writeFile(t, tc.name+".yaml", tc.manifest))
			var p podView
			notReady := ""
			eventually(t, 60*time.Second, func() bool {
				if r := c.ready("web"); r != "True" && notReady == "" {
					notReady = r
				}
				p = c.pod(tc.name)
				return p.Status.Phase == "Failed"
			}, func() string { return fmt.Sprintf("pod %s is %q, want Failed", tc.name, p.Status.Phase) })
			res := watch()
			t.Logf("%s: RSS %d MiB before, peak %d MiB; the neighbour answered %d requests meanwhile", tc.name, before>>20, res.peakRSS>>20, res.answered)
			if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.Reason != tc.reason {
				t.Errorf("%s container statuses = %+v, want terminated %s", tc.name, cs, tc.reason)
			}
			if res.err != nil || res.answered == 0 {
				t.Errorf("the neighbour stopped answering in its namespace: %d answered, first failure %v", res.answered, res.err)
			}
			if notReady != "" {
				t.Errorf("the neighbour's Ready condition went %q during the %s", notReady, tc.name)
			}
			if res.peakRSS > before+(64+100)<<20 {
				t.Errorf("skiff's resident memory peaked %d MiB above where it was (limit 64 MiB + 100 MiB)", (res.peakRSS-before)>>20)
			}
		})
	}
	if ev := c.mustSkiff("get", "events", "--field-selector", "reason=Unhealthy"); strings.Contains(ev, "web") {
		t.Errorf("the neighbour's probes failed:\n%s", ev)
	}
	if cs := c.pod("web").Status.ContainerStatuses; len(cs) != 1 {
		t.Errorf("web container statuses = %+v", cs)
	}
}

// ready is the status of pod name's Ready condition ("" when it has none).
func (c *cluster) ready(name string) string {
	for _, cond := range c.pod(name).Status.Conditions {
		if cond.Type == "Ready" {
			return cond.Status
		}
	}
	return ""
}

// netnsOf is the path of the network namespace of pod name's sandbox, as
// crictl inspectp shows it.
func (c *cluster) netnsOf(name string) string {
	c.t.Helper()
	conn, err := grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := rs.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, sb := range list.Items {
		if sb.Metadata.Name != name {
			continue
		}
		st, err := rs.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.Id, Verbose: true})
		if err != nil {
			c.t.Fatal(err)
		}
		var info struct {
			NetNSPath string `json:"netnsPath"`
		}
		if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.NetNSPath == "" {
			c.t.Fatalf("sandbox %s info %q: %v", sb.Id, st.Info["info"], err)
		}
		return info.NetNSPath
	}
	c.t.Fatalf("no ready sandbox of pod %s", name)
	return ""
}

type neighbourWatch struct {
	answered int
	err      error
	peakRSS  uint64
}

// watchNeighbour makes an HTTP request to 127.0.0.1:8080 in the network
// namespace at nsPath every 10ms, with probeTimeout to answer,
// and samples the process's resident memory every millisecond, until the
// returned function is called.
func watchNeighbour(nsPath string) func() neighbourWatch {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var res neighbourWatch
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var body string
			err := netns.Do(nsPath, func() error {
				conn, err := net.DialTimeout("tcp", "127.0.0.1:8080", probeTimeout)
				if err != nil {
					return err
				}
				body, err = httpGet(conn)
				return err
			})
			if err == nil && body != "ok 8080\n" {
				err = fmt.Errorf("answer %q", body)
			}
			if err != nil {
				if res.err == nil {
					res.err = err
				}
				continue
			}
			res.answered++
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if n, err := wasmtest.RSS(); err == nil {
				res.peakRSS = max(res.peakRSS, n)
			}
		}
	}()
	return func() neighbourWatch {
		close(stop)
		wg.Wait()
		return res
	}
}

// httpGet makes one HTTP/1.1 GET / over conn, probeTimeout at most, and
// returns the body.
func httpGet(conn net.Conn) (string, error) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
