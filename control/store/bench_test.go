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

// BenchmarkCreateParallel shows raft's batching: concurrent writes share
// fsyncs and bbolt commits.
func BenchmarkCreateParallel(b *testing.B) {
	s := openTest(b, "", nil)
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
}
