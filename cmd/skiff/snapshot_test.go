package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// snapshotNamespaces and snapshotPods are what TestSnapshotSaveRestore
// puts in the cluster. The pods are bound to a node that does not exist, so
// that neither the scheduler nor an agent changes them while the test looks.
const snapshotNamespaces = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Namespace
metadata:
  name: gone
`

const snapshotPods = `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: edge-9
  containers: [{name: web, image: hello}]
---
apiVersion: v1
kind: Pod
metadata:
  name: cart
  namespace: shop
spec:
  nodeName: edge-9
  containers: [{name: cart, image: hello}]
---
apiVersion: v1
kind: Pod
metadata:
  name: old
  namespace: shop
spec:
  nodeName: edge-9
  containers: [{name: old, image: hello}]
`

// TestSnapshotSaveRestore saves a snapshot of a running `skiff server`,
// restores it into a new data directory and starts a server there: every
// object is as it was, uids and resourceVersions included, and new writes
// get revisions above the snapshot's.
func TestSnapshotSaveRestore(t *testing.T) {
	dir := t.TempDir()
	logs := &syncWriter{w: &bytes.Buffer{}}
	defer func() {
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	}()
	namespaceFile, manifest := filepath.Join(dir, "namespaces.yaml"), filepath.Join(dir, "pods.yaml")
	if err := os.WriteFile(namespaceFile, []byte(snapshotNamespaces), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifest, []byte(snapshotPods), 0o600); err != nil {
		t.Fatal(err)
	}

	c := &cluster{t: t, server: freeAddr(t)}
	stop := startServer(t, c, logs, filepath.Join(dir, "old"))
	c.mustSkiff("apply", "-f", namespaceFile)
	c.mustSkiff("apply", "-f", manifest)
	// An update, a delete and a removed namespace, so that revisions differ
	// from creation order.
	relabelled := strings.Replace(snapshotPods, "labels: {app: web}", "labels: {app: web, tier: front}", 1)
	if err := os.WriteFile(manifest, []byte(relabelled), 0o600); err != nil {
		t.Fatal(err)
	}
	c.mustSkiff("apply", "-f", manifest)
	c.mustSkiff("delete", "pod", "old", "-n", "shop", "--grace-period", "0", "--force")
	c.mustSkiff("delete", "namespace", "gone")

	pods := c.mustSkiff("get", "pods", "-A", "-o", "json")
	namespaces := c.mustSkiff("get", "namespaces", "-o", "json")
	snap := filepath.Join(dir, "backup.snap")
	out := c.mustSkiff("snapshot", "save", snap)
	m := regexp.MustCompile(`^saved snapshot at revision (\d+) \((\d+) bytes, sha256 [0-9a-f]{64}\)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("snapshot save printed %q", out)
	}
	rev, _ := strconv.ParseUint(m[1], 10, 64)
	size, _ := strconv.ParseInt(m[2], 10, 64)
	if fi, err := os.Stat(snap); err != nil || fi.Size() <= size {
		t.Errorf("snapshot file: %v, %v; want more than the %d bytes of the database", fi, err, size)
	}
	if again := c.mustSkiff("get", "pods", "-A", "-o", "json"); again != pods {
		t.Fatalf("pods changed while the test looked:\n%s\nthen\n%s", pods, again)
	}
	for _, item := range decodeList(t, pods) {
		if item.Metadata.ResourceVersion > rev {
			t.Errorf("pod %s at rv %d, after the snapshot's %d", item.Metadata.Name, item.Metadata.ResourceVersion, rev)
		}
	}
	stop()

	newDir := filepath.Join(dir, "new")
	out = c.mustSkiff("snapshot", "restore", snap, "--data-dir", newDir)
	if want := "restored snapshot at revision " + m[1] + " into " + filepath.Join(newDir, "server"); !strings.HasPrefix(out, want) {
		t.Errorf("snapshot restore printed %q, want %q...", out, want)
	}
	// The restored server keeps the old one's join token, so that the
	// admin's token, which the snapshot holds, stays valid
	// (TestSnapshotRestoredServerAdmin: not so without it).
	c.server = freeAddr(t)
	startServer(t, c, logs, newDir, "--token-file", filepath.Join(dir, "old", "server", "token"))
	if got := c.mustSkiff("get", "pods", "-A", "-o", "json"); got != pods {
		t.Errorf("pods after the restore:\n%s\nwant\n%s", got, pods)
	}
	if got := c.mustSkiff("get", "namespaces", "-o", "json"); got != namespaces {
		t.Errorf("namespaces after the restore:\n%s\nwant\n%s", got, namespaces)
	}
	if err := os.WriteFile(manifest, []byte(strings.Replace(snapshotPods, "name: web", "name: web-2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	c.mustSkiff("apply", "-f", manifest)
	var web2 listItem
	if err := json.Unmarshal([]byte(c.mustSkiff("get", "pod", "web-2", "-o", "json")), &web2); err != nil {
		t.Fatal(err)
	}
	if web2.Metadata.ResourceVersion <= rev {
		t.Errorf("a pod created after the restore has rv %d, not above the snapshot's %d", web2.Metadata.ResourceVersion, rev)
	}

	// The running server's directory is refused, and left alone.
	if out, err := c.skiff("snapshot", "restore", snap, "--data-dir", newDir); err == nil || !strings.Contains(err.Error(), "already holds a store") {
		t.Errorf("restore over a store: %v\n%s", err, out)
	}
	if got := c.mustSkiff("get", "pod", "web-2", "-o", "name"); got != "pod/web-2\n" {
		t.Errorf("after a refused restore: %q", got)
	}
}

// TestSnapshotRestoredServerAdmin: a server started on a restored data
// directory as `skiff snapshot restore` says (skiff server --data-dir DIR,
// no token: it makes a new one, and a new CA) writes an admin's client
// config that reaches it: the CLI lists the restored objects with it.
func TestSnapshotRestoredServerAdmin(t *testing.T) {
	dir := t.TempDir()
	logs := &syncWriter{w: &bytes.Buffer{}}
	defer func() {
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	}()
	c := &cluster{t: t, server: freeAddr(t)}
	stop := startServer(t, c, logs, filepath.Join(dir, "old"))
	c.mustSkiff("apply", "-f", writeFile(t, "namespaces.yaml", snapshotNamespaces))
	snap := filepath.Join(dir, "backup.snap")
	c.mustSkiff("snapshot", "save", snap)
	stop()

	newDir := filepath.Join(dir, "new")
	out := c.mustSkiff("snapshot", "restore", snap, "--data-dir", newDir)
	if want := "start it with: skiff server --data-dir " + newDir + "\n"; !strings.HasSuffix(out, want) {
		t.Fatalf("snapshot restore printed %q, want it to end %q", out, want)
	}
	c.server = freeAddr(t)
	startServer(t, c, logs, newDir)
	if got := c.mustSkiff("get", "namespaces", "-o", "name"); got != "namespace/default\nnamespace/gone\nnamespace/shop\n" {
		t.Errorf("namespaces of the restored server: %q", got)
	}
}

// TestSnapshotRestoreRefusesDamage: a truncated or damaged snapshot file is
// refused with the reason, and the data directory is not created.
func TestSnapshotRestoreRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	c := &cluster{t: t, server: freeAddr(t)}
	stop := startServer(t, c, &syncWriter{w: &bytes.Buffer{}}, filepath.Join(dir, "old"))
	snap := filepath.Join(dir, "backup.snap")
	c.mustSkiff("snapshot", "save", snap)
	stop()
	good, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"truncated", good[:len(good)/2], "the file is truncated"},
		{"a flipped byte", func() []byte { b := bytes.Clone(good); b[len(b)-1] ^= 1; return b }(), "the file is damaged: the body's sha256"},
		{"not a snapshot", []byte("hello"), "not a skiff snapshot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.snap")
			if err := os.WriteFile(path, tt.file, 0o600); err != nil {
				t.Fatal(err)
			}
			data := filepath.Join(t.TempDir(), "data")
			out, err := c.skiff("snapshot", "restore", path, "--data-dir", data)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("restore: %v, want an error with %q\n%s", err, tt.want, out)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the data directory: %v, want it not created", err)
			}
		})
	}
}

// startServer runs `skiff server` on dataDir at c.server until the test
// ends or stop is called, and waits until it answers c's CLI, which from
// then on uses the admin's client config the server wrote in dataDir.
func startServer(t *testing.T, c *cluster, logs *syncWriter, dataDir string, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.config = adminConfigPath(dataDir)
	done := runSkiff(ctx, logs, append([]string{"server", "--data-dir", dataDir, "--listen", c.server, "--log-level", "warn",
		"--client-config", filepath.Join(t.TempDir(), "client.config")}, args...)...)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("skiff server returned %v when stopped, want nil", err)
		}
	}
	t.Cleanup(stop)
	var out string
	var err error
	eventually(t, 20*time.Second, func() bool {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("skiff server stopped: %v\n%s", err, logs.String())
		default:
		}
		// The admin's client config first: the server writes it once
		// it is ready.
		if _, found, _ := loadClientConfig(c.config); !found {
			err = fmt.Errorf("no admin's client config in %s yet", c.config)
			return false
		}
		out, err = c.skiff("get", "namespaces")
		return err == nil
	}, func() string { return fmt.Sprintf("the server did not answer: %v\n%s\n%s", err, out, logs.String()) })
	return stop
}

// listItem is what the snapshot tests read of an object.
type listItem struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion uint64 `json:"resourceVersion,string"`
	} `json:"metadata"`
}

func decodeList(t *testing.T, s string) []listItem {
	t.Helper()
	var l struct {
		Items []listItem `json:"items"`
	}
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return l.Items
}
