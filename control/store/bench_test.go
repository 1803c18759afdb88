package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkCreate measures one Create (a Raft append with fsync on raft.db
// plus one bbolt commit on state.db) from a single caller.
func BenchmarkCreate(b *testing.B) {
	s := openTest(b, "", nil)
	ctx := context.Background()
	value := make([]byte, 512)
	i := 0
	for b.Loop() {
		if _, err := s.Create(ctx, fmt.Sprintf("/bench/%d", i), value); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCreateParallel shows group commit: concurrent writes share
// fsyncs and bbolt commits. It runs 8 writers per GOMAXPROCS (-cpu sets it)
// and reports entries/append, the writes per append to raft.db (one fsync
// each).
func BenchmarkCreateParallel(b *testing.B) {
	var appends atomic.Int64
	s := openTest(b, "", func(c *Config) {
		c.LogWriteHookForTesting = func() error { appends.Add(1); return nil }
	})
	appends.Store(0)
	ctx := context.Background()
	value := make([]byte, 512)
	var n atomic.Int64
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Create(ctx, fmt.Sprintf("/bench/%d", n.Add(1)), value); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/float64(appends.Load()), "entries/append")
}

// BenchmarkTxn measures the apiserver's create: one Txn with a guard (the
// namespace is present) and one create, from a single caller. Compare with
// BenchmarkCreate for the cost of the guard and the Txn encoding.
func BenchmarkTxn(b *testing.B) {
	s := openTest(b, "", nil)
	ctx := context.Background()
	if _, err := s.Create(ctx, "/namespaces/bench", nil); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 512)
	guards := []Guard{IfPresent("/namespaces/bench")}
	i := 0
	for b.Loop() {
		op := CreateOp(fmt.Sprintf("/pods/bench/%d", i), value)
		if _, err := s.Txn(ctx, Txn{Guards: guards, Ops: []Op{op}}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
