package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
)

// The roles a cluster certificate can carry.
const (
	RoleServer = "server"
	RoleAgent  = "agent"
)

// What a cluster certificate carries: its Subject Organization names the
// role, and an agent's certificate has a URI SAN with its API address.
const (
	orgServer   = "skiff:server"
	orgAgent    = "skiff:agent"
	agentScheme = "skiff-agent"
)

// Identity is who a certificate names.
type Identity struct {
	Role     string // RoleServer or RoleAgent
	Name     string // a server's ID or a node's name
	Endpoint string // an agent's API address host:port, from its certificate; "" for servers
}

// String is "server:ID" for a server and "node:NAME" for an agent.
func (id Identity) String() string {
	switch id.Role {
	case RoleServer:
		return "server:" + id.Name
	case RoleAgent:
		return "node:" + id.Name
	default:
		return id.Role + ":" + id.Name
	}
}

// validate refuses an identity no certificate can carry.
func (id Identity) validate() error {
	if id.Name == "" {
		return errors.New("the identity has no name")
	}
	switch id.Role {
	case RoleServer:
		if id.Endpoint != "" {
			return fmt.Errorf("server %q has an endpoint (%q): only agents have one", id.Name, id.Endpoint)
		}
	case RoleAgent:
		if err := checkHostPort(id.Endpoint); err != nil {
			return fmt.Errorf("agent %q: endpoint: %w", id.Name, err)
		}
	default:
		return fmt.Errorf("unknown role %q (want %q or %q)", id.Role, RoleServer, RoleAgent)
	}
	return nil
}

// org is the Subject Organization of a certificate for role.
func org(role string) string {
	if role == RoleServer {
		return orgServer
	}
	return orgAgent
}

// IdentityOf reads the identity a cluster certificate carries: Subject CN
// is the name, Subject Organization is ["skiff:server"] or ["skiff:agent"],
// and an agent's certificate has one URI SAN skiff-agent://host:port giving
// its endpoint. It does not verify the certificate; its callers read
// certificates a TLS handshake verified.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("read identity: no certificate")
	}
	var id Identity
	o := cert.Subject.Organization
	switch {
	case len(o) == 1 && o[0] == orgServer:
		id.Role = RoleServer
	case len(o) == 1 && o[0] == orgAgent:
		id.Role = RoleAgent
	default:
		return Identity{}, fmt.Errorf("read identity of %q: organization %q is not %q or %q", cert.Subject.CommonName, o, orgServer, orgAgent)
	}
	id.Name = cert.Subject.CommonName
	if id.Name == "" {
		return Identity{}, fmt.Errorf("read identity: the %s certificate has no common name", id.Role)
	}
	for _, u := range cert.URIs {
		if u.Scheme != agentScheme {
			continue
		}
		if id.Role != RoleAgent {
			return Identity{}, fmt.Errorf("read identity of %s: a server's certificate has a %s URI", id, agentScheme)
		}
		if id.Endpoint != "" {
			return Identity{}, fmt.Errorf("read identity of %s: more than one %s URI", id, agentScheme)
		}
		if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return Identity{}, fmt.Errorf("read identity of %s: %s URI %q is not %s://host:port", id, agentScheme, u, agentScheme)
		}
		id.Endpoint = u.Host
	}
	if id.Role == RoleAgent {
		if err := checkHostPort(id.Endpoint); err != nil {
			return Identity{}, fmt.Errorf("read identity of %s: endpoint: %w", id, err)
		}
	}
	return id, nil
}

// checkHostPort refuses anything but host:port with a port in 1..65535.
func checkHostPort(hp string) error {
	if hp == "" {
		return errors.New("empty; want host:port")
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", hp, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", hp)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number in 1..65535", hp, port)
	}
	return nil
}

// subdomain is an RFC 1123 subdomain, as Kubernetes names nodes.
var subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// checkName refuses a name that is not an RFC 1123 subdomain of at most
// 253 characters.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("%d characters long, at most 253", len(name))
	}
	if !subdomain.MatchString(name) {
		return fmt.Errorf("%q is not an RFC 1123 subdomain (lower case letters, digits, '-' and '.')", name)
	}
	return nil
}
