package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// kind is what an OCI stand-in is built as.
type kind int

const (
	busybox         kind = iota // busybox:1.37.0 as cri-tools' images/ start from
	nginx                       // a web server that looks like nginx to ps and pidof
	httpd                       // a web server that looks like Apache's httpd image
	nonewprivs                  // busybox with a setuid-root nnp printing its effective uid
	predefinedGroup             // images/image-predefined-group: default-user in a group of the image
	pause                       // /pause alone
)

// ociSpec is the OCI stand-in of one image name.
type ociSpec struct {
	kind   kind
	user   string // the config's User
	marker string // an empty file at /marker, as images/image-test's ADD puts one
	port   int    // a web server's port
}

// ociInputs are the files of this machine the images are made of.
type ociInputs struct {
	// Busybox is Debian's dynamically linked busybox (package busybox): its
	// shell runs applets as processes of their own, which tests look for
	// with pgrep and pidof. busybox-static runs them inside the shell.
	Busybox string
	// IPCS is util-linux's ipcs (busybox has no ipcs applet here).
	IPCS string
	// NNP and Pause are ./nnp and ./pause, built with CGO_ENABLED=0.
	NNP, Pause string
}

// ociDir names the inputs in one directory, as the critest-runc task
// lays them out; ipcs is the host's.
func ociDir(dir, ipcs string) ociInputs {
	return ociInputs{
		Busybox: filepath.Join(dir, "busybox"),
		NNP:     filepath.Join(dir, "nnp"),
		Pause:   filepath.Join(dir, "pause"),
		IPCS:    ipcs,
	}
}

// ociBuilder builds the stand-ins. Every image but pause starts with one
// busybox layer (the same blob in every image), as the real ones do.
type ociBuilder struct {
	in   ociInputs
	base v1.Layer
}

func newOCIBuilder(in ociInputs) (*ociBuilder, error) {
	t, err := busyboxTree(in)
	if err != nil {
		return nil, err
	}
	base, err := t.layer()
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	return &ociBuilder{in: in, base: base}, nil
}

// envPath is busybox's image's PATH.
const envPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// passwd and group are the accounts of busybox's image: tests run as
// nobody by name and read www-data from a config's User.
const (
	passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
mail:x:8:
wheel:x:10:root
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:
`
)

// busyboxTree is the root file system of busybox's image: the binary with
// a hard link per applet in /bin (as the real image has: masking one
// applet, as critest's MaskedPaths test does with /bin/ls, must not mask
// the binary, which a symlink would resolve to), its loader and
// libraries, the accounts, and what busybox lacks here (pgrep, ipcs).
func busyboxTree(in ociInputs) (tree, error) {
	t := tree{}
	if err := t.addELF("/bin/busybox", in.Busybox, 0o755); err != nil {
		return nil, fmt.Errorf("busybox: %w", err)
	}
	out, err := exec.Command(in.Busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list the applets of %s: %w", in.Busybox, err)
	}
	applets := strings.Fields(string(out))
	if len(applets) < 10 {
		return nil, fmt.Errorf("list the applets of %s: only %d", in.Busybox, len(applets))
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		t.hardlink("/bin/"+a, "/bin/busybox")
	}
	if _, ok := t["/bin/pgrep"]; !ok {
		t.file("/bin/pgrep", 0o755, []byte(pgrepScript))
	}
	if err := t.addELF("/usr/bin/ipcs", in.IPCS, 0o755); err != nil {
		return nil, fmt.Errorf("ipcs: %w", err)
	}
	t.file("/etc/passwd", 0o644, []byte(passwd))
	t.file("/etc/group", 0o644, []byte(group))
	for _, d := range []string{"/dev", "/proc", "/sys", "/etc", "/home", "/usr/sbin", "/usr/local/bin", "/var/spool/mail", "/var/www", "/run"} {
		t.dir(d, 0o755)
	}
	t.symlink("/var/run", "../run")
	t.dir("/root", 0o700)
	t.dir("/tmp", 0o1777)
	return t, nil
}

// pgrepScript is pgrep PATTERN: the processes whose name matches.
const pgrepScript = `#!/bin/sh
# pgrep PATTERN: print the pid of each process whose name matches PATTERN
# (a basic regular expression); exit 1 when none does.
if [ $# -ne 1 ]; then
	echo "usage: pgrep PATTERN" >&2
	exit 2
fi
found=1
for d in /proc/[0-9]*; do
	name=$(cat "$d/comm" 2>/dev/null) || continue
	if [ "${d#/proc/}" != "$$" ] && echo "$name" | grep -q -- "$1"; then
		echo "${d#/proc/}"
		found=0
	fi
done
exit $found
`

// serveScript runs busybox httpd in the foreground as a child, so that
// the script stays the process tests look for, and stops it on SIGTERM
// (a shell that is pid 1 ignores signals it does not trap).
var serveScript = template.Must(template.New("serve").Parse(`#!/bin/sh
# {{.Name}} stand-in for critest: busybox httpd serving {{.Root}} on port {{.Port}}.
{{- if .Master}}
# Once more with nginx's title as an argument: tests read "master process"
# in /proc/1/cmdline, and pidof finds the script by its name.
case "$1" in
"nginx: master process"*) ;;
*) exec "$0" "nginx: master process nginx $*" ;;
esac
{{- end}}
echo "{{.Name}}: serving {{.Root}} on port {{.Port}}" >&2
child=
trap 'kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM INT QUIT
httpd -f -v -p {{.Port}} -h {{.Root}} &
child=$!
{{- if .PidFile}}
echo $$ >{{.PidFile}}
{{- end}}
wait $child
`))

type serve struct {
	Name, Root, PidFile string
	Port                int
	Master              bool
}

func (s serve) script() []byte {
	var b bytes.Buffer
	if err := serveScript.Execute(&b, s); err != nil {
		panic(err) // the template and its data are ours
	}
	return b.Bytes()
}

// image builds the stand-in s.
func (b *ociBuilder) image(s ociSpec) (v1.Image, error) {
	cfg := v1.Config{Env: []string{envPath}, Cmd: []string{"sh"}, User: s.user}
	layers := []v1.Layer{b.base}
	top := tree{}
	switch s.kind {
	case busybox:
	case nginx:
		html := "/usr/share/nginx/html"
		top.file(html+"/index.html", 0o644, []byte("<!DOCTYPE html>\n<html><body><h1>Welcome to nginx!</h1></body></html>\n"))
		top.file("/usr/sbin/nginx", 0o755, serve{Name: "nginx", Root: html, Port: s.port, PidFile: "/var/run/nginx.pid", Master: true}.script())
		cfg.Cmd = []string{"nginx", "-g", "daemon off;"}
		cfg.ExposedPorts = map[string]struct{}{fmt.Sprintf("%d/tcp", s.port): {}}
	case httpd:
		root := "/usr/local/apache2"
		top.file(root+"/htdocs/index.html", 0o644, []byte("<html><body><h1>It works!</h1></body></html>\n"))
		top.file("/usr/local/bin/httpd-foreground", 0o755, serve{Name: "httpd", Root: root + "/htdocs", Port: s.port}.script())
		cfg.Cmd = []string{"httpd-foreground"}
		cfg.WorkingDir = root
		cfg.ExposedPorts = map[string]struct{}{fmt.Sprintf("%d/tcp", s.port): {}}
	case nonewprivs:
		if err := top.hostFile("/usr/local/bin/nnp", b.in.NNP, 0o4755); err != nil {
			return nil, fmt.Errorf("nnp: %w", err)
		}
		cfg.Cmd = nil
		cfg.Entrypoint = []string{"/usr/local/bin/nnp"}
	case predefinedGroup:
		// What the image's adduser and addgroup write.
		top.file("/etc/passwd", 0o644, []byte(passwd+"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"))
		top.file("/etc/group", 0o644, []byte(group+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"))
		top.dir("/home/default-user", 0o755)
	case pause:
		layers = nil
		if err := top.hostFile("/pause", b.in.Pause, 0o755); err != nil {
			return nil, fmt.Errorf("pause: %w", err)
		}
		cfg = v1.Config{Entrypoint: []string{"/pause"}, User: s.user}
	default:
		return nil, fmt.Errorf("unknown kind %d", s.kind)
	}
	if s.marker != "" {
		top.file("/"+s.marker, 0o644, nil)
	}
	if len(top) > 0 {
		l, err := top.layer()
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "critest-mirror"}})
	}
	return mutate.Append(img, adds...)
}
