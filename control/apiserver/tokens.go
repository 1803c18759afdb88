package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

// tokenIDLen is the length of a token's id: 60 bits of base32.
const tokenIDLen = 12

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewBearerToken returns a new random bearer token, "<id>.<secret>": an id
// of 12 lowercase base32 characters and a secret of 32 random bytes in
// base32. For AuthConfig.BootstrapToken and CreateToken.
func NewBearerToken() string {
	var id [8]byte
	var secret [32]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	_, _ = rand.Read(secret[:])
	return lowerBase32.EncodeToString(id[:])[:tokenIDLen] + "." + lowerBase32.EncodeToString(secret[:])
}

// authService serves skiff.v1.AuthService. The interceptor has authorized
// each call before it gets here (RevokeToken's scope excepted, which needs
// the stored token).
type authService struct {
	b   *backend
	z   *authorizer
	now func() time.Time
}

var _ skiffv1connect.AuthServiceHandler = (*authService)(nil)

var roles = map[string]bool{RoleView: true, RoleEdit: true, RoleAdmin: true}

// CreateToken stores a new token's hash and returns the token, once.
func (s *authService) CreateToken(ctx context.Context, req *connect.Request[skiffv1.CreateTokenRequest]) (*connect.Response[skiffv1.CreateTokenResponse], error) {
	r := req.Msg
	fe := fieldErrors{}
	if !roles[r.GetRole()] {
		fe.add("role", "unsupported value %q: supported values are \"view\", \"edit\", \"admin\"", r.GetRole())
	}
	if r.GetTtlSeconds() < 0 {
		fe.add("ttlSeconds", "invalid value %d: must not be negative (0: never expires)", r.GetTtlSeconds())
	}
	if r.GetNamespace() != "" {
		validateLabel(&fe, "namespace", r.GetNamespace())
	}
	if len(r.GetDescription()) > 256 {
		fe.add("description", "must be no more than 256 characters")
	}
	if len(fe) > 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("token is invalid: %s", strings.Join(fe, "; ")))
	}
	bearer := NewBearerToken()
	id, secret, _ := splitBearer(bearer)
	p, _ := PrincipalFrom(ctx)
	now := s.now().UTC().Truncate(time.Second)
	rec := tokenRecord{
		ID: id, SecretHash: hashSecret(secret), Namespace: r.GetNamespace(), Role: r.GetRole(),
		Description: r.GetDescription(), Created: now, CreatedBy: p.Name,
	}
	if ttl := r.GetTtlSeconds(); ttl > 0 {
		rec.Expires = now.Add(time.Duration(ttl) * time.Second)
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, toConnect(err)
	}
	t := store.Txn{Ops: []store.Op{store.CreateOp(tokenKey(id), val)}}
	var rules []rule
	if rec.Namespace != "" {
		rules = append(rules, namespaceExists(rec.Namespace))
		t.Guards = append(t.Guards, rules[0].guard)
	}
	if _, err := s.b.store.Txn(ctx, t); err != nil {
		if rerr := ruleErr(err, rules); rerr != nil {
			return nil, rerr
		}
		return nil, toConnect(fmt.Errorf("create token: %w", err))
	}
	return connect.NewResponse(&skiffv1.CreateTokenResponse{Token: bearer, Info: rec.info()}), nil
}

// ListTokens lists the tokens of the namespace the interceptor authorized
// (every token for a cluster-wide caller that names none).
func (s *authService) ListTokens(ctx context.Context, req *connect.Request[skiffv1.ListTokensRequest]) (*connect.Response[skiffv1.ListTokensResponse], error) {
	p, _ := PrincipalFrom(ctx)
	ns := listTokensScope(p, req.Msg.GetNamespace())
	kvs, _, err := s.b.store.List(ctx, tokenPrefix)
	if err != nil {
		return nil, toConnect(fmt.Errorf("list tokens: %w", err))
	}
	out := &skiffv1.ListTokensResponse{}
	for _, kv := range kvs {
		rec := &tokenRecord{}
		if err := json.Unmarshal(kv.Value, rec); err != nil {
			return nil, toConnect(fmt.Errorf("decode token %s: %w", strings.TrimPrefix(kv.Key, tokenPrefix), err))
		}
		if ns == "" || rec.Namespace == ns {
			out.Tokens = append(out.Tokens, rec.info())
		}
	}
	slices.SortFunc(out.Tokens, func(a, b *skiffv1.Token) int {
		return strings.Compare(a.Namespace+"/"+a.Id, b.Namespace+"/"+b.Id)
	})
	return connect.NewResponse(out), nil
}

// RevokeToken deletes a token of the caller's scope.
func (s *authService) RevokeToken(ctx context.Context, req *connect.Request[skiffv1.RevokeTokenRequest]) (*connect.Response[skiffv1.Token], error) {
	id := req.Msg.GetId()
	if !isTokenID(id) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id: invalid value %q: a token id is 12 lowercase base32 characters", id))
	}
	kv, err := s.b.store.Get(ctx, tokenKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("token %q not found", id))
	}
	if err != nil {
		return nil, toConnect(fmt.Errorf("revoke token %s: %w", id, err))
	}
	rec := &tokenRecord{}
	if err := json.Unmarshal(kv.Value, rec); err != nil {
		return nil, toConnect(fmt.Errorf("decode token %s: %w", id, err))
	}
	p, _ := PrincipalFrom(ctx)
	a := attrs{verb: "delete", kind: kindTokens, ns: rec.Namespace, name: id}
	if ok, why := authorize(p, a); !ok {
		return nil, s.z.refuse(ctx, a, why)
	}
	if _, err := s.b.store.Txn(ctx, store.Txn{Ops: []store.Op{store.DeleteOp(tokenKey(id), kv.ModRevision)}}); err != nil {
		return nil, objectErr("revoke", "token", id, err)
	}
	return connect.NewResponse(rec.info()), nil
}

// WhoAmI describes the caller.
func (s *authService) WhoAmI(ctx context.Context, _ *connect.Request[skiffv1.WhoAmIRequest]) (*connect.Response[skiffv1.WhoAmIResponse], error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errNoCredentials)
	}
	res := &skiffv1.WhoAmIResponse{Name: p.Name, Kind: p.kind(), Namespace: p.Namespace, Role: p.Role, Node: p.Node}
	if id, isToken := strings.CutPrefix(p.Name, "token:"); isToken && res.Kind == "token" {
		rec, err := readToken(ctx, s.b.store, id)
		if err != nil {
			return nil, toConnect(fmt.Errorf("read token %s: %w", id, err))
		}
		if !rec.Expires.IsZero() {
			res.Expires = timestamppb.New(rec.Expires)
		}
	}
	return connect.NewResponse(res), nil
}

// CanI says whether the caller may make a call.
func (s *authService) CanI(ctx context.Context, req *connect.Request[skiffv1.CanIRequest]) (*connect.Response[skiffv1.CanIResponse], error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errNoCredentials)
	}
	res, err := s.z.canI(ctx, s.b, p, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

// info is the token as the API shows it: never its hash.
func (r *tokenRecord) info() *skiffv1.Token {
	t := &skiffv1.Token{
		Id: r.ID, Namespace: r.Namespace, Role: r.Role, Description: r.Description,
		Created: timestamppb.New(r.Created), CreatedBy: r.CreatedBy,
	}
	if !r.Expires.IsZero() {
		t.Expires = timestamppb.New(r.Expires)
	}
	return t
}
