package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// JoinPath is where a server serves the join protocol (NewJoinHandler).
const JoinPath = "/skiff.cluster.v1.JoinService/Join"

// The join protocol. A joining server or agent does not know the CA yet,
// so it cannot verify the server's TLS certificate; the join token
// authenticates both sides without crossing the wire:
//
//   - the request carries an HMAC, under a key derived from the token, of
//     every other field, so the server knows the joiner has the token;
//   - the answer carries an HMAC, under the same key, of the request's
//     nonce and every answer field, so the joiner knows the server has the
//     token and no man in the middle substituted a CA; the joiner then
//     checks that the server's TLS certificate is from that CA;
//   - a server's answer carries the CA key, sealed under a key derived from
//     the token and the request's nonce.
const (
	maxJoinBody     = 64 << 10
	joinWindow      = 5 * time.Minute // how far a request's time may be from the server's clock
	maxHosts        = 32
	maxHostLen      = 253
	joinTimeout     = 10 * time.Second // Join's default, and the handler's own deadline
	joinNonceLen    = 32
	joinMACPurpose  = "skiff join mac v1"
	joinSealPurpose = "skiff join ca key v1"
)

// The codes of a refused join's JSON error.
const (
	codeTokenRefused = "token_refused"
	codeRoleRefused  = "role_refused"
	codeClockSkew    = "clock_skew"
	codeOtherCA      = "other_ca" // the joiner's own refusal, never on the wire
	codeInvalid      = "invalid_argument"
	codeUnavailable  = "unavailable"
	codeInternal     = "internal"
)

// joinRequest is the request on the wire ([]byte fields are base64).
type joinRequest struct {
	Role      string   `json:"role"`
	Name      string   `json:"name"`
	Endpoint  string   `json:"endpoint,omitempty"`
	Hosts     []string `json:"hosts,omitempty"`
	PublicKey []byte   `json:"publicKey"` // PKIX DER
	Nonce     []byte   `json:"nonce"`
	Time      int64    `json:"time"` // unix seconds
	MAC       []byte   `json:"mac"`
}

// macInput is the canonical encoding of every field but MAC.
func (r *joinRequest) macInput() []byte {
	var c canon
	c.str("skiff join request v1")
	c.str(r.Role)
	c.str(r.Name)
	c.str(r.Endpoint)
	c.u64(uint64(len(r.Hosts)))
	for _, h := range r.Hosts {
		c.str(h)
	}
	c.bytes(r.PublicKey)
	c.bytes(r.Nonce)
	c.u64(uint64(r.Time))
	return c.b
}

// joinResponse is the answer on the wire.
type joinResponse struct {
	Cert  string `json:"cert"`            // the joiner's certificate PEM
	CA    string `json:"ca"`              // the CA certificate PEM
	CAKey []byte `json:"caKey,omitempty"` // servers only: the sealed CA key PEM
	MAC   []byte `json:"mac"`
}

// macInput is the canonical encoding of the request's nonce and every
// field but MAC.
func (r *joinResponse) macInput(nonce []byte) []byte {
	var c canon
	c.str("skiff join response v1")
	c.bytes(nonce)
	c.str(r.Cert)
	c.str(r.CA)
	c.bytes(r.CAKey)
	return c.b
}

// joinError is a refused or failed join's answer.
type joinError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// canon encodes fields unambiguously: each length-prefixed.
type canon struct{ b []byte }

func (c *canon) u64(v uint64)   { c.b = binary.BigEndian.AppendUint64(c.b, v) }
func (c *canon) bytes(v []byte) { c.u64(uint64(len(v))); c.b = append(c.b, v...) }
func (c *canon) str(v string)   { c.u64(uint64(len(v))); c.b = append(c.b, v...) }
func joinMAC(token string, msg []byte) []byte {
	m := hmac.New(sha256.New, Derive(token, joinMACPurpose, 32))
	m.Write(msg)
	return m.Sum(nil)
}

// sealKey is the AES-256 key sealing the CA key in the answer to the
// request with nonce.
func sealKey(token string, nonce []byte) []byte {
	return Derive(token, joinSealPurpose+string(nonce), 32)
}

// seal encrypts plain with AES-256-GCM; the GCM nonce goes first.
func seal(key, plain []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	n := make([]byte, aead.NonceSize())
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return aead.Seal(n, n, plain, nil), nil
}

// open reverses seal.
func open(key, sealed []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("open: too short")
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], nil)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	return plain, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("create cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("create cipher: %w", err)
	}
	return aead, nil
}

// HandlerConfig is what NewJoinHandler needs.
type HandlerConfig struct {
	// CA returns the CA to sign with; a nil CA answers 503 "this server
	// has no CA yet; try again", which joiners retry.
	CA func() *CA
	// ServerToken is the join token of servers (required); agents may use
	// it too.
	ServerToken string
	// AgentToken is the join token of agents; "" means agents use
	// ServerToken. A server can never join with it.
	AgentToken string
	Lifetime   time.Duration    // of issued certificates; DefaultLifetime when 0
	Now        func() time.Time // time.Now when nil
	Logger     *slog.Logger
}

// NewJoinHandler returns the handler of JoinPath: it checks a join
// request's token, time and fields, and answers with a certificate signed
// by the CA (and, for a server, the CA key). It logs each refused join at
// Warn, with the remote address, role and name and why; never a token.
func NewJoinHandler(cfg HandlerConfig) http.Handler {
	h := &joinHandler{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h
}

type joinHandler struct {
	cfg HandlerConfig
	log *slog.Logger
	now func() time.Time
}

// joinFailure is why a join is not answered with a certificate.
type joinFailure struct {
	status int
	joinError
}

func fail(status int, code, format string, args ...any) *joinFailure {
	return &joinFailure{status: status, joinError: joinError{Code: code, Message: fmt.Sprintf(format, args...)}}
}

func (h *joinHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	// The handler answers within its own deadline whatever the server's
	// timeouts are; a writer that cannot set one (a test recorder) has none.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(joinTimeout))
	_ = rc.SetWriteDeadline(time.Now().Add(joinTimeout))
	log := h.log.With("remote", r.RemoteAddr)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.answerError(w, log, fail(http.StatusMethodNotAllowed, codeInvalid, "join with POST, not %s", r.Method))
		return
	}
	var req joinRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJoinBody)).Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.answerError(w, log, fail(http.StatusRequestEntityTooLarge, codeInvalid, "the join request is larger than %d bytes", maxJoinBody))
			return
		}
		h.answerError(w, log, fail(http.StatusBadRequest, codeInvalid, "read join request: %v", err))
		return
	}
	log = log.With("role", req.Role, "name", req.Name)
	resp, f := h.join(&req, now)
	if f != nil {
		h.answerError(w, log, f)
		return
	}
	body, err := json.Marshal(resp)
	if err != nil {
		h.answerError(w, log, fail(http.StatusInternalServerError, codeInternal, "encode join answer: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(body); err != nil {
		log.Warn("write join answer", "err", err)
		return
	}
	log.Info("issued a certificate to a joiner")
}

// join checks a request and answers it.
func (h *joinHandler) join(req *joinRequest, now time.Time) (*joinResponse, *joinFailure) {
	if err := CheckToken(h.cfg.ServerToken); err != nil {
		return nil, fail(http.StatusServiceUnavailable, codeUnavailable, "this server has no join token configured")
	}
	token, f := h.authenticate(req)
	if f != nil {
		return nil, f
	}
	if skew := time.Unix(req.Time, 0).Sub(now); skew > joinWindow || skew < -joinWindow {
		dir := "ahead of"
		if skew < 0 {
			dir, skew = "behind", -skew
		}
		return nil, fail(http.StatusForbidden, codeClockSkew,
			"the joiner's clock is %s %s this server's, more than %s: check both clocks (NTP)", skew.Round(time.Second), dir, joinWindow)
	}
	id := Identity{Role: req.Role, Name: req.Name, Endpoint: req.Endpoint}
	pub, f := checkJoinRequest(req)
	if f != nil {
		return nil, f
	}
	var ca *CA
	if h.cfg.CA != nil {
		ca = h.cfg.CA()
	}
	if ca == nil {
		return nil, fail(http.StatusServiceUnavailable, codeUnavailable, "this server has no CA yet; try again")
	}
	lifetime := h.cfg.Lifetime
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	certPEM, err := ca.Issue(id, req.Hosts, pub, now, lifetime)
	if err != nil {
		return nil, fail(http.StatusInternalServerError, codeInternal, "%v", err)
	}
	resp := &joinResponse{Cert: string(certPEM), CA: string(ca.CertPEM())}
	if id.Role == RoleServer {
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return nil, fail(http.StatusInternalServerError, codeInternal, "%v", err)
		}
		if resp.CAKey, err = seal(sealKey(token, req.Nonce), keyPEM); err != nil {
			return nil, fail(http.StatusInternalServerError, codeInternal, "%v", err)
		}
	}
	resp.MAC = joinMAC(token, resp.macInput(req.Nonce))
	return resp, nil
}

// authenticate returns the token whose MAC the request carries: the
// server token, or for an agent the agent token.
func (h *joinHandler) authenticate(req *joinRequest) (string, *joinFailure) {
	msg := req.macInput()
	if hmac.Equal(joinMAC(h.cfg.ServerToken, msg), req.MAC) {
		return h.cfg.ServerToken, nil
	}
	if t := h.cfg.AgentToken; t != "" && hmac.Equal(joinMAC(t, msg), req.MAC) {
		if req.Role != RoleAgent {
			return "", fail(http.StatusForbidden, codeRoleRefused, "agents' token cannot join a server (a server joins with the servers' token; check --token)")
		}
		return t, nil
	}
	return "", fail(http.StatusForbidden, codeTokenRefused, "it is not this cluster's token (check --token)")
}

// checkJoinRequest refuses a malformed request, naming the field, and
// returns its public key.
func checkJoinRequest(req *joinRequest) (crypto.PublicKey, *joinFailure) {
	bad := func(field, format string, args ...any) (crypto.PublicKey, *joinFailure) {
		return nil, fail(http.StatusBadRequest, codeInvalid, "%s: %s", field, fmt.Sprintf(format, args...))
	}
	switch req.Role {
	case RoleServer:
		if req.Endpoint != "" {
			return bad("endpoint", "a server has none")
		}
	case RoleAgent:
		if err := checkHostPort(req.Endpoint); err != nil {
			return bad("endpoint", "%v", err)
		}
	default:
		return bad("role", "%q is not %q or %q", req.Role, RoleServer, RoleAgent)
	}
	if err := checkName(req.Name); err != nil {
		return bad("name", "%v", err)
	}
	if len(req.Hosts) > maxHosts {
		return bad("hosts", "%d of them, at most %d", len(req.Hosts), maxHosts)
	}
	for i, host := range req.Hosts {
		if err := checkHost(host); err != nil {
			return bad(fmt.Sprintf("hosts[%d]", i), "%v", err)
		}
	}
	if len(req.Nonce) != joinNonceLen {
		return bad("nonce", "%d bytes, want %d", len(req.Nonce), joinNonceLen)
	}
	pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
	if err != nil {
		return bad("publicKey", "%v", err)
	}
	return pub, nil
}

// checkHost refuses a SAN that is neither an IP address nor a DNS name.
func checkHost(host string) error {
	if len(host) > maxHostLen {
		return fmt.Errorf("%d characters long, at most %d", len(host), maxHostLen)
	}
	if net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")) != nil {
		return nil
	}
	if host == "" || !subdomain.MatchString(strings.ToLower(host)) {
		return fmt.Errorf("%q is neither an IP address nor a DNS name", host)
	}
	return nil
}

// answerError writes a failure as JSON; refusals are logged at Warn.
func (h *joinHandler) answerError(w http.ResponseWriter, log *slog.Logger, f *joinFailure) {
	switch {
	case f.status >= 500 && f.Code != codeUnavailable:
		log.Error("join failed", "code", f.Code, "err", f.Message)
	default:
		log.Warn("join refused", "code", f.Code, "reason", f.Message)
	}
	body, _ := json.Marshal(f.joinError)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	_, _ = w.Write(body)
}

// JoinRequest is what Join needs.
type JoinRequest struct {
	Server   string        // a server's API address host:port (https is used)
	Token    string        // the join token
	Identity Identity      // Role, Name, and for an agent Endpoint
	Hosts    []string      // the SANs wanted
	Key      crypto.Signer // the joiner's key; only its public key is sent
	// CA, when set (a re-join or a renewal), is the CA PEM the joiner
	// already trusts; an answer with another CA is refused.
	CA      []byte
	Timeout time.Duration // of the whole call; 10 s when 0
}

// Joined is what Join got.
type Joined struct {
	Cred *Credential
	CA   *CA // a server's: the CA with its key (servers sign too); nil for an agent
}

// RefusedError is a join the cluster refused, or that cannot succeed
// however often it is tried: the token (or the role for that token), the
// clocks, or a cluster with another CA than the one the joiner trusts.
// Callers stop retrying.
type RefusedError struct {
	Server string // the address joined
	Code   string // "token_refused", "role_refused", "clock_skew", "other_ca", or "" for a bare 403
	Reason string // what is wrong and what to check
}

func (e *RefusedError) Error() string { return "join cluster at " + e.Server + ": " + e.Reason }

// Join trades the join token for a certificate of req.Identity from the
// server at req.Server (and, for a server, the CA key). It dials without
// verifying the server's certificate, then checks the answer's MAC (the
// server knows the token), that the server's TLS certificate is from the
// CA it answered with, that the certificate is for req.Key and
// req.Identity, and that the CA is req.CA when set. A *RefusedError is
// permanent; other errors may pass (a server without a CA yet, the
// network).
func Join(ctx context.Context, req JoinRequest) (*Joined, error) {
	wrap := func(err error) error { return fmt.Errorf("join cluster at %s: %w", req.Server, err) }
	if req.Server == "" {
		return nil, errors.New("join cluster: no server address")
	}
	if err := CheckToken(req.Token); err != nil {
		return nil, wrap(err)
	}
	if err := req.Identity.validate(); err != nil {
		return nil, wrap(err)
	}
	if req.Key == nil {
		return nil, wrap(errors.New("no key"))
	}
	var trusted []*x509.Certificate
	if req.CA != nil {
		var err error
		if trusted, err = parseCertsPEM(req.CA); err != nil {
			return nil, wrap(fmt.Errorf("the CA trusted: %w", err))
		}
	}
	timeout := req.Timeout
	if timeout == 0 {
		timeout = joinTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	pub, err := x509.MarshalPKIXPublicKey(req.Key.Public())
	if err != nil {
		return nil, wrap(err)
	}
	wire := joinRequest{
		Role:      req.Identity.Role,
		Name:      req.Identity.Name,
		Endpoint:  req.Identity.Endpoint,
		Hosts:     req.Hosts,
		PublicKey: pub,
		Nonce:     make([]byte, joinNonceLen),
		Time:      time.Now().Unix(),
	}
	if _, err := rand.Read(wire.Nonce); err != nil {
		return nil, wrap(err)
	}
	wire.MAC = joinMAC(req.Token, wire.macInput())

	resp, peer, err := postJoin(ctx, req.Server, &wire)
	if err != nil {
		var refused *RefusedError
		if errors.As(err, &refused) {
			return nil, err
		}
		return nil, wrap(err)
	}
	if !hmac.Equal(joinMAC(req.Token, resp.macInput(wire.Nonce)), resp.MAC) {
		return nil, wrap(errors.New("the answer is not signed with the join token: whoever answered does not know it (a man in the middle?)"))
	}
	ca, err := ParseCA([]byte(resp.CA), nil)
	if err != nil {
		return nil, wrap(fmt.Errorf("the answer's CA: %w", err))
	}
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	if _, err := peer[0].Verify(x509.VerifyOptions{
		Roots:         ca.pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, wrap(fmt.Errorf("the server's TLS certificate is not from the CA %s it answered with (a man in the middle?): %w", ca.name(), err))
	}
	if trusted != nil && !containsCert(trusted, ca.cert) {
		return nil, &RefusedError{Server: req.Server, Code: codeOtherCA, Reason: fmt.Sprintf(
			"certificate from another CA: this cluster's CA is %s, the server at %s answered with %s", caName(trusted[0]), req.Server, ca.name())}
	}
	cred, err := NewCredential([]byte(resp.Cert), req.Key, []byte(resp.CA))
	if err != nil {
		return nil, wrap(fmt.Errorf("the answer's certificate: %w", err))
	}
	if got := cred.Identity(); got != req.Identity {
		return nil, wrap(fmt.Errorf("the answer's certificate is for %+v, not %+v", got, req.Identity))
	}
	joined := &Joined{Cred: cred}
	if req.Identity.Role == RoleServer {
		keyPEM, err := open(sealKey(req.Token, wire.Nonce), resp.CAKey)
		if err != nil {
			return nil, wrap(fmt.Errorf("the answer's CA key: %w", err))
		}
		if joined.CA, err = ParseCA([]byte(resp.CA), keyPEM); err != nil {
			return nil, wrap(fmt.Errorf("the answer's CA key: %w", err))
		}
	}
	return joined, nil
}

// postJoin sends the request and returns the answer and the server's TLS
// certificates, unverified.
func postJoin(ctx context.Context, server string, wire *joinRequest) (*joinResponse, []*x509.Certificate, error) {
	body, err := json.Marshal(wire)
	if err != nil {
		return nil, nil, err
	}
	tr := &http.Transport{
		// Verified after the answer, against the CA it carries: the joiner
		// does not know the CA yet.
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+server+JoinPath, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := (&http.Client{Transport: tr}).Do(hreq)
	if err != nil {
		return nil, nil, err
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, maxJoinBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read the answer: %w", err)
	}
	if len(data) > maxJoinBody {
		return nil, nil, fmt.Errorf("the answer is larger than %d bytes", maxJoinBody)
	}
	if hresp.StatusCode != http.StatusOK {
		var je joinError
		_ = json.Unmarshal(data, &je)
		msg := printable(je.Message)
		if msg == "" {
			msg = hresp.Status
		}
		switch {
		case hresp.StatusCode == http.StatusForbidden && (je.Code == codeTokenRefused || je.Code == codeRoleRefused):
			return nil, nil, &RefusedError{Server: server, Code: je.Code, Reason: "the join token was refused: " + msg}
		case hresp.StatusCode == http.StatusForbidden:
			return nil, nil, &RefusedError{Server: server, Code: printable(je.Code), Reason: "the join was refused: " + msg}
		default:
			return nil, nil, fmt.Errorf("the server answered %s: %s", hresp.Status, msg)
		}
	}
	if hresp.TLS == nil || len(hresp.TLS.PeerCertificates) == 0 {
		return nil, nil, errors.New("the server sent no TLS certificate")
	}
	var resp joinResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, nil, fmt.Errorf("decode the answer: %w", err)
	}
	return &resp, hresp.TLS.PeerCertificates, nil
}

func containsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, t := range certs {
		if t.Equal(c) {
			return true
		}
	}
	return false
}

// printable makes a message from the network safe to show: no control
// characters, at most 300 bytes.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
