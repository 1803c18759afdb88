package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func joinKeyed(t *testing.T, name string, key []byte, peers ...string) (*Pool, error) {
	t.Helper()
	return Join(Config{Name: name, Role: RoleServer, Bind: "127.0.0.1:0", Raft: name + "-raft:7000", API: name + "-api:7650", Peers: peers, SecretKey: key, fast: true})
}

// TestPoolSecretKey: two members with the cluster's key gossip together; a
// member without it, or with another key, cannot join them nor be joined,
// is never listed, and what it sends is not heard: its forged goodbye for
// k2 does not turn k2's failure into a leave. The control case sends the
// same goodbye with the right key, and it is heard.
func TestPoolSecretKey(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	tests := []struct {
		name  string
		key   []byte // the outsider's
		heard bool
	}{
		{"same key (control)", key, true},
		{"no key", nil, false},
		{"another key", bytes.Repeat([]byte{0xa5}, 16), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k1, err := joinKeyed(t, "k1", key)
			if err != nil {
				t.Fatal(err)
			}
			defer k1.Shutdown()
			k2, err := joinKeyed(t, "k2", key, k1.Addr())
			if err != nil {
				t.Fatalf("a member with the key cannot join: %v", err)
			}
			defer k2.Shutdown()
			for _, p := range []*Pool{k1, k2} {
				waitView(t, p, 10*time.Second, "k1 and k2 see each other", func(ms []Member) bool {
					return view(ms) == "k1/server/alive k2/server/alive"
				})
			}

			o, err := joinKeyed(t, "o", tt.key)
			if err != nil {
				t.Fatal(err)
			}
			defer o.Shutdown()
			if !tt.heard {
				if p, err := joinKeyed(t, "o2", tt.key, k1.Addr()); err == nil {
					p.Shutdown()
					t.Error("a member without the cluster's key joined it")
				}
				err := o.Join([]string{k1.Addr()})
				var refused *RefusedError
				if !errors.As(err, &refused) || !strings.Contains(err.Error(), "the join token is not their cluster's") {
					t.Errorf("Join of the keyed pool by a member without its key: %v, want a refusal naming the token", err)
				}
				if err := k1.Join([]string{o.Addr()}); err == nil {
					t.Error("Join of a member without the key by the keyed pool: no error")
				}
			}
			bye := append(append(append([]byte{}, goodbye...), ':'), "k2"...)
			if err := o.ml.SendToAddress(memberlist.Address{Addr: k1.Addr(), Name: "k1"}, bye); err != nil {
				t.Fatal(err)
			}

			// k2 dies without a word: k1 sees it failed, unless it heard
			// the goodbye.
			if err := k2.Shutdown(); err != nil {
				t.Fatal(err)
			}
			want := "k1/server/alive k2/server/failed"
			if tt.heard {
				want = "k1/server/alive k2/server/left"
			}
			waitView(t, k1, 15*time.Second, "k2 is seen gone", func(ms []Member) bool {
				v := view(ms)
				return strings.Contains(v, "k2/server/failed") || strings.Contains(v, "k2/server/left")
			})
			if got := view(k1.Members()); got != want {
				t.Errorf("k1 sees %s, want %s", got, want)
			}
		})
	}
}

func TestJoinKeyLength(t *testing.T) {
	for _, n := range []int{1, 15, 17, 33} {
		p, err := joinKeyed(t, "x", make([]byte, n))
		if err == nil {
			p.Shutdown()
		}
		if err == nil || !strings.Contains(err.Error(), "it must be 16, 24 or 32") {
			t.Errorf("a %d-byte key: %v, want an error naming the lengths allowed", n, err)
		}
	}
}
