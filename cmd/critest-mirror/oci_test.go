package main

import (
	"archive/tar"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testInputs are the files the OCI images are made of: nnp and pause built
// here, the busybox named by $CRITEST_MIRROR_BUSYBOX (the critest-runc
// task's Debian busybox) or else /bin/busybox, and the host's ipcs.
func testInputs(t *testing.T) ociInputs {
	t.Helper()
	inputsOnce.Do(func() { inputs, inputsErr = buildInputs() })
	if inputsErr != nil {
		t.Skipf("no inputs for the OCI images: %v", inputsErr)
	}
	return inputs
}

var (
	inputsOnce sync.Once
	inputs     ociInputs
	inputsErr  error
	inputsDir  string
)

func buildInputs() (ociInputs, error) {
	bb := os.Getenv("CRITEST_MIRROR_BUSYBOX")
	if bb == "" {
		bb = "/bin/busybox"
	}
	if _, err := os.Stat(bb); err != nil {
		return ociInputs{}, errors.New("no busybox at " + bb + " (apt-get install busybox-static, or set CRITEST_MIRROR_BUSYBOX)")
	}
	if _, err := os.Stat("/usr/bin/ipcs"); err != nil {
		return ociInputs{}, errors.New("no /usr/bin/ipcs (util-linux)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return ociInputs{}, errors.New("no go command to build nnp and pause")
	}
	dir, err := os.MkdirTemp("", "critest-mirror-test-")
	if err != nil {
		return ociInputs{}, err
	}
	inputsDir = dir
	for _, prog := range []string{"nnp", "pause"} {
		cmd := exec.Command(goBin, "build", "-o", filepath.Join(dir, prog), "./"+prog)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return ociInputs{}, errors.New("build " + prog + ": " + err.Error() + ": " + string(out))
		}
	}
	return ociInputs{Busybox: bb, IPCS: "/usr/bin/ipcs", NNP: filepath.Join(dir, "nnp"), Pause: filepath.Join(dir, "pause")}, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if inputsDir != "" {
		os.RemoveAll(inputsDir)
	}
	os.Exit(code)
}

// serveOCI runs a registry with every OCI stand-in pushed and returns its
// host:port.
func serveOCI(t *testing.T) string {
	t.Helper()
	build, err := ociImages(testInputs(t))
	if err != nil {
		t.Fatalf("build the images: %v", err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	if err := push(host, build); err != nil {
		t.Fatalf("push: %v", err)
	}
	return host
}

// pull is what a client gets for ref from the mirror at host.
func pull(t *testing.T, host, ref string) v1.Image {
	t.Helper()
	dst, err := mirrored(host, ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(dst)
	if err != nil {
		t.Fatalf("pull %s: %v", dst, err)
	}
	return img
}

// file is one entry of an image's flattened file system.
type file struct {
	typ  byte
	mode int64
	uid  int
	data string
	link string
}

// files is img's file system as the layers stack up, by absolute path.
func files(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]file{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read the image's files: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		out[p] = file{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, data: string(data), link: h.Linkname}
	}
}

func TestOCIImagesHaveWhatCritestRuns(t *testing.T) {
	host := serveOCI(t)
	ids := map[string]string{} // image ID (config digest) -> group
	for _, im := range images {
		t.Run(im.ref, func(t *testing.T) {
			img := pull(t, host, im.ref)
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != "amd64" {
				t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
			}
			id, err := img.ConfigName()
			if err != nil {
				t.Fatal(err)
			}
			if g, ok := ids[id.String()]; ok && g != groupOf(im) {
				t.Errorf("image ID %s is also %s's; critest needs them distinct", id, g)
			}
			ids[id.String()] = groupOf(im)
			if cf.Config.User != im.oci.user {
				t.Errorf("User %q, want %q", cf.Config.User, im.oci.user)
			}
			fs := files(t, img)
			if im.oci.kind == pause {
				if len(fs) != 1 || fs["/pause"].typ != tar.TypeReg {
					t.Errorf("files %v, want /pause alone", keys(fs))
				}
				if got := strings.Join(cf.Config.Entrypoint, " "); got != "/pause" {
					t.Errorf("Entrypoint %q, want /pause", got)
				}
				return
			}
			// What every busybox-based image runs (pkg/validate's commands).
			for _, applet := range []string{"sh", "echo", "sleep", "top", "cat", "ls", "id", "grep", "hostname", "touch", "mkdir", "mount", "ping", "brctl", "netstat", "pidof", "dd", "chmod", "httpd", "["} {
				if f := fs["/bin/"+applet]; f.typ != tar.TypeLink || f.link != "bin/busybox" {
					t.Errorf("/bin/%s is %+v, want a hard link to bin/busybox", applet, f)
				}
			}
			if f := fs["/bin/pgrep"]; f.typ != tar.TypeReg || f.mode&0o111 == 0 {
				t.Errorf("/bin/pgrep is not an executable file")
			}
			if f := fs["/usr/bin/ipcs"]; f.typ != tar.TypeReg {
				t.Errorf("/usr/bin/ipcs is missing")
			}
			for _, lib := range []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"} {
				if _, ok := fs[lib]; !ok {
					t.Errorf("%s is missing (ipcs needs it)", lib)
				}
			}
			if f := fs["/tmp"]; f.typ != tar.TypeDir || f.mode != 0o1777 {
				t.Errorf("/tmp is %+v, want a directory with mode 1777", f)
			}
			for _, account := range []string{"nobody:x:65534:65534:", "www-data:x:33:33:"} {
				if !strings.Contains(fs["/etc/passwd"].data, account) {
					t.Errorf("/etc/passwd has no %s", account)
				}
			}
			if m := im.oci.marker; m != "" {
				if _, ok := fs["/"+m]; !ok {
					t.Errorf("marker /%s is missing", m)
				}
			}
			entry := strings.Join(append(cf.Config.Entrypoint, cf.Config.Cmd...), " ")
			switch im.oci.kind {
			case busybox:
				if entry != "sh" {
					t.Errorf("runs %q, want sh", entry)
				}
			case nginx:
				if entry != "nginx -g daemon off;" {
					t.Errorf("runs %q, want nginx -g daemon off;", entry)
				}
				script := fs["/usr/sbin/nginx"].data
				for _, want := range []string{"-p " + strconv.Itoa(im.oci.port), "nginx: master process", "/var/run/nginx.pid"} {
					if !strings.Contains(script, want) {
						t.Errorf("/usr/sbin/nginx has no %q:\n%s", want, script)
					}
				}
				if _, ok := fs["/usr/share/nginx/html/index.html"]; !ok {
					t.Errorf("no /usr/share/nginx/html/index.html")
				}
			case httpd:
				if entry != "httpd-foreground" {
					t.Errorf("runs %q, want httpd-foreground", entry)
				}
				if !strings.Contains(fs["/usr/local/bin/httpd-foreground"].data, "-p 80 -h /usr/local/apache2/htdocs") {
					t.Errorf("httpd-foreground does not serve /usr/local/apache2/htdocs on 80")
				}
			case nonewprivs:
				if entry != "/usr/local/bin/nnp" {
					t.Errorf("runs %q, want /usr/local/bin/nnp", entry)
				}
				if f := fs["/usr/local/bin/nnp"]; f.mode != 0o4755 || f.uid != 0 {
					t.Errorf("nnp has mode %o uid %d, want setuid root (4755, 0)", f.mode, f.uid)
				}
			case predefinedGroup:
				if !strings.Contains(fs["/etc/passwd"].data, "\ndefault-user:x:1000:1000:") {
					t.Errorf("/etc/passwd has no default-user 1000")
				}
				if !strings.Contains(fs["/etc/group"].data, "\ngroup-defined-in-image:x:50000:default-user\n") {
					t.Errorf("/etc/group does not put default-user in group-defined-in-image (50000)")
				}
			}
		})
	}
	// One image ID per group: 18 groups for 21 names.
	groups := map[string]bool{}
	for _, im := range images {
		groups[groupOf(im)] = true
	}
	if len(ids) != len(groups) {
		t.Errorf("%d image IDs for %d groups", len(ids), len(groups))
	}
}

// The images are the same bytes every time: a node that pulled them once
// pulls nothing new from a new mirror.
func TestOCIImagesAreReproducible(t *testing.T) {
	in := testInputs(t)
	digests := func() []string {
		b, err := newOCIBuilder(in)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, im := range images {
			img, err := b.image(im.oci)
			if err != nil {
				t.Fatal(err)
			}
			d, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d.String())
		}
		return out
	}
	a, b := digests(), digests()
	if strings.Join(a, ",") != strings.Join(b, ",") {
		t.Errorf("two builds differ:\n%v\n%v", a, b)
	}
}

func TestOCIBuilderRefusesMissingInputs(t *testing.T) {
	in := testInputs(t)
	in.Busybox = filepath.Join(t.TempDir(), "busybox")
	_, err := newOCIBuilder(in)
	if err == nil || !strings.Contains(err.Error(), "busybox") {
		t.Errorf("a missing busybox: error %v, want one naming busybox", err)
	}
}

func keys(m map[string]file) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
