package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/store"
)

// snapshotChunkBytes bounds the data of one SnapshotChunk.
const snapshotChunkBytes = 1 << 20

// snapshotter is what ClusterService.Snapshot needs of the store.
type snapshotter interface {
	Snapshot(ctx context.Context, w io.Writer) (store.SnapshotInfo, error)
}

// clusterService serves skiff.v1.ClusterService.
type clusterService struct {
	snapshots snapshotter // nil: this store takes none
	members   func(ctx context.Context) ([]*skiffv1.Member, error)
}

// cluster returns the ClusterService over the server's store.
func (s *Server) cluster() *clusterService {
	sn, _ := s.b.store.(snapshotter)
	return &clusterService{snapshots: sn, members: s.members}
}

// Members lists the servers and agents, as the server's Config.Members
// sees them.
func (c *clusterService) Members(ctx context.Context, _ *connect.Request[skiffv1.MembersRequest]) (*connect.Response[skiffv1.MembersResponse], error) {
	if c.members == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("members: this server does not know its cluster"))
	}
	ms, err := c.members(ctx)
	if err != nil {
		return nil, toConnect(fmt.Errorf("members: %w", err))
	}
	return connect.NewResponse(&skiffv1.MembersResponse{Members: ms}), nil
}

// Snapshot streams a consistent copy of the store's state machine in
// chunks of at most snapshotChunkBytes, then its summary. An error midway
// ends the stream without the summary, so the client knows the copy is
// incomplete.
func (c *clusterService) Snapshot(ctx context.Context, _ *connect.Request[skiffv1.SnapshotRequest], stream *connect.ServerStream[skiffv1.SnapshotChunk]) error {
	if c.snapshots == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("snapshot: this server's store does not take snapshots"))
	}
	w := &chunkWriter{send: stream.Send, buf: make([]byte, 0, snapshotChunkBytes)}
	info, err := c.snapshots.Snapshot(ctx, w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return toConnect(err)
	}
	return stream.Send(&skiffv1.SnapshotChunk{Summary: &skiffv1.SnapshotSummary{
		Revision: info.Revision,
		Size:     uint64(info.Size),
		Sha256:   info.SHA256[:],
	}})
}

// chunkWriter sends what is written to it as SnapshotChunks of cap(buf)
// bytes, the last one shorter.
type chunkWriter struct {
	send func(*skiffv1.SnapshotChunk) error
	buf  []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush sends what is buffered, if anything. Send marshals the message
// before it returns, so the buffer is free again after it.
func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.send(&skiffv1.SnapshotChunk{Data: w.buf}); err != nil {
		return fmt.Errorf("send snapshot chunk: %w", err)
	}
	w.buf = w.buf[:0]
	return nil
}
