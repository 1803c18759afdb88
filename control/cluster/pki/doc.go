// Package pki owns the cluster's trust: its certificate authority, the
// certificates of servers and agents (issuing, saving, loading, renewing
// them, and the TLS configurations that present and check them), the keys
// derived from the join token, and the join protocol by which a new server
// or agent trades the join token for a certificate.
//
// It does not decide who may call what: a listener's allow callback and the
// API's authorisation do, from the Identity a certificate carries. It does
// not store the token either; its callers pass it in.
//
// It imports only the standard library.
package pki
