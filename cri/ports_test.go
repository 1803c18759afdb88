package cri

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
)

// serverConfig is a container of runtime/wasm's testdata/server that
// declares port 8080 and answers "REPLY 8080".
func serverConfig(name, reply string) *runtime.ContainerConfig {
	c := containerConfig(name, "server", reply)
	c.Annotations = map[string]string{AnnotationContainerPorts: `[{"name":"http","containerPort":8080,"protocol":"TCP"}]`}
	return c
}

// get makes one HTTP/1.1 GET / over conn and returns the body.
func get(conn net.Conn) (string, error) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
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

// TestContainerPorts: a container that declares a TCP port serves on the
// socket the sandbox's namespace gives it, and the socket closes when the
// container stops. Bad declarations are refused by name.
func TestContainerPorts(t *testing.T) {
	e := newEnv(t, false)
	e.importFile("server", needServer(t))
	pod := e.runPod("web")
	id := e.mustCreate(pod, serverConfig("web", "hello"))
	e.start(id)
	e.waitLog(id, "serving 8080:3")
	addr := e.ns.(*fakeNamespaces).addr(8080)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := get(conn); err != nil || body != "hello 8080\n" {
		t.Errorf("GET / = %q, %v; want %q", body, err, "hello 8080\n")
	}
	if _, err := e.rs.StopContainer(context.Background(), &runtime.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s accepts connections after the container stopped", addr)
	}

	for _, c := range []struct{ ports, want string }{
		{`[{"containerPort":53,"protocol":"UDP"}]`, "[0].protocol UDP"},
		{`[{"containerPort":0}]`, "[0].containerPort 0"},
		{`[{"containerPort":80},{"containerPort":80}]`, "[1].containerPort 80 is declared twice"},
		{`{"containerPort":80}`, "not a JSON array"},
	} {
		bad := serverConfig("bad", "x")
		bad.Annotations[AnnotationContainerPorts] = c.ports
		_, err := e.create(pod, bad)
		wantCode(t, err, codes.InvalidArgument, AnnotationContainerPorts, c.want)
	}
	list, err := e.rs.ListContainers(context.Background(), &runtime.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Containers) != 1 {
		t.Errorf("%d containers after the refusals, want 1", len(list.Containers))
	}
}

// TestContainerPortsInPodNamespace: two pods serve on the same port, each
// in its own network namespace, and each answers there.
func TestContainerPortsInPodNamespace(t *testing.T) {
	needRoot(t)
	e := newEnv(t, true)
	cleanupPins(t, e)
	e.importFile("server", needServer(t))
	paths := map[string]string{}
	for _, name := range []string{"a", "b"} {
		pod := e.runPod(name)
		id := e.mustCreate(pod, serverConfig(name, "pod-"+name))
		e.start(id)
		e.waitLog(id, "serving 8080:3")
		paths[name] = e.svc.sandboxes[pod].snapshot().NetNSPath
	}
	for name, path := range paths {
		var body string
		err := netns.Do(path, func() error {
			conn, err := net.DialTimeout("tcp", "127.0.0.1:8080", 5*time.Second)
			if err != nil {
				return err
			}
			body, err = get(conn)
			return err
		})
		if want := fmt.Sprintf("pod-%s 8080\n", name); err != nil || body != want {
			t.Errorf("GET / in pod %s's namespace = %q, %v; want %q", name, body, err, want)
		}
	}
	if !strings.HasPrefix(paths["a"], e.ns.(hostNamespaces).dir) {
		t.Errorf("pod a's namespace %q is not one of the node's", paths["a"])
	}
}
