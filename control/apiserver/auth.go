package apiserver

// This file authenticates API calls: a bearer token checked against its
// stored hash, a verified TLS client certificate mapped to a principal, or,
// on a call a server forwarded, the principal the server vouches for.
// authz.go decides what each principal may do.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/store"
)

// Principal is who makes a call.
type Principal struct {
	Name      string // "token:<id>", "node:<name>", "server:<id>"
	Node      string // an agent's node name (from its certificate); "" otherwise
	Endpoint  string // an agent's API address from its certificate
	Server    bool   // a server of the cluster: its own loops, forwarded calls
	Namespace string // a token's namespace; "" for a cluster-wide token
	Role      string // a token's role: "view", "edit" or "admin"
}

// kind is what sort of principal p is: "server", "node" or "token".
func (p Principal) kind() string {
	switch {
	case p.Server:
		return "server"
	case p.Node != "":
		return "node"
	}
	return "token"
}

// AuthConfig is how the API server authenticates calls.
type AuthConfig struct {
	// Peer maps the verified TLS client certificate of a request to a
	// principal (servers and agents authenticate with certificates). Nil
	// or ok=false: the request has no certificate principal.
	Peer func(cs *tls.ConnectionState) (Principal, bool)
	// BootstrapToken is the bearer token of the first cluster-wide admin
	// ("<id>.<secret>"); Init stores its hash once, the first time it runs
	// on a cluster (a marker key records that it did, so a revoked
	// bootstrap token is not recreated by a restart). Empty: none.
	BootstrapToken string
	Now            func() time.Time // time.Now when nil
}

// PeerHeader carries, on a call a server forwards to the leader, the
// principal of the certificate-authenticated caller it forwards for
// (PeerHeaderValue). The leader trusts it only from a server principal;
// the forwarder must set or delete it on every call it forwards, never
// pass on a client's.
const PeerHeader = "Skiff-Peer"

// forwardedByHeader is set by control/cluster's forwarder on every call it
// forwards (its forwardedHeader): such a call made with a server's
// certificate is made for someone else, never for the server itself.
const forwardedByHeader = "Skiff-Forwarded-By"

// PeerHeaderValue is the PeerHeader value that names p: "node:<name>@<endpoint>"
// for an agent, "server:<id>" for a server; "" for a token principal, whose
// bearer token is forwarded as it is.
func PeerHeaderValue(p Principal) string {
	switch {
	case p.Server:
		return p.Name
	case p.Node != "":
		return "node:" + p.Node + "@" + p.Endpoint
	}
	return ""
}

// parsePeerHeader is the principal a PeerHeader value names.
func parsePeerHeader(v string) (Principal, bool) {
	if id, ok := strings.CutPrefix(v, "server:"); ok && id != "" {
		return Principal{Name: v, Server: true}, true
	}
	if rest, ok := strings.CutPrefix(v, "node:"); ok {
		name, endpoint, _ := strings.Cut(rest, "@")
		if name == "" {
			return Principal{}, false
		}
		return Principal{Name: "node:" + name, Node: name, Endpoint: endpoint}, true
	}
	return Principal{}, false
}

type principalKey struct{}

// caller is what the request context holds about who calls.
type caller struct {
	p      Principal
	remote string
}

// WithPrincipal returns ctx for calls made as p: for in-process callers
// and tests.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, caller{p: p})
}

// PrincipalFrom returns who makes the call of ctx.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	c, ok := ctx.Value(principalKey{}).(caller)
	return c.p, ok
}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(principalKey{}).(caller)
	return c, ok
}

const (
	// tokenPrefix holds one record per bearer token, by id.
	tokenPrefix = "/auth/tokens/"
	// bootstrapKey records that the bootstrap token was stored once.
	bootstrapKey = "/auth/bootstrapped"
)

// tokenRecord is a bearer token as stored: never its secret.
type tokenRecord struct {
	ID          string    `json:"id"`
	SecretHash  []byte    `json:"secretSha256"`
	Namespace   string    `json:"namespace,omitempty"`
	Role        string    `json:"role"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires,omitzero"` // zero: never
	CreatedBy   string    `json:"createdBy,omitempty"`
}

func tokenKey(id string) string { return tokenPrefix + id }

func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// errNoCredentials and errBadToken are what an unauthenticated caller reads;
// a bad token never says which part of it was wrong.
var (
	errNoCredentials = errors.New("no credentials: send a bearer token (skiff reads it from ~/.skiff/config or $SKIFF_TOKEN)")
	errBadToken      = errors.New("invalid bearer token")
)

// authenticator is the HTTP middleware that finds the principal of each
// request and refuses a request without one.
type authenticator struct {
	cfg   *AuthConfig
	store Store
	log   *slog.Logger
	errw  *connect.ErrorWriter
	next  http.Handler
}

func (a *authenticator) now() time.Time {
	if a.cfg.Now != nil {
		return a.cfg.Now()
	}
	return time.Now()
}

func (a *authenticator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		a.next.ServeHTTP(w, r)
		return
	}
	p, who, err := a.authenticate(r)
	if err != nil {
		verb, kind := procedureWords(r.URL.Path)
		auditRefusal(a.log, who, attrs{verb: verb, kind: kind}, err.Error(), r.RemoteAddr)
		code := connect.CodeUnauthenticated
		var se *storeReadError
		if errors.As(err, &se) {
			code = connect.CodeUnavailable // not the caller's fault: try again
		}
		_ = a.errw.Write(w, r, connect.NewError(code, err))
		return
	}
	ctx := context.WithValue(r.Context(), principalKey{}, caller{p: p, remote: r.RemoteAddr})
	a.next.ServeHTTP(w, r.WithContext(ctx))
}

// authenticate returns the principal of r; on failure, who names the
// caller as far as it is known, for the audit log.
func (a *authenticator) authenticate(r *http.Request) (p Principal, who string, err error) {
	var (
		cert   Principal
		hasCrt bool
	)
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && a.cfg.Peer != nil {
		cert, hasCrt = a.cfg.Peer(r.TLS)
	}
	if h := r.Header.Get("Authorization"); h != "" {
		return a.bearer(r.Context(), h)
	}
	if !hasCrt {
		return Principal{}, "anonymous", errNoCredentials
	}
	if !cert.Server {
		return cert, cert.Name, nil
	}
	if v := r.Header.Get(PeerHeader); v != "" {
		fp, ok := parsePeerHeader(v)
		if !ok {
			return Principal{}, cert.Name, fmt.Errorf("%s: malformed value %q from %s", PeerHeader, v, cert.Name)
		}
		return fp, fp.Name, nil
	}
	if r.Header.Get(forwardedByHeader) != "" {
		// Forwarded for a caller that sent neither a token nor a
		// certificate: the server's own certificate is not the caller's.
		return Principal{}, "anonymous (forwarded by " + cert.Name + ")", errNoCredentials
	}
	return cert, cert.Name, nil
}

// bearer checks an Authorization header's bearer token.
func (a *authenticator) bearer(ctx context.Context, h string) (Principal, string, error) {
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, "anonymous", errBadToken
	}
	id, secret, ok := splitBearer(strings.TrimSpace(tok))
	if !ok {
		return Principal{}, "anonymous", errBadToken
	}
	who := "token:" + id
	rec, err := readToken(ctx, a.store, id)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, who, errBadToken
	}
	if err != nil {
		return Principal{}, who, &storeReadError{fmt.Errorf("read token %s: %w", id, err)}
	}
	if subtle.ConstantTimeCompare(hashSecret(secret), rec.SecretHash) != 1 {
		return Principal{}, who, errBadToken
	}
	if !rec.Expires.IsZero() && !a.now().Before(rec.Expires) {
		return Principal{}, who, fmt.Errorf("token %s expired at %s", id, rec.Expires.UTC().Format(time.RFC3339))
	}
	return Principal{Name: who, Namespace: rec.Namespace, Role: rec.Role}, who, nil
}

// storeReadError is a token that could not be read: the caller is not
// refused for it but asked to try again.
type storeReadError struct{ err error }

func (e *storeReadError) Error() string { return e.err.Error() }
func (e *storeReadError) Unwrap() error { return e.err }

// splitBearer splits "<id>.<secret>", checking the shape of each.
func splitBearer(tok string) (id, secret string, ok bool) {
	id, secret, ok = strings.Cut(tok, ".")
	if !ok || !isTokenID(id) || secret == "" || len(secret) > 128 {
		return "", "", false
	}
	return id, secret, true
}

// isTokenID reports whether s is 12 lowercase base32 characters.
func isTokenID(s string) bool {
	if len(s) != tokenIDLen {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

func readToken(ctx context.Context, st Store, id string) (*tokenRecord, error) {
	kv, err := st.Get(ctx, tokenKey(id))
	if err != nil {
		return nil, err
	}
	rec := &tokenRecord{}
	if err := json.Unmarshal(kv.Value, rec); err != nil {
		return nil, fmt.Errorf("decode token %s: %w", id, err)
	}
	return rec, nil
}

// storeBootstrapToken stores the bootstrap token's hash, once for each
// bootstrap token: the marker key names the last one stored, so a second
// call, or a call after the token was revoked, changes nothing. A store
// whose marker names another token (a snapshot restored into a cluster with
// a new join token, from which the bootstrap token derives) gets the new
// one, so its admin is not locked out; the old cluster's tokens stay as
// they were.
func storeBootstrapToken(ctx context.Context, st Store, bearer string, now time.Time) error {
	id, secret, ok := splitBearer(bearer)
	if !ok {
		return errors.New("bootstrap token: malformed: want <id>.<secret> with a 12-character lowercase base32 id")
	}
	rec := tokenRecord{
		ID: id, SecretHash: hashSecret(secret), Role: "admin",
		Description: "bootstrap token", Created: now.UTC(), CreatedBy: "bootstrap",
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = st.Txn(ctx, store.Txn{
		Guards: []store.Guard{store.IfAbsent(bootstrapKey)},
		Ops:    []store.Op{store.CreateOp(bootstrapKey, []byte(id)), store.CreateOp(tokenKey(id), val)},
	})
	var ge *store.GuardError
	if errors.As(err, &ge) {
		marker, gerr := st.Get(ctx, bootstrapKey)
		if gerr != nil {
			return fmt.Errorf("store bootstrap token: %w", gerr)
		}
		if string(marker.Value) == id {
			return nil // stored before
		}
		_, err = st.Txn(ctx, store.Txn{
			Guards: []store.Guard{store.IfModRevision(bootstrapKey, marker.ModRevision), store.IfAbsent(tokenKey(id))},
			Ops:    []store.Op{store.UpdateOp(bootstrapKey, []byte(id), marker.ModRevision), store.CreateOp(tokenKey(id), val)},
		})
		if errors.As(err, &ge) {
			return nil // another server did it meanwhile
		}
	}
	if err != nil {
		return fmt.Errorf("store bootstrap token: %w", err)
	}
	return nil
}
